import DurableFiles
import Foundation
import Logging
import MailLog
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's own log (not the mail log): free-form lines on stderr by
/// default, with the fail2ban lines exactly as COMPAT.md §11.5 gives them.
/// `-logtime` adds timestamps on stderr; `-logfile` appends to a file with
/// timestamps; `-alsologtostderr` keeps stderr too.
public struct DaemonLogHandler: LogHandler {
    public struct Sinks: Sendable {
        public var stderr: Bool
        public var stderrTimestamps: Bool
        public var file: String?
        /// `-logtosyslog=<tag>`: to syslog (DAEMON facility) instead of stderr.
        public var syslog: Bool
        public var verbose: Bool

        public init(
            stderr: Bool = true, stderrTimestamps: Bool = false, file: String? = nil, syslog: Bool = false,
            verbose: Bool = false
        ) {
            self.stderr = stderr
            self.stderrTimestamps = stderrTimestamps
            self.file = file
            self.syslog = syslog
            self.verbose = verbose
        }
    }

    /// The open log file, shared by every logger, reopened on SIGHUP.
    static let fileDescriptor = Mutex<Int32>(-1)

    let sinks: Sinks
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level

    public init(sinks: Sinks) {
        self.sinks = sinks
        self.logLevel = sinks.verbose ? .debug : .info
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Opens (or reopens) the `-logfile`; mode 0644, append.
    public static func openFile(_ path: String) throws {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileError("open", path: path, errno: errno) }
        fileDescriptor.withLock { old in
            if old >= 0 { close(old) }
            old = fd
        }
    }

    public func log(event: LogEvent) {
        // One event, one line, whatever a client put in it.
        let text = MailLog.oneLine("\(event.message)")
        let stamped = MailLog.timestamp() + " " + text + "\n"
        if sinks.syslog {
            text.withCString { message in
                withVaList([message]) { vsyslog(LOG_DAEMON | (event.level <= .debug ? LOG_DEBUG : LOG_INFO), "%s", $0) }
            }
        }
        if sinks.stderr && !sinks.syslog {
            let line = sinks.stderrTimestamps ? stamped : text + "\n"
            _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
        }
        if sinks.file != nil {
            Self.fileDescriptor.withLock { fd in
                if fd >= 0 { _ = stamped.withCString { write(fd, $0, strlen($0)) } }
            }
        }
    }
}
