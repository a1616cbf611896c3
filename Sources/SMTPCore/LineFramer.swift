/// Splits the command stream into lines (RFC 5321 §2.3.8): CRLF, or a bare
/// LF, which chasquid also accepts for commands. A line longer than the limit
/// is an error, and the connection must close.
public struct LineFramer: Sendable {
    public enum Line: Equatable, Sendable {
        case line([UInt8])
        case tooLong
    }

    public let maxLength: Int
    private var buffer: [UInt8] = []
    private var tooLong = false

    public init(maxLength: Int = SMTPDefaults.maxCommandLineLength) {
        self.maxLength = maxLength
    }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    /// The bytes received after the last complete line; the STARTTLS check
    /// needs to know whether a client pipelined past it.
    public var pendingByteCount: Int { buffer.count }

    /// Takes the bytes not yet framed (for DATA, which has its own decoder).
    public mutating func takeRemaining() -> [UInt8] {
        defer { buffer = [] }
        return buffer
    }

    public mutating func discardPending() { buffer = [] }

    /// The next complete line without its terminator, or nil when more bytes are needed.
    public mutating func next() -> Line? {
        guard let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.count > maxLength + 1 { return .tooLong }
            return nil
        }
        var end = newline
        if end > 0 && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        let line = Array(buffer[..<end])
        buffer.removeSubrange(...newline)
        if line.count > maxLength { return .tooLong }
        return .line(line)
    }
}
