/// What an MTA asks of DNS, independent of how the answer is obtained: the
/// stub resolver (`StubResolver`) asks real servers; tests answer from
/// in-memory zones.
///
/// The three outcomes SPF and delivery tell apart:
/// - records: a non-empty array;
/// - the name exists but has no records of that type: an empty array;
/// - the name does not exist: `DNSError.nameNotFound`;
/// - the answer could not be had: `DNSError.temporaryFailure` (timeouts,
///   SERVFAIL, network errors) or `DNSError.permanentFailure` (the question
///   itself is bad, or the servers refuse it).
public protocol DNSLookup: Sendable {
    /// The records of `type` at `name`, after following CNAMEs.
    func lookup(_ name: String, _ type: DNSRecordType) async throws(DNSError) -> [DNSRecordData]
}

/// Why a lookup gave no records.
public enum DNSError: Error, Sendable, Equatable, CustomStringConvertible {
    /// NXDOMAIN: the name does not exist.
    case nameNotFound(String)
    /// Try again later: timeouts, SERVFAIL, unreachable servers, a broken answer.
    case temporaryFailure(String)
    /// Asking again will not help: an invalid name, REFUSED, NOTIMP, a CNAME loop.
    case permanentFailure(String)

    public var description: String {
        switch self {
        case .nameNotFound(let name): "lookup \(name): no such host"
        case .temporaryFailure(let reason): "temporary DNS failure: \(reason)"
        case .permanentFailure(let reason): "DNS failure: \(reason)"
        }
    }

    /// Whether this is the name-does-not-exist outcome.
    public var isNameNotFound: Bool {
        if case .nameNotFound = self { return true }
        return false
    }

    public var isTemporary: Bool {
        if case .temporaryFailure = self { return true }
        return false
    }
}

/// Record types, as a struct so unknown types round-trip (RFC 1035 §3.2.2,
/// RFC 3596, RFC 6891).
public struct DNSRecordType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let a = DNSRecordType(rawValue: 1)
    public static let ns = DNSRecordType(rawValue: 2)
    public static let cname = DNSRecordType(rawValue: 5)
    public static let soa = DNSRecordType(rawValue: 6)
    public static let ptr = DNSRecordType(rawValue: 12)
    public static let mx = DNSRecordType(rawValue: 15)
    public static let txt = DNSRecordType(rawValue: 16)
    public static let aaaa = DNSRecordType(rawValue: 28)
    public static let opt = DNSRecordType(rawValue: 41)

    public var description: String {
        switch self {
        case .a: "A"
        case .ns: "NS"
        case .cname: "CNAME"
        case .soa: "SOA"
        case .ptr: "PTR"
        case .mx: "MX"
        case .txt: "TXT"
        case .aaaa: "AAAA"
        case .opt: "OPT"
        default: "TYPE\(rawValue)"
        }
    }
}

/// The data of one resource record, decoded for the types we use.
public enum DNSRecordData: Hashable, Sendable {
    case a(IPAddress)
    case aaaa(IPAddress)
    /// `exchange` is a domain name without the trailing dot; "" is the root
    /// (a null MX, RFC 7505, has exchange "").
    case mx(preference: UInt16, exchange: String)
    /// The record's character-strings, undecoded. SPF joins them without a
    /// separator (RFC 7208 §3.3).
    case txt([[UInt8]])
    case ptr(String)
    case cname(String)
    case other(type: DNSRecordType, data: [UInt8])
}

extension DNSLookup {
    /// TXT records, each RR's character-strings joined, as text. Bytes that
    /// are not UTF-8 become U+FFFD; callers that need ASCII check for it.
    public func txt(_ name: String) async throws(DNSError) -> [String] {
        try await lookup(name, .txt).compactMap {
            if case .txt(let strings) = $0 { return String(decoding: strings.joined(), as: UTF8.self) }
            return nil
        }
    }

    /// A (IPv4) or AAAA (IPv6) addresses.
    public func addresses(_ name: String, ipv6: Bool) async throws(DNSError) -> [IPAddress] {
        try await lookup(name, ipv6 ? .aaaa : .a).compactMap {
            switch $0 {
            case .a(let address), .aaaa(let address): address
            default: nil
            }
        }
    }

    /// A then AAAA addresses of `name`, and the errors of the lookups that
    /// failed (both, when there are no addresses at all).
    public func allAddresses(_ name: String) async -> (addresses: [IPAddress], errors: [DNSError]) {
        var addresses: [IPAddress] = []
        var errors: [DNSError] = []
        for ipv6 in [false, true] {
            do { addresses += try await self.addresses(name, ipv6: ipv6) } catch { errors.append(error) }
        }
        return (addresses, errors)
    }

    /// MX records in the order received (callers sort by preference).
    public func mx(_ name: String) async throws(DNSError) -> [(preference: UInt16, exchange: String)] {
        try await lookup(name, .mx).compactMap {
            if case .mx(let preference, let exchange) = $0 { return (preference, exchange) }
            return nil
        }
    }

    /// Names from PTR records (names without the trailing dot).
    public func ptr(_ name: String) async throws(DNSError) -> [String] {
        try await lookup(name, .ptr).compactMap {
            if case .ptr(let target) = $0 { return target }
            return nil
        }
    }
}
