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
    /// Where the unframed bytes begin: lines are taken by moving this, not
    /// by shifting the buffer (which made pipelined commands cost
    /// O(lines × bytes)); the front is dropped once it is the larger half.
    private var start = 0
    /// Where the search for a newline goes on (an index into `buffer`, at
    /// or after `start`): a partial line is not searched again.
    private var scanned = 0

    public init(maxLength: Int = SMTPDefaults.maxCommandLineLength) {
        self.maxLength = maxLength
    }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 0 && start >= buffer.count - start {
            buffer.removeSubrange(..<start)
            scanned -= start
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The bytes received after the last complete line; the STARTTLS check
    /// needs to know whether a client pipelined past it.
    public var pendingByteCount: Int { buffer.count - start }

    /// Takes the bytes not yet framed (for DATA, which has its own decoder).
    public mutating func takeRemaining() -> [UInt8] {
        defer { discardPending() }
        return Array(buffer[start...])
    }

    public mutating func discardPending() {
        buffer = []
        start = 0
        scanned = 0
    }

    /// The next complete line without its terminator, or nil when more bytes are needed.
    public mutating func next() -> Line? {
        guard let newline = buffer[max(start, scanned)...].firstIndex(of: UInt8(ascii: "\n")) else {
            scanned = buffer.count
            if buffer.count - start > maxLength + 1 { return .tooLong }
            return nil
        }
        var end = newline
        if end > start && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        let line = Array(buffer[start..<end])
        start = newline + 1
        scanned = start
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
            scanned = 0
        }
        if line.count > maxLength { return .tooLong }
        return .line(line)
    }
}
