/// Reads a DATA block (RFC 5321 §4.5.2): removes dot-stuffing, turns CRLF
/// into LF, finds the final `.`, counts raw bytes against the size limit, and
/// refuses a bare CR or LF (SMTP smuggling, chasquid ≥1.13) [SEC].
///
/// Bytes go in as they arrive; message bytes come out in LF form, in pieces,
/// so a message never has to be held whole in memory.
public struct DataDecoder: Sendable {
    public enum Event: Equatable, Sendable {
        /// Message bytes, LF line endings, dot-stuffing removed.
        case data([UInt8])
        /// The final `.` arrived. `overLimit`: more raw bytes than allowed
        /// arrived (and were discarded), so the message must be refused.
        /// `remaining`: bytes after the terminator (pipelined commands).
        case end(overLimit: Bool, remaining: [UInt8])
        /// A CR or LF not part of a CRLF.
        case bareLineEnding
    }

    public let maxSize: Int
    /// Raw bytes seen so far, the final `.CRLF` included.
    public private(set) var rawSize = 0
    private var atLineStart = true
    /// The line so far is exactly the one (removed) leading dot.
    private var lineIsLoneDot = false
    private var pendingCR = false
    private var finished = false

    public init(maxSize: Int) {
        self.maxSize = maxSize
    }

    public var isOverLimit: Bool { rawSize > maxSize }

    /// Feeds received bytes; returns what they complete.
    public mutating func feed(_ bytes: [UInt8]) -> [Event] {
        precondition(!finished, "DataDecoder fed after the end")
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            rawSize += 1
            if pendingCR {
                pendingCR = false
                guard byte == UInt8(ascii: "\n") else { return finish(output, .bareLineEnding) }
                if lineIsLoneDot {
                    return finish(output, .end(overLimit: isOverLimit, remaining: Array(bytes[index...])))
                }
                if !isOverLimit { output.append(UInt8(ascii: "\n")) }
                atLineStart = true
                continue
            }
            switch byte {
            case UInt8(ascii: "\r"):
                pendingCR = true
            case UInt8(ascii: "\n"):
                return finish(output, .bareLineEnding)
            case UInt8(ascii: ".") where atLineStart:
                // Dot-unstuffing: the first dot of a line is dropped.
                atLineStart = false
                lineIsLoneDot = true
            default:
                atLineStart = false
                lineIsLoneDot = false
                if !isOverLimit { output.append(byte) }
            }
        }
        return output.isEmpty ? [] : [.data(output)]
    }

    private mutating func finish(_ output: [UInt8], _ event: Event) -> [Event] {
        finished = true
        return output.isEmpty ? [event] : [.data(output), event]
    }
}
