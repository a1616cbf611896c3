/// The DNS wire format (RFC 1035 §4, RFC 6891 for EDNS0): building queries
/// and parsing responses. Pure: no I/O.
///
/// Parsing is defensive, since answers come off the network: every length is
/// checked against the end of the message, compression pointers must point
/// backwards (so they cannot loop), and names are limited to 255 octets.

/// The fixed 12-octet header (RFC 1035 §4.1.1).
public struct DNSHeader: Sendable, Equatable {
    public var id: UInt16
    public var flags: UInt16
    public var questionCount: UInt16
    public var answerCount: UInt16
    public var authorityCount: UInt16
    public var additionalCount: UInt16

    public var isResponse: Bool { flags & 0x8000 != 0 }
    public var isTruncated: Bool { flags & 0x0200 != 0 }
    public var responseCode: DNSResponseCode { DNSResponseCode(rawValue: flags & 0x000f) }
}

/// RCODE values (RFC 1035 §4.1.1, RFC 6895).
public struct DNSResponseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let noError = DNSResponseCode(rawValue: 0)
    public static let formatError = DNSResponseCode(rawValue: 1)
    public static let serverFailure = DNSResponseCode(rawValue: 2)
    public static let nameError = DNSResponseCode(rawValue: 3)
    public static let notImplemented = DNSResponseCode(rawValue: 4)
    public static let refused = DNSResponseCode(rawValue: 5)

    public var description: String {
        switch self {
        case .noError: "NOERROR"
        case .formatError: "FORMERR"
        case .serverFailure: "SERVFAIL"
        case .nameError: "NXDOMAIN"
        case .notImplemented: "NOTIMP"
        case .refused: "REFUSED"
        default: "RCODE\(rawValue)"
        }
    }
}

public struct DNSQuestion: Sendable, Equatable {
    /// Without the trailing dot, as it appears on the wire (case preserved).
    public var name: String
    public var type: DNSRecordType
    public var recordClass: UInt16

    public init(name: String, type: DNSRecordType, recordClass: UInt16 = 1) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
    }

    /// Whether `other` asks the same thing; names compare ASCII
    /// case-insensitively (RFC 4343).
    public func matches(_ other: DNSQuestion) -> Bool {
        type == other.type && recordClass == other.recordClass && DNSName.equal(name, other.name)
    }
}

public struct DNSResourceRecord: Sendable, Equatable {
    public var name: String
    public var type: DNSRecordType
    public var recordClass: UInt16
    public var ttl: UInt32
    public var data: DNSRecordData
}

/// A parsed response: the header, the question and the answer section. The
/// authority and additional sections are skipped over, not kept; an MTA only
/// needs the answers.
public struct DNSResponse: Sendable, Equatable {
    public var header: DNSHeader
    public var questions: [DNSQuestion]
    public var answers: [DNSResourceRecord]
}

/// Why bytes are not a DNS message we accept.
public struct DNSParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "malformed DNS message: \(reason)" }
}

/// Names: validation, encoding and comparison.
public enum DNSName {
    /// The longest name on the wire, in octets, including length octets
    /// and the root (RFC 1035 §2.3.4).
    public static let maximumWireLength = 255
    public static let maximumLabelLength = 63

    /// The labels of a textual name (a trailing dot is allowed). Throws if a
    /// label is empty or too long, or the name is too long. Non-ASCII is
    /// refused: callers convert to A-labels first.
    public static func labels(of name: String) throws(DNSParseError) -> [[UInt8]] {
        var text = Substring(name)
        if text.hasSuffix(".") { text = text.dropLast() }
        if text.isEmpty { return [] }
        var labels: [[UInt8]] = []
        var wireLength = 1
        for label in text.split(separator: ".", omittingEmptySubsequences: false) {
            let bytes = Array(label.utf8)
            guard !bytes.isEmpty else { throw DNSParseError("empty label in \"\(name)\"") }
            guard bytes.count <= maximumLabelLength else { throw DNSParseError("label too long in \"\(name)\"") }
            guard bytes.allSatisfy({ $0 < 0x80 }) else { throw DNSParseError("non-ASCII name \"\(name)\"") }
            wireLength += bytes.count + 1
            labels.append(bytes)
        }
        guard wireLength <= maximumWireLength else { throw DNSParseError("name too long: \"\(name)\"") }
        return labels
    }

