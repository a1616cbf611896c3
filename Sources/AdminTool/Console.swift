#if canImport(Glibc)
import Glibc
#endif

/// Where chasquid-util talks: stdout, stderr and the password prompt. Tests
/// give it a recording console.
public protocol Console {
    func out(_ line: String)
    func err(_ line: String)
    /// Shows `prompt` and reads one line without echo; nil at end of input.
    func readPassword(prompt: String) -> String?
    /// All of stdin (the DKIM helpers' message).
    func readInput() -> [UInt8]
    /// Text to stdout exactly as given, no newline added.
    func write(_ text: String)
}

extension Console {
    public func readInput() -> [UInt8] {
        var all: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = read(STDIN_FILENO, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return all }
            all += chunk[0..<n]
        }
    }

    public func write(_ text: String) { out(String(text.dropLast(text.hasSuffix("\n") ? 1 : 0))) }
}

/// The process's own terminal and streams.
public struct StandardConsole: Console {
    public init() {}

    public func out(_ line: String) { writeAll(STDOUT_FILENO, line + "\n") }

    public func write(_ text: String) { writeAll(STDOUT_FILENO, text) }

    public func err(_ line: String) { writeAll(STDERR_FILENO, line + "\n") }

    private func writeAll(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            bytes = bytes.dropFirst(n)
        }
    }

    public func readPassword(prompt: String) -> String? {
        writeAll(STDOUT_FILENO, prompt)
        // On a terminal, turn echo off while reading. Otherwise (a pipe, a
        // script) read the line as it comes.
        var saved = termios()
        let isTerminal = isatty(STDIN_FILENO) == 1 && tcgetattr(STDIN_FILENO, &saved) == 0
        if isTerminal {
            var silent = saved
            // As Go's x/term (chasquid's): no echo, lines and signals on.
            silent.c_lflag &= ~tcflag_t(ECHO)
            silent.c_lflag |= tcflag_t(ICANON | ISIG)
            silent.c_iflag |= tcflag_t(ICRNL)
            // TCSANOW, not TCSAFLUSH: a flush throws away what was typed
            // (or fed through a pty) ahead of the prompt.
            TerminalRestore.arm(saved)
            tcsetattr(STDIN_FILENO, TCSANOW, &silent)
        }
        defer {
            if isTerminal {
                tcsetattr(STDIN_FILENO, TCSANOW, &saved)
                TerminalRestore.disarm()
                writeAll(STDOUT_FILENO, "\n")
            }
        }
        return readLine(strippingNewline: true)
    }
}

/// Puts the terminal back as it was when a signal ends chasquid-util in
/// the middle of a prompt (Ctrl-C), so the shell is not left without echo.
enum TerminalRestore {
    nonisolated(unsafe) static var saved = termios()
    nonisolated(unsafe) static var previous: [Int32: sigaction] = [:]
    static let signals: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT]

    static func arm(_ state: termios) {
        saved = state
        for signal in signals {
            // A signal the caller ignores (nohup, a background job) stays
            // ignored: it does not end the prompt.
            var current = sigaction()
            sigaction(signal, nil, &current)
            if let handler = current.__sigaction_handler.sa_handler,
                unsafeBitCast(handler, to: Int.self) == Int(bitPattern: 1)  // SIG_IGN
            {
                continue
            }
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { number in
                // Only async-signal-safe calls: tcsetattr, then the default
                // action for the signal.
                tcsetattr(STDIN_FILENO, TCSANOW, &TerminalRestore.saved)
                Glibc.signal(number, SIG_DFL)
                raise(number)
            }
            sigemptyset(&action.sa_mask)
            var old = sigaction()
            sigaction(signal, &action, &old)
            previous[signal] = old
        }
    }

    static func disarm() {
        for (signal, old) in previous {
            var action = old
            sigaction(signal, &action, nil)
        }
        previous = [:]
    }
}
