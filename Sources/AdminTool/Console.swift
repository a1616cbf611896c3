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
}

/// The process's own terminal and streams.
public struct StandardConsole: Console {
    public init() {}

    public func out(_ line: String) { writeAll(STDOUT_FILENO, line + "\n") }

    public func err(_ line: String) { writeAll(STDERR_FILENO, line + "\n") }

    private func writeAll(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
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
            silent.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &silent)
        }
        defer {
            if isTerminal {
                tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved)
                writeAll(STDOUT_FILENO, "\n")
            }
        }
        return readLine(strippingNewline: true)
    }
}