    /// ASCII case-insensitive comparison, ignoring a trailing dot.
    public static func equal(_ lhs: String, _ rhs: String) -> Bool {
        canonical(lhs) == canonical(rhs)
    }

    /// Lower case (ASCII only), without a trailing dot.
    public static func canonical(_ name: String) -> String {
        var text = Substring(name)
        if text.hasSuffix(".") { text = text.dropLast() }
        return String(decoding: text.utf8.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }, as: UTF8.self)
    }
}

public enum DNSWire {
    /// The EDNS0 UDP payload size we advertise: the DNS flag day 2020 value,
    /// which avoids IP fragmentation.
    public static let ednsPayloadSize: UInt16 = 1232

    /// A recursive query (RD set) for one question, with an EDNS0 OPT record
    /// when `ednsPayloadSize` is given.
    public static func query(
        id: UInt16, name: String, type: DNSRecordType, ednsPayloadSize: UInt16? = DNSWire.ednsPayloadSize
    ) throws(DNSParseError) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(64)
        append16(id, to: &bytes)
        append16(0x0100, to: &bytes)  // RD
        append16(1, to: &bytes)
        append16(0, to: &bytes)
        append16(0, to: &bytes)
        append16(ednsPayloadSize == nil ? 0 : 1, to: &bytes)
        for label in try DNSName.labels(of: name) {
            bytes.append(UInt8(label.count))
            bytes.append(contentsOf: label)
        }
        bytes.append(0)
        append16(type.rawValue, to: &bytes)
        append16(1, to: &bytes)  // IN
        if let ednsPayloadSize {
            // OPT pseudo-record (RFC 6891 §6.1.2): root name, type 41, class =
            // payload size, TTL = extended RCODE/version/flags, no options.
            bytes.append(0)
            append16(DNSRecordType.opt.rawValue, to: &bytes)
            append16(ednsPayloadSize, to: &bytes)
            bytes.append(contentsOf: [0, 0, 0, 0])
            append16(0, to: &bytes)
        }
        return bytes
    }

    /// Parses a response. Throws on anything malformed; never traps.
    public static func parse(_ bytes: [UInt8]) throws(DNSParseError) -> DNSResponse {
        var reader = Reader(bytes: bytes)
        let header = DNSHeader(
            id: try reader.read16(), flags: try reader.read16(), questionCount: try reader.read16(),
            answerCount: try reader.read16(), authorityCount: try reader.read16(),
            additionalCount: try reader.read16())
        var questions: [DNSQuestion] = []
        for _ in 0..<header.questionCount {
            let name = try reader.readName()
            let type = DNSRecordType(rawValue: try reader.read16())
            let recordClass = try reader.read16()
            questions.append(DNSQuestion(name: name, type: type, recordClass: recordClass))
        }
        var answers: [DNSResourceRecord] = []
        for _ in 0..<header.answerCount {
            answers.append(try reader.readRecord())
        }
        // The other sections are not used, but a truncated one still means
        // a broken message. Only the record framing is checked.
        for _ in 0..<(Int(header.authorityCount) + Int(header.additionalCount)) {
            try reader.skipRecord()
        }
        return DNSResponse(header: header, questions: questions, answers: answers)
    }

    static func append16(_ value: UInt16, to bytes: inout [UInt8]) {
        bytes.append(UInt8(value >> 8))
        bytes.append(UInt8(value & 0xff))
    }

    /// A cursor over a whole message; names may point anywhere before
    /// themselves, so the reader keeps all of it.
    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func read8() throws(DNSParseError) -> UInt8 {
            guard offset < bytes.count else { throw DNSParseError("truncated at octet \(offset)") }
            defer { offset += 1 }
            return bytes[offset]
        }

        mutating func read16() throws(DNSParseError) -> UInt16 {
            UInt16(try read8()) << 8 | UInt16(try read8())
        }

        mutating func read32() throws(DNSParseError) -> UInt32 {
            UInt32(try read16()) << 16 | UInt32(try read16())
        }

        mutating func readBytes(_ count: Int) throws(DNSParseError) -> ArraySlice<UInt8> {
            guard count >= 0, offset + count <= bytes.count else {
                throw DNSParseError("length \(count) at octet \(offset) runs past the end")
            }
            defer { offset += count }
            return bytes[offset..<(offset + count)]
        }

        /// A possibly compressed name (RFC 1035 §4.1.4). Each pointer must go
        /// strictly backwards from the label that holds it, so a chain of
        /// pointers always ends.
        mutating func readName() throws(DNSParseError) -> String {
            var labels: [String] = []
            var wireLength = 1
            var position = offset
            var resumeAt: Int? = nil
            while true {
                guard position < bytes.count else { throw DNSParseError("name runs past the end") }
                let length = Int(bytes[position])
                switch length & 0xc0 {
                case 0x00:
                    if length == 0 {
                        offset = resumeAt ?? position + 1
                        return labels.joined(separator: ".")
                    }
                    guard position + 1 + length <= bytes.count else { throw DNSParseError("label runs past the end") }
                    wireLength += length + 1
                    guard wireLength <= DNSName.maximumWireLength else { throw DNSParseError("name too long") }
                    labels.append(Self.labelText(bytes[(position + 1)...(position + length)]))
                    position += 1 + length
                case 0xc0:
                    guard position + 1 < bytes.count else { throw DNSParseError("pointer runs past the end") }
                    let target = (length & 0x3f) << 8 | Int(bytes[position + 1])
                    guard target < position else { throw DNSParseError("compression pointer does not point backwards") }
                    if resumeAt == nil { resumeAt = position + 2 }
                    position = target
                default:
                    throw DNSParseError("unknown label type \(length >> 6)")
                }
            }
        }

        /// A label as text. Dots and non-printable octets inside a label are
        /// escaped as RFC 1035 master files do (`\.`, `\DDD`), so such a
        /// label can never pass for two.
        static func labelText(_ octets: ArraySlice<UInt8>) -> String {
            if octets.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != 0x2e && $0 != 0x5c }) {
                return String(decoding: octets, as: UTF8.self)
            }
            var text = ""
            for octet in octets {
                switch octet {
                case 0x2e, 0x5c: text += "\\" + String(UnicodeScalar(octet))
                case 0x21..<0x7f: text.unicodeScalars.append(UnicodeScalar(octet))
                default:
                    let digits = String(octet)
                    text += "\\" + String(repeating: "0", count: 3 - digits.count) + digits
                }
            }
            return text
        }

        mutating func readRecord() throws(DNSParseError) -> DNSResourceRecord {
            let name = try readName()
            let type = DNSRecordType(rawValue: try read16())
            let recordClass = try read16()
            let ttl = try read32()
            let length = Int(try read16())
            let start = offset
            let end = start + length
            guard end <= bytes.count else { throw DNSParseError("record data runs past the end") }
            let data: DNSRecordData
            switch type {
            case .a:
                guard length == 4 else { throw DNSParseError("A record of \(length) octets") }
                data = .a(IPAddress(bytes: Array(try readBytes(4)))!)
            case .aaaa:
                guard length == 16 else { throw DNSParseError("AAAA record of \(length) octets") }
                data = .aaaa(IPAddress(bytes: Array(try readBytes(16)))!)
            case .mx:
                let preference = try read16()
                data = .mx(preference: preference, exchange: try readName())
            case .cname:
                data = .cname(try readName())
            case .ptr:
                data = .ptr(try readName())
            case .txt:
                var strings: [[UInt8]] = []
                while offset < end {
                    let count = Int(try read8())
                    guard offset + count <= end else { throw DNSParseError("TXT string runs past its record") }
                    strings.append(Array(try readBytes(count)))
                }
                data = .txt(strings)
            default:
                data = .other(type: type, data: Array(try readBytes(length)))
            }
            guard offset == end else { throw DNSParseError("\(type) record data has the wrong length") }
            return DNSResourceRecord(name: name, type: type, recordClass: recordClass, ttl: ttl, data: data)
        }

        mutating func skipRecord() throws(DNSParseError) {
            _ = try readName()
            _ = try readBytes(8)
            let length = Int(try read16())
            _ = try readBytes(length)
        }
    }
}
