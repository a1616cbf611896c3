import ChildProcess
import Foundation
import GoCompat
import GoErrors
import Normalization

/// Local delivery through the MDA (`mail_delivery_agent_bin` and `_args`,
/// COMPAT.md §12.4): data in CRLF form on stdin, 30 s, exit 75 or a timeout
/// is temporary, any other exit permanent. An MDA that cannot be started
/// (missing, not executable) is temporary: chasquid bounces at once, but a
/// typo in the configuration must not lose mail; it waits in the queue
/// until the admin fixes it (docs/queue.md).
public struct MDACourier: Courier {
    public var binary: String
    public var arguments: [String]
    public var timeout: Duration

    public init(binary: String, arguments: [String], timeout: Duration = .seconds(30)) {
        self.binary = binary
        self.arguments = arguments
        self.timeout = timeout
    }

    /// The arguments with `%from%` and friends replaced. Addresses are first
    /// stripped of whitespace, controls and shell-special characters.
    public func expandedArguments(from: String, to: String) -> [String] {
        let from = Self.sanitize(from)
        let to = Self.sanitize(to)
        let (fromUser, fromDomain) = from == "<>" ? ("<>", "") : Address.split(from)
        let (toUser, toDomain) = Address.split(to)
        let replacements = [
            ("%from%", from), ("%from_user%", fromUser), ("%from_domain%", fromDomain),
            ("%to%", to), ("%to_user%", toUser), ("%to_domain%", toDomain),
        ]
        return arguments.map { $0.replacingInOnePass(replacements) }
    }

    static let unsafeCharacters = Set("/;\"'\\|*&$%()[]{}`!")

    static func sanitize(_ address: String) -> String {
        if address == "<>" { return address }
        return String(address.unicodeScalars.filter { scalar in
            !(scalar.properties.isWhitespace || scalar.properties.generalCategory == .control
                || unsafeCharacters.contains(Character(scalar)))
        }.map(Character.init))
    }

    /// Why the MDA could not be started now (missing, not executable by
    /// this user), for a warning at start-up; nil when it can.
    public func startProblem() -> String? {
        let path = lookPath(binary)
        if !path.contains("/") {
            let searched = getenv("PATH").map { String(cString: $0) } ?? ""
            return "mail_delivery_agent_bin \"\(binary)\" is not in $PATH (\(searched))"
        }
        var info = stat()
        guard stat(path, &info) == 0 else {
            return "mail_delivery_agent_bin \"\(path)\": \(goErrnoText(errno))"
        }
        if (info.st_mode & S_IFMT) != S_IFREG || access(path, X_OK) != 0 {
            return "mail_delivery_agent_bin \"\(path)\" is not an executable file for this user"
        }
        return nil
    }

    public func deliver(from: String, to: String, data: MessageData) async -> DeliveryResult {
        let output: ChildProcess.Output
        // The MDA reads the message, in CRLF form, from a file of its own.
        do {
            output = try await ChildProcess.run(
                lookPath(binary), arguments: expandedArguments(from: from, to: to),
                stdin: .file(open: { try data.stdinFile(toCRLF: true) }), mergeStderr: true, pool: .delivery,
                timeout: timeout)
        } catch {
            return .temporary("MDA delivery failed: \(error)")
        }
        if output.succeeded { return .sent }
        let text = String(decoding: output.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if output.timedOut {
            let (seconds, attoseconds) = timeout.components
            let limit = GoDuration.format(nanoseconds: seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
            return .temporary("MDA delivery failed: timed out after \(limit) - \(goQuoted(text))")
        }
        let status = output.exitStatus.map { "exit status \($0)" } ?? "signal: \(output.signal ?? 0)"
        let message = "MDA delivery failed: \(status) - \(goQuoted(text))"
        return output.exitStatus == 75 ? .temporary(message) : .permanent(message)
    }
}

/// Pipe aliases (`alias: | command args`): the command split on whitespace,
/// LF data on stdin, 30 s; a command that ran and failed is permanent, one
/// that could not be started is temporary (as for the MDA).
public struct PipeCourier: Courier {
    public var timeout: Duration

    public init(timeout: Duration = .seconds(30)) { self.timeout = timeout }

    public func deliver(from: String, to command: String, data: MessageData) async -> DeliveryResult {
        // Go's strings.Fields: any Unicode white space separates.
        let words = command.split(whereScalarSeparator: \.properties.isWhitespace).map(String.init)
        guard let program = words.first else { return .permanent("empty pipe command") }
        do {
            // The queue's data file itself, as it is (LF).
            let output = try await ChildProcess.run(
                lookPath(program), arguments: Array(words.dropFirst()),
                stdin: .file(open: { try data.stdinFile(toCRLF: false) }), mergeStderr: true, pool: .delivery,
                timeout: timeout)
            if output.succeeded { return .sent }
            // chasquid records Go's exec error alone (`exit status 1`).
            return .permanent(output.goErrorText)
        } catch {
            return .temporary("\(error)")
        }
    }
}

/// Where a program named without a `/` is found in `$PATH`, as Go's
/// `exec.Command` does (chasquid's default MDA is plain `maildrop`, and pipe
/// aliases often name a bare command). Names with a `/`, and names not found,
/// are returned as they are.
/// `$PATH` is read only for a bare name, and with getenv: building
/// ProcessInfo's whole environment on every delivery cost more than the rest
/// of the MDA's setup.
func lookPath(_ name: String, path: String? = nil) -> String {
    guard !name.isEmpty, !name.contains("/") else { return name }
    let path = path ?? getenv("PATH").map { String(cString: $0) }
    for directory in (path ?? "").split(separator: ":", omittingEmptySubsequences: false) {
        // An empty entry means the current directory, as in Go.
        let candidate = (directory.isEmpty ? "." : String(directory)) + "/" + name
        var info = stat()
        if stat(candidate, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 {
            return candidate
        }
    }
    return name
}

extension String {
    /// Like Go's `strings.NewReplacer(...).Replace`: one pass, left to right;
    /// at each position the first key (in order) that matches is replaced,
    /// and the text it was replaced with is never searched again.
    func replacingInOnePass(_ replacements: [(String, String)]) -> String {
        var result = ""
        var rest = self[...]
        outer: while !rest.isEmpty {
            for (key, value) in replacements where !key.isEmpty && rest.hasPrefix(key) {
                result += value
                rest = rest.dropFirst(key.count)
                continue outer
            }
            result.append(rest.removeFirst())
        }
        return result
    }
}
