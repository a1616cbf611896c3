import Normalization

/// The client side of the protocol, with no I/O: reading replies, the EHLO
/// keywords, and the DATA block on the wire (RFC 5321 §4.2, §4.5.2).

/// Assembles a reply from its lines.
///
/// ```
/// Reply-line = *( Reply-code "-" [ textstring ] CRLF )
///              Reply-code [ SP textstring ] CRLF
/// ```
public struct ReplyParser: Sendable {
    private var code: Int?
    private var lines: [String] = []

    public init() {}

    public struct Malformed: Error, Equatable, Sendable, CustomStringConvertible {
        public var line: String
        public var description: String { "malformed reply line \(Self.quoted(line))" }
        static func quoted(_ text: String) -> String { "\"" + String(text.prefix(100)) + "\"" }
    }

    /// Feeds one line (without its line ending); returns the reply once its
    /// last line has come.
    public mutating func feed(_ line: String) throws(Malformed) -> Reply? {
        let bytes = Array(line.utf8)
        guard bytes.count >= 3, bytes[0...2].allSatisfy({ $0 >= 48 && $0 <= 57 }),
            let lineCode = Int(String(decoding: bytes[0...2], as: UTF8.self)),
            (200...599).contains(lineCode) || (100...199).contains(lineCode)
        else { throw Malformed(line: line) }
        if let code, code != lineCode { throw Malformed(line: line) }
        code = lineCode
        let separator: UInt8? = bytes.count > 3 ? bytes[3] : nil
        guard separator == nil || separator == UInt8(ascii: " ") || separator == UInt8(ascii: "-") else {
            throw Malformed(line: line)
        }
        lines.append(bytes.count > 4 ? String(decoding: bytes[4...], as: UTF8.self) : "")
        guard separator != UInt8(ascii: "-") else { return nil }
        defer {
            self.code = nil
            self.lines = []
        }
        return Reply(lineCode, lines: lines)
    }
}

/// What the server said it supports, from its EHLO reply (RFC 5321 §4.1.1.1).
public struct ServerCapabilities: Equatable, Sendable {
    /// Upper-cased keyword → its parameters.
    public var keywords: [String: [String]]

    public init(ehloReply: Reply) {
        var keywords: [String: [String]] = [:]
        for line in ehloReply.lines.dropFirst() {
            let words = line.split(scalar: " ").map(String.init)
            guard let keyword = words.first else { continue }
            keywords[keyword.uppercased()] = Array(words.dropFirst())
        }
        self.keywords = keywords
    }

    /// What a HELO (not EHLO) server offers: nothing.
    public static let none = ServerCapabilities(keywords: [:])

    init(keywords: [String: [String]]) { self.keywords = keywords }

    public func has(_ keyword: String) -> Bool { keywords[keyword.uppercased()] != nil }

    /// The SIZE limit, when the server announced one (RFC 1870); 0 means none.
    public var sizeLimit: Int? {
        guard let value = keywords["SIZE"]?.first, let limit = Int(value), limit > 0 else { return nil }
        return limit
    }
}

/// The DATA block as sent: line endings made CRLF (an existing CRLF stays
/// one), every line that starts with "." gets another (RFC 5321 §4.5.2),
/// and the block ends with CRLF "." CRLF. A bare CR ends its line too (it
/// becomes CRLF): a receiver that took it for a line end could otherwise
/// read a `\r.\r\n` inside the message as its end (SMTP smuggling, issue
/// 13 §5), so nothing but CRLF ever separates lines on the wire.
public func encodeDataBlock(_ message: [UInt8]) -> [UInt8] {
    let cr = UInt8(ascii: "\r")
    let lf = UInt8(ascii: "\n")
    var out: [UInt8] = []
    out.reserveCapacity(message.count + message.count / 32 + 8)
    var atLineStart = true
    var afterCR = false
    for byte in message {
        if afterCR {
            afterCR = false
            out.append(lf)
            atLineStart = true
            if byte == lf { continue }
        }
        if byte == cr {
            out.append(cr)
            afterCR = true
            continue
        }
        if atLineStart && byte == UInt8(ascii: ".") { out.append(UInt8(ascii: ".")) }
        if byte == lf { out.append(cr) }
        out.append(byte)
        atLineStart = byte == lf
    }
    if afterCR {
        out.append(lf)
        atLineStart = true
    }
    if !atLineStart { out.append(contentsOf: [cr, lf]) }
    out.append(contentsOf: Array(".\r\n".utf8))
    return out
}
