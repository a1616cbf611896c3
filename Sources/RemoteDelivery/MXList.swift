import DNS

/// Where mail for a domain goes (RFC 5321 §5.1, RFC 7505, COMPAT.md §12.5 step 1).
public enum MXList {
    /// chasquid tries at most this many MXs.
    public static let maximumHosts = 5

    public enum Outcome: Equatable, Sendable {
        /// Hosts to try, in order.
        case hosts([String])
        case temporaryFailure(String)
        case permanentFailure(String)
    }

    /// The hosts for `domain` (A-labels), best first. Equal preferences are
    /// shuffled, so load spreads as the domain's owner intended.
    public static func lookup(
        _ domain: String, dns: any DNSLookup, shuffle: (inout [String]) -> Void = { $0.shuffle() }
    ) async -> Outcome {
        let records: [(preference: UInt16, exchange: String)]
        do {
            records = try await dns.mx(domain)
        } catch {
            switch error {
            case .nameNotFound:
                // No such domain: try it as its own MX, which then fails;
                // chasquid treats "not found" as implicit MX too.
                return .hosts([domain])
            case .temporaryFailure(let reason):
                return .temporaryFailure("MX lookup for \(domain): \(reason)")
            case .permanentFailure(let reason):
                return .permanentFailure("MX lookup for \(domain): \(reason)")
            }
        }
        return order(records, domain: domain, shuffle: shuffle)
    }

    /// Orders MX records; pure, for tests.
    public static func order(
        _ records: [(preference: UInt16, exchange: String)], domain: String,
        shuffle: (inout [String]) -> Void = { $0.shuffle() }
    ) -> Outcome {
        // No MX records: the domain itself (implicit MX, RFC 5321 §5.1).
        if records.isEmpty { return .hosts([domain]) }
        // A null MX says the domain takes no mail at all (RFC 7505): give
        // up at once rather than retry for days (COMPAT.md §22.8).
        if records.count == 1, records[0].exchange.isEmpty || records[0].exchange == "." {
            return .permanentFailure("\(domain) does not accept mail (null MX)")
        }
        var hosts: [String] = []
        let byPreference = Dictionary(grouping: records, by: \.preference)
        for preference in byPreference.keys.sorted() {
            var names = byPreference[preference]!.map(\.exchange).filter { !$0.isEmpty && $0 != "." }
            shuffle(&names)
            hosts += names
        }
        if hosts.isEmpty { return .permanentFailure("Could not find mail server for \(domain)") }
        return .hosts(Array(hosts.prefix(maximumHosts)))
    }
}
