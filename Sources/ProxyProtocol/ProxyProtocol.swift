#if canImport(Glibc)
import Glibc
#endif

/// The PROXY protocol header HAProxy sends before the client's bytes
/// (haproxy's proxy-protocol.txt): version 1 (a text line) and version 2
/// (binary). Pure: it parses bytes and says what they mean.
public struct ProxyHeader: Equatable, Sendable {
    public struct Endpoint: Equatable, Sendable {
        /// The address as text (`192.0.2.1`, `2001:db8::1`).
        public var ip: String
        public var port: Int
        public init(ip: String, port: Int) {
            self.ip = ip
            self.port = port
        }
    }

    public enum Addresses: Equatable, Sendable {
        /// A proxied TCP connection: the real client, and where it connected.
        case tcp(source: Endpoint, destination: Endpoint)
        /// v2 LOCAL: the proxy speaking for itself (a health check); the
        /// connection's own addresses stand.
        case local
    }

    public var version: Int
    public var addresses: Addresses

    public init(version: Int, addresses: Addresses) {
        self.version = version
        self.addresses = addresses
    }
}

public enum ProxyParse: Equatable, Sendable {
    /// Not enough bytes yet to decide.
    case incomplete
    /// Not a valid header; the connection must be refused.
    case invalid(String)
    /// A header, `length` bytes long; what follows is the client's.
    case header(ProxyHeader, length: Int)
}

public enum ProxyProtocol {
    /// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// The longest v1 line, CRLF included (the specification's limit).
    public static let maximumV1Length = 107
    /// The longest v2 header: 16 fixed bytes and a 16-bit length.
    public static let maximumV2Length = 16 + 65535

    /// Parses the start of a connection's bytes.
    public static func parse(_ bytes: some Collection<UInt8>) -> ProxyParse {
        let bytes = Array(bytes)
        guard let first = bytes.first else { return .incomplete }
        if first == UInt8(ascii: "P") { return parseV1(bytes) }
        if first == v2Signature[0] { return parseV2(bytes) }
        return .invalid("not a PROXY protocol header")
    }

    static func parseV1(_ bytes: [UInt8]) -> ProxyParse {
        let prefix = Array("PROXY ".utf8)
        guard bytes.starts(with: prefix.prefix(bytes.count)) else { return .invalid("invalid protocol identifier") }
        guard let newline = bytes.prefix(maximumV1Length).firstIndex(of: UInt8(ascii: "\n")) else {
            return bytes.count >= maximumV1Length ? .invalid("header line too long") : .incomplete
        }
        guard newline > 0, bytes[newline - 1] == UInt8(ascii: "\r") else { return .invalid("header line must end in CRLF") }
        let line = String(decoding: bytes[..<(newline - 1)], as: UTF8.self)
        // Single spaces, exactly six fields, as the specification writes it.
        let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        guard fields.count == 6, fields[0] == "PROXY" else { return .invalid("invalid protocol identifier") }
        let family: Int32
        switch fields[1] {
        case "TCP4": family = AF_INET
        case "TCP6": family = AF_INET6
        default: return .invalid("unknown protocol \(fields[1].debugDescription)")
        }
        guard let source = canonicalIP(fields[2], family: family) else { return .invalid("invalid source address") }
        guard let destination = canonicalIP(fields[3], family: family) else {
            return .invalid("invalid destination address")
        }
        guard let sourcePort = port(fields[4]) else { return .invalid("invalid source port") }
        guard let destinationPort = port(fields[5]) else { return .invalid("invalid destination port") }
        return tcpHeader(
            version: 1, source: .init(ip: source, port: sourcePort),
            destination: .init(ip: destination, port: destinationPort), length: newline + 1)
    }

    static func parseV2(_ bytes: [UInt8]) -> ProxyParse {
        guard bytes.starts(with: v2Signature.prefix(bytes.count)) else { return .invalid("not a PROXY protocol header") }
        guard bytes.count >= 16 else { return .incomplete }
        let versionAndCommand = bytes[12]
        guard versionAndCommand >> 4 == 2 else { return .invalid("unsupported version \(versionAndCommand >> 4)") }
        let length = Int(bytes[14]) << 8 | Int(bytes[15])
        guard bytes.count >= 16 + length else { return .incomplete }
        let body = bytes[16..<(16 + length)]
        switch versionAndCommand & 0x0F {
        case 0x0:
            // LOCAL: whatever follows is to be ignored.
            return .header(ProxyHeader(version: 2, addresses: .local), length: 16 + length)
        case 0x1:
            break
        default:
            return .invalid("unknown command \(versionAndCommand & 0x0F)")
        }
        let familyAndTransport = bytes[13]
        // Only TCP (transport 1) over IPv4 (family 1) or IPv6 (family 2):
        // chasquid needs a real client address, and SMTP is TCP.
        let addressLength: Int
        let family: Int32
        switch familyAndTransport {
        case 0x00:
            // UNSPEC: the proxy does not know the client; the specification
            // says to use the connection's own addresses, as for LOCAL.
            return .header(ProxyHeader(version: 2, addresses: .local), length: 16 + length)
        case 0x11: (family, addressLength) = (AF_INET, 4)
        case 0x21: (family, addressLength) = (AF_INET6, 16)
        default: return .invalid("unsupported address family and transport 0x\(String(familyAndTransport, radix: 16))")
        }
        guard length >= 2 * addressLength + 4 else { return .invalid("address block too short") }
        let start = body.startIndex
        let source = textIP(Array(body[start..<(start + addressLength)]), family: family)
        let destination = textIP(Array(body[(start + addressLength)..<(start + 2 * addressLength)]), family: family)
        let portsAt = start + 2 * addressLength
        let sourcePort = Int(body[portsAt]) << 8 | Int(body[portsAt + 1])
        let destinationPort = Int(body[portsAt + 2]) << 8 | Int(body[portsAt + 3])
        // TLVs may follow; none changes what we use.
        return tcpHeader(
            version: 2, source: .init(ip: source, port: sourcePort),
            destination: .init(ip: destination, port: destinationPort), length: 16 + length)
    }

    static func tcpHeader(
        version: Int, source: ProxyHeader.Endpoint, destination: ProxyHeader.Endpoint, length: Int
    ) -> ProxyParse {
        .header(ProxyHeader(version: version, addresses: .tcp(source: source, destination: destination)), length: length)
    }

    /// The address in its canonical text, if `text` is one of `family`.
    static func canonicalIP(_ text: String, family: Int32) -> String? {
        var storage = [UInt8](repeating: 0, count: 16)
        guard inet_pton(family, text, &storage) == 1 else { return nil }
        return textIP(Array(storage.prefix(family == AF_INET ? 4 : 16)), family: family)
    }

    static func textIP(_ raw: [UInt8], family: Int32) -> String {
        // An IPv4 client through a dual-stack bind comes as ::ffff:a.b.c.d;
        // it is written as IPv4, as Go does, so logs and bans match.
        if family == AF_INET6, raw.count == 16, raw[0..<10].allSatisfy({ $0 == 0 }), raw[10] == 0xFF, raw[11] == 0xFF {
            return textIP(Array(raw[12...]), family: AF_INET)
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        _ = inet_ntop(family, raw, &text, socklen_t(text.count))
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// 0–65535 in decimal digits only, as Go's ParseUint(…, 10, 16).
    static func port(_ text: String) -> Int? {
        guard !text.isEmpty, text.count <= 5, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
            let value = Int(text), value <= 65535
        else { return nil }
        return value
    }
}
