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
        // Per Unicode scalar, as chasquid reads bytes: a `Character` may fuse
        // a delimiter with its neighbour (and the hook's output, parsed
        // below, may carry a client's text).
        for rawLine in text.split(scalar: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = rawLine.trimmingWhitespace()
            if line.isEmpty || line.unicodeScalars.first == "#" { continue }
            func fail(_ message: String) -> AliasesFileError {
                AliasesFileError(path: path, line: lineNumber, message: message)
            }
            guard let colon = line.firstIndex(ofScalar: ":") else { throw fail("missing ':' in line") }
            let left = line[..<colon].trimmingWhitespace()
            let right = line.suffix(afterScalarAt: colon).trimmingWhitespace()
            if left.isEmpty || right.isEmpty { throw fail("missing address or alias") }
            if left.contains(scalar: "@") { throw fail("left-side: cannot contain @") }

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
        if raw.unicodeScalars.first == "|" {
            let command = raw.suffix(afterScalarAt: raw.startIndex).trimmingWhitespace()
            if command.isEmpty { throw RightSideError(description: "the pipe alias is missing a command") }
            return [Recipient(command, kind: .pipe)]
        }
        var recipients: [Recipient] = []
        for rawItem in raw.split(scalar: ",", omittingEmptySubsequences: false) {
            let item = rawItem.trimmingWhitespace()
            if item.isEmpty { continue }  // "a: b," is fine.
            var recipient = Recipient(item)
            // Matched scalar by scalar, not by `Character`.
            if let via = item.unicodeScalars.firstRange(of: " via ".unicodeScalars) {
                recipient.kind = .forward
                recipient.address = item[..<via.lowerBound].trimmingWhitespace()
                if recipient.address.isEmpty {
                    throw RightSideError(description: "the forwarding alias is missing the address")
                }
                for server in item[via.upperBound...].split(scalar: "/", omittingEmptySubsequences: false) {
                    let name = server.trimmingWhitespace()
                    if name.isEmpty { throw RightSideError(description: "empty server in via list") }
                    recipient.via.append(name)
                }
            }
            if !recipient.address.contains(scalar: "@") { recipient.address += "@" + domain }
            // `alice@` would be delivered to a Maildir outside every domain.
            let (user, targetDomain) = Address.split(recipient.address)
            if targetDomain.isEmpty {
                throw RightSideError(description: "address \"\(recipient.address)\" has no domain after the @")
            }
            if user.isEmpty {
                throw RightSideError(description: "address \"\(recipient.address)\" has no user before the @")
            }
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
    /// Trims white space scalars (CR and LF among them) at both ends, as
    /// Go's `strings.TrimSpace` does.
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })!
        return String(self[first..<scalars.index(after: last)])
    }
}
