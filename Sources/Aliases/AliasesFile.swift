import Foundation
import Normalization

/// A malformed aliases line: `"<path>" line N: …` (COMPAT.md §9.1).
public struct AliasesFileError: Error, CustomStringConvertible, Sendable, Equatable {
    public var path: String
    public var line: Int
    public var message: String

    public var description: String { "\"\(path)\" line \(line): \(message)" }
}

/// The aliases file format (COMPAT.md §9.1).
public enum AliasesFile {
    /// Parses a domain's aliases file into `key → recipients`. Keys are
    /// `user@domain` with drop characters removed before the first suffix
    /// separator, then normalised; `*@domain` is the catch-all. A repeated key
    /// takes the last line.
    public static func parse(
        _ text: String, domain: String, rules: AliasRules, path: String
    ) throws(AliasesFileError) -> [String: [Recipient]] {
        var aliases: [String: [Recipient]] = [:]
        var lineNumber = 0
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            let line = rawLine.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            func fail(_ message: String) -> AliasesFileError {
                AliasesFileError(path: path, line: lineNumber, message: message)
            }
            guard let colon = line.firstIndex(of: ":") else { throw fail("missing ':' in line") }
            let left = line[..<colon].trimmingWhitespace()
            let right = line[line.index(after: colon)...].trimmingWhitespace()
            if left.isEmpty || right.isEmpty { throw fail("missing address or alias") }
            if left.contains("@") { throw fail("left-side: cannot contain @") }

            var key = rules.removeDropCharacters(left + "@" + domain)
            key = (try? Normalize.address(key)) ?? key
            do {
                aliases[key] = try parseRightSide(right, domain: domain)
            } catch {
                throw fail("right-side: \(error)")
            }
        }
        return aliases
    }

    public struct RightSideError: Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
    }

    /// Parses a right-hand side: `| command`, or a comma list of addresses and
    /// `address via server1/server2` items. Items without `@` get `@domain`.
    /// Also used for the alias-resolve hook's output, where "" means none.
    public static func parseRightSide(_ raw: String, domain: String) throws(RightSideError) -> [Recipient] {
        if raw.isEmpty { return [] }
        if raw.hasPrefix("|") {
            let command = raw.dropFirst().trimmingWhitespace()
            if command.isEmpty { throw RightSideError(description: "the pipe alias is missing a command") }
            return [Recipient(command, kind: .pipe)]
        }
        var recipients: [Recipient] = []
        for rawItem in raw.split(separator: ",", omittingEmptySubsequences: false) {
            let item = rawItem.trimmingWhitespace()
            if item.isEmpty { continue }  // "a: b," is fine.
            var recipient = Recipient(item)
            if let via = item.range(of: " via ") {
                recipient.kind = .forward
                recipient.address = item[..<via.lowerBound].trimmingWhitespace()
                if recipient.address.isEmpty {
                    throw RightSideError(description: "the forwarding alias is missing the address")
                }
                for server in item[via.upperBound...].split(separator: "/", omittingEmptySubsequences: false) {
                    let name = server.trimmingWhitespace()
                    if name.isEmpty { throw RightSideError(description: "empty server in via list") }
                    recipient.via.append(name)
                }
            }
            if !recipient.address.contains("@") { recipient.address += "@" + domain }
            do {
                recipient.address = try Normalize.address(recipient.address)
            } catch {
                throw RightSideError(description: "normalizing address \"\(item)\": \(error)")
            }
            recipients.append(recipient)
        }
        return recipients
    }
}

extension StringProtocol {
    /// Trims spaces, tabs, CR and LF, as Go's `strings.TrimSpace` does for ASCII.
    func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" || $0 == "\u{0B}" || $0 == "\u{0C}" || $0 == "\r\n" }
        guard let first = firstIndex(where: { !isSpace($0) }) else { return "" }
        let last = lastIndex(where: { !isSpace($0) })!
        return String(self[first...last])
    }
}
