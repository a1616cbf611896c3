import Normalization

/// An SMTP reply: a code and text lines. The enhanced status code (RFC 3463)
/// is part of the text, as chasquid writes it.
public struct Reply: Equatable, Sendable, CustomStringConvertible {
    public var code: Int
    public var lines: [String]

    /// One line per LF scalar (a CRLF is one `Character`, so the split is
    /// per scalar); a CR before the LF is dropped.
    public init(_ code: Int, _ text: String) {
        self.code = code
        // Nearly every reply is one line with no CR: no split to make.
        if !text.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D }) {
            self.lines = [text]
            return
        }
        self.lines = text.split(scalar: "\n", omittingEmptySubsequences: false).map {
            String($0.unicodeScalars.last == "\r" ? $0.unicodeScalars.dropLast() : $0.unicodeScalars)
        }
    }

    public init(_ code: Int, lines: [String]) {
        self.code = code
        self.lines = lines.isEmpty ? [""] : lines
    }

    /// What a draining server tells a session before closing it.
    public static let shuttingDown = Reply(421, "4.3.2 Service shutting down, please try again later")

    /// The disk holding the queue is full (RFC 3463 4.3.1, as Postfix
    /// says it); the cause is in the daemon log, not told to clients.
    public static let insufficientStorage = Reply(452, "4.3.1 Insufficient system storage, try again later")

    /// Replies at or above 400 count against the connection's error budget.
    public var isError: Bool { code >= 400 }

    /// The wire form: `250-first`, …, `250 last`, each ending in CRLF. A CR
    /// or LF left inside a line (a hook's text, a remote server's) goes as a
    /// space, so no reply can end early or add a line of its own.
    public var encoded: String { String(decoding: encodedBytes, as: UTF8.self) }

    /// The wire form as bytes, built over UTF-8 (a reply is written for
    /// every command; building it scalar by scalar showed in profiles).
    public var encodedBytes: [UInt8] {
        let codeBytes = Array(String(code).utf8)
        var out: [UInt8] = []
        out.reserveCapacity(lines.reduce(0) { $0 + $1.utf8.count + 6 })
        for (index, line) in lines.enumerated() {
            out += codeBytes
            out.append(index == lines.count - 1 ? 0x20 : 0x2D)
            for byte in line.utf8 { out.append(byte == 0x0D || byte == 0x0A ? 0x20 : byte) }
            out += [0x0D, 0x0A]
        }
        return out
    }

    /// The text on one line, as logged.
    public var text: String { lines.joined(separator: "\n") }

    public var description: String { "\(code) \(text)" }
}
