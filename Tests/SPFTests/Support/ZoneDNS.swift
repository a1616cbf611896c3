import DNS

/// An in-memory zone answering as the conformance suites' runners do
/// (Tests/Fixtures/spf/README.md): names absent from the zone are
/// NXDOMAIN, names present without the asked type give no records, CNAMEs
/// are followed, and a failure marker (TIMEOUT, SERVFAIL, CNAMELOOP) fails
/// every query whose type has no record listed before the marker.
struct ZoneDNS: DNSLookup {
    enum Failure: Sendable, Hashable {
        case timeout
        case serverFailure
        case cnameLoop
    }

    enum Entry: Sendable, Hashable {
        case record(DNSRecordType, DNSRecordData)
        case failure(Failure)
    }

    /// Owner names, normalized (see `normalize`), to their entries in order.
    var zone: [String: [Entry]]

    init(_ zone: [String: [Entry]] = [:]) {
        self.zone = [:]
        for (name, entries) in zone { self.zone[Self.normalize(name), default: []] += entries }
    }

    /// Lower-case ASCII, without a trailing dot: DNS names compare that way.
    static func normalize(_ name: String) -> String {
        var text = String(decoding: name.utf8.map { (0x41...0x5a).contains($0) ? $0 + 0x20 : $0 }, as: UTF8.self)
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }

    /// How many CNAMEs a lookup follows before calling it a loop.
    static let maxChain = 16

    func lookup(_ name: String, _ type: DNSRecordType) async throws(DNSError) -> [DNSRecordData] {
        var current = Self.normalize(name)
        for _ in 0..<Self.maxChain {
            guard let entries = zone[current] else { throw .nameNotFound(name) }
            var found: [DNSRecordData] = []
            var alias: String?
            scan: for entry in entries {
                switch entry {
                case .record(let recordType, let data):
                    if recordType == type {
                        found.append(data)
                    } else if type != .cname, case .cname(let target) = data {
                        alias = target
                    }
                case .failure(let failure):
                    guard found.isEmpty, alias == nil else { break scan }
                    switch failure {
                    case .timeout: throw .temporaryFailure("timeout querying \(name)")
                    case .serverFailure: throw .temporaryFailure("SERVFAIL for \(name)")
                    case .cnameLoop: throw .permanentFailure("CNAME loop at \(name)")
                    }
                }
            }
            guard found.isEmpty, let alias else { return found }
            current = Self.normalize(alias)
        }
        throw .permanentFailure("CNAME loop at \(name)")
    }
}

extension ZoneDNS {
    /// A zone written compactly for unit tests: TXT strings, A/AAAA text,
    /// MX as (preference, exchange).
    static func with(
        txt: [String: [String]] = [:],
        a: [String: [String]] = [:],
        aaaa: [String: [String]] = [:],
        mx: [String: [(UInt16, String)]] = [:],
        ptr: [String: [String]] = [:],
        timeouts: [String] = []
    ) -> ZoneDNS {
        var zone: [String: [Entry]] = [:]
        for (name, texts) in txt {
            zone[name, default: []] += texts.map { .record(.txt, .txt([Array($0.utf8)])) }
        }
        for (name, addresses) in a {
            zone[name, default: []] += addresses.map { .record(.a, .a(IPAddress($0)!)) }
        }
        for (name, addresses) in aaaa {
            zone[name, default: []] += addresses.map { .record(.aaaa, .aaaa(IPAddress($0)!)) }
        }
        for (name, exchanges) in mx {
            zone[name, default: []] += exchanges.map { .record(.mx, .mx(preference: $0.0, exchange: $0.1)) }
        }
        for (name, targets) in ptr {
            zone[name, default: []] += targets.map { .record(.ptr, .ptr($0)) }
        }
        for name in timeouts { zone[name, default: []].append(.failure(.timeout)) }
        return ZoneDNS(zone)
    }
}
