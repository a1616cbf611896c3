import Foundation
import GoCompat
import GoErrors
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The mail log: one line per event in chasquid's format (COMPAT.md §18),
/// for admins and their scripts. Destinations: syslog (MAIL|INFO, tag
/// "chasquid", no timestamp), stdout, stderr, or a file opened for append
/// and reopened on SIGHUP.
public final class MailLog: Sendable {
    public enum Destination: Equatable, Sendable {
        case syslog, stdout, stderr
        case file(String)
        /// Lines are kept in memory (tests).
        case memory

        public init(configValue: String) {
            switch configValue {
            case "<syslog>": self = .syslog
            case "<stdout>": self = .stdout
            case "<stderr>": self = .stderr
            default: self = .file(configValue)
            }
        }
    }

    public let destination: Destination
    private let state: Mutex<State>

    private struct State {
        var fd: Int32 = -1
        var lines: [String] = []
    }

    public struct OpenError: Error, CustomStringConvertible {
        public var description: String
    }

    public init(_ destination: Destination) throws(OpenError) {
        self.destination = destination
        var state = State()
        switch destination {
        case .syslog:
            openlog("chasquid", 0, LOG_MAIL)
        case .stdout: state.fd = STDOUT_FILENO
        case .stderr: state.fd = STDERR_FILENO
        case .file(let path):
            state.fd = try Self.openFile(path)
        case .memory: break
        }
        self.state = Mutex(state)
    }

    private static func openFile(_ path: String) throws(OpenError) -> Int32 {
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty { try? FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o775]) }
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw OpenError(description: "open \(path): \(goErrnoText(errno))") }
        return fd
    }

    /// Reopens a file destination (after log rotation, on SIGHUP).
    public func reopen() throws(OpenError) {
        guard case .file(let path) = destination else { return }
        let fd = try Self.openFile(path)
        state.withLock { state in
            close(state.fd)
            state.fd = fd
        }
    }

    /// The lines written so far, for `.memory`.
    public var lines: [String] { state.withLock { $0.lines } }

    /// A text made safe to be one log line: control characters (C0, DEL,
    /// C1) and the Unicode line separators become Go's escapes (`\n`,
    /// `\x00`, `\u2028`), so a client's `\n` in an AUTH identity, an
    /// address or a reply cannot start a forged line, and a NUL cannot cut
    /// one short. Everything else, quotes and backslashes included, is kept
    /// as written.
    public static func oneLine(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isLineBreaking) else { return text }
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            // Each of these is outside Go's IsPrint, so it has an escape.
            if isLineBreaking(scalar), let escape = goEscape(scalar) {
                out.append(contentsOf: escape.unicodeScalars)
            } else {
                out.append(scalar)
            }
        }
        return String(out)
    }

    static func isLineBreaking(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
    }

    public func write(_ line: String) {
        let line = Self.oneLine(line)
        switch destination {
        case .syslog:
            line.withCString { withVaList([$0]) { vsyslog(LOG_MAIL | LOG_INFO, "%s", $0) } }
        case .memory:
            state.withLock { $0.lines.append(line) }
        default:
            let text = Self.timestamp() + " " + line + "\n"
            state.withLock { state in
                _ = text.withCString { Glibc.write(state.fd, $0, strlen($0)) }
            }
        }
    }

    /// Local time, `YYYY-MM-DD HH:MM:SS.uuuuuu`, as chasquid's logs write it.
    public static func timestamp() -> String {
        var now = timeval()
        gettimeofday(&now, nil)
        var seconds = now.tv_sec
        var parts = tm()
        localtime_r(&seconds, &parts)
        // Written by hand: String(format:) goes through Foundation, and a
        // line is logged for every message.
        return padded(Int(parts.tm_year) + 1900, 4) + "-" + padded(Int(parts.tm_mon) + 1, 2) + "-"
            + padded(Int(parts.tm_mday), 2) + " " + padded(Int(parts.tm_hour), 2) + ":" + padded(Int(parts.tm_min), 2)
            + ":" + padded(Int(parts.tm_sec), 2) + "." + padded(Int(now.tv_usec), 6)
    }

    private static func padded(_ value: Int, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    // MARK: The events (COMPAT.md §18).

    public func listening(_ address: String) { write("daemon listening on \(address)") }

    public func auth(remote: String, user: String, succeeded: Bool) {
        write("\(remote) auth \(succeeded ? "succeeded" : "failed") for \(user)")
    }

    public func rejected(remote: String, from: String?, to: [String], reason: String) {
        var line = "\(remote) rejected"
        if let from { line += " from=\(from)" }
        if !to.isEmpty { line += " to=[\(to.joined(separator: " "))]" }
        write(line + " - " + reason)
    }

    public func queued(id: String, from: String, remote: String, to: [String]) {
        write("\(id) from=\(from) queued ip=\(remote) to=[\(to.joined(separator: " "))]")
    }

    public func sent(id: String, from: String, to: String) { write("\(id) from=\(from) to=\(to) sent") }

    public func failed(id: String, from: String, to: String, permanent: Bool, error: String) {
        write("\(id) from=\(from) to=\(to) failed (\(permanent ? "permanent" : "temporary")): \(error)")
    }

    public func loopCompleted(id: String, from: String, nextIn: String) {
        write("\(id) from=\(from) completed loop, next in \(nextIn)")
    }

    public func allDone(id: String, from: String) { write("\(id) from=\(from) all done") }
}
