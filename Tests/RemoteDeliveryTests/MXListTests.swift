import DNS
import Testing

@testable import RemoteDelivery

/// An in-memory DNS for MX lookups.
struct FixedDNS: DNSLookup {
    var records: [String: [DNSRecordData]] = [:]
    var failures: [String: DNSError] = [:]

    func lookup(_ name: String, _ type: DNSRecordType) async throws(DNSError) -> [DNSRecordData] {
        if let failure = failures[name] { throw failure }
        guard let data = records[name] else { throw .nameNotFound(name) }
        return data.filter {
            switch ($0, type) {
            case (.mx, .mx), (.a, .a), (.aaaa, .aaaa): true
            default: false
            }
        }
    }
}

@Suite struct MXListTests {
    @Test func ordersByPreferenceAndKeepsAtMostFive() {
        let records: [(preference: UInt16, exchange: String)] = [
            (20, "b"), (10, "a2"), (30, "c"), (10, "a1"), (40, "d"), (50, "e"), (60, "f"),
        ]
        // A deterministic "shuffle" that reverses ties, to see they are grouped.
        let outcome = MXList.order(records, domain: "x.test", shuffle: { $0.sort() })
        #expect(outcome == .hosts(["a1", "a2", "b", "c", "d"]))
    }

    @Test func tiesAreShuffled() {
        let records: [(preference: UInt16, exchange: String)] = (0..<6).map { (10, "mx\($0)") }
        var firsts: Set<String> = []
        for _ in 0..<200 {
            if case .hosts(let hosts) = MXList.order(records, domain: "x.test"), let first = hosts.first {
                firsts.insert(first)
            }
        }
        #expect(firsts.count > 1)
    }

    @Test func implicitNullAndFailures() async {
        var dns = FixedDNS()
        dns.records["a-only.test"] = [.a(IPAddress("192.0.2.1")!)]
        dns.records["null.test"] = [.mx(preference: 0, exchange: "")]
        dns.records["mx.test"] = [.mx(preference: 5, exchange: "mail.mx.test")]
        dns.failures["slow.test"] = .temporaryFailure("timeout")
        dns.failures["refused.test"] = .permanentFailure("REFUSED")
        #expect(await MXList.lookup("a-only.test", dns: dns) == .hosts(["a-only.test"]))
        #expect(await MXList.lookup("absent.test", dns: dns) == .hosts(["absent.test"]))
        #expect(await MXList.lookup("mx.test", dns: dns) == .hosts(["mail.mx.test"]))
        guard case .permanentFailure(let reason) = await MXList.lookup("null.test", dns: dns) else {
            Issue.record("a null MX must fail permanently")
            return
        }
        #expect(reason.contains("null MX"))
        guard case .temporaryFailure = await MXList.lookup("slow.test", dns: dns) else {
            Issue.record("a DNS timeout must be temporary")
            return
        }
        guard case .permanentFailure = await MXList.lookup("refused.test", dns: dns) else {
            Issue.record("a permanent DNS error must be permanent")
            return
        }
    }
}
