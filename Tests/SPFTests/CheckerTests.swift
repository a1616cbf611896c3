import DNS
import Testing

@testable import SPF

/// check_host() end to end over small zones: limits, include and redirect,
/// explanations, identities, DNS errors.
@Suite struct CheckerTests {
    static let client = IPAddress("192.0.2.1")!

    static func check(
        _ dns: ZoneDNS,
        ip: IPAddress = client,
        sender: String = "user@example.com",
        helo: String = "mail.example.com",
        lookupLimit: Int = 10,
        voidLookupLimit: Int = 2
    ) async -> SPFOutcome {
        let checker = SPFChecker(
            dns: dns,
            lookupLimit: lookupLimit,
            voidLookupLimit: voidLookupLimit,
            receivingHost: "mx.example.net",
            defaultExplanation: "DEFAULT",
            now: { 1_700_000_000 }
        )
        return await checker.check(ip: ip, helo: helo, sender: sender)
    }

    // MARK: The 10 DNS-querying terms (§4.6.4)

    /// "a" terms on a name without the client's address, then "+all".
    static func aTerms(_ count: Int) -> ZoneDNS {
        .with(
            txt: ["example.com": ["v=spf1" + String(repeating: " a:h.example.com", count: count) + " +all"]],
            a: ["h.example.com": ["198.51.100.1"]]
        )
    }

    @Test func tenLookupsAreAllowedEleventhIsPermerror() async {
        #expect(await Self.check(Self.aTerms(10)) == SPFOutcome(result: .pass, reason: "matched all"))
        #expect(
            await Self.check(Self.aTerms(11)) == SPFOutcome(result: .permerror, reason: "lookup limit reached")
        )
    }

    /// Each "mx" term is one lookup, however many MX names it has.
    @Test func mxTermsCountOnceEach() async {
        func mxTerms(_ count: Int) -> ZoneDNS {
            .with(
                txt: ["example.com": ["v=spf1" + String(repeating: " mx:m.example.com", count: count) + " all"]],
                mx: ["m.example.com": [(1, "nx1.example.com"), (2, "nx2.example.com"), (3, "nx3.example.com")]]
            )
        }
        #expect(await Self.check(mxTerms(10)) == SPFOutcome(result: .pass, reason: "matched all"))
        #expect(await Self.check(mxTerms(11)) == SPFOutcome(result: .permerror, reason: "lookup limit reached"))
    }

    @Test func theLookupLimitIsConfigurable() async {
        #expect(await Self.check(Self.aTerms(3), lookupLimit: 3).result == .pass)
        #expect(
            await Self.check(Self.aTerms(4), lookupLimit: 3)
                == SPFOutcome(result: .permerror, reason: "lookup limit reached")
        )
    }

    /// Even without a usable lookup limit, include and redirect loops end.
    @Test func loopsEndWithoutALimit() async {
        let dns = ZoneDNS.with(txt: [
            "example.com": ["v=spf1 include:loop.example.com -all"],
            "loop.example.com": ["v=spf1 ip4:198.51.100.1 redirect=example.com"],
        ])
        #expect(
            await Self.check(dns, lookupLimit: .max) == SPFOutcome(result: .permerror, reason: "lookup limit reached")
        )
    }

    /// include and redirect count, and the count spans the records they reach.
    @Test func includeAndRedirectCountAcrossRecords() async {
        // 1 include + 9 in the included record = 10; the redirect is the 11th.
        let dns = ZoneDNS.with(
            txt: [
                "example.com": ["v=spf1 include:inc.example.com redirect=r.example.com"],
                "inc.example.com": ["v=spf1" + String(repeating: " a:h.example.com", count: 9)],
                "r.example.com": ["v=spf1 +all"],
            ],
            a: ["h.example.com": ["198.51.100.1"]]
        )
        #expect(await Self.check(dns) == SPFOutcome(result: .permerror, reason: "lookup limit reached"))
        #expect(await Self.check(dns, lookupLimit: 11) == SPFOutcome(result: .pass, reason: "matched all"))
    }

    /// ip4, ip6, all and exp= do not count.
    @Test func nonDNSTermsDoNotCount() async {
        let dns = ZoneDNS.with(
            txt: [
                "example.com": [
                    "v=spf1" + String(repeating: " a:h.example.com", count: 10)
                        + " ip4:198.51.100.0/24 ip6:2001:db8::/32 -all exp=e.example.com"
                ],
                "e.example.com": ["no"],
            ],
            a: ["h.example.com": ["198.51.100.1"]]
        )
        #expect(await Self.check(dns) == SPFOutcome(result: .fail, reason: "matched all", explanation: "no"))
    }

    // MARK: Void lookups (§4.6.4)

    static func voidTerms(_ count: Int) -> ZoneDNS {
        .with(
            txt: ["example.com": ["v=spf1" + (0..<count).map { " a:none\($0).example.com" }.joined() + " ?all"]],
            a: ["empty.example.com": []]
        )
    }

    @Test func twoVoidLookupsAreAllowedThirdIsPermerror() async {
        #expect(await Self.check(Self.voidTerms(2)) == SPFOutcome(result: .neutral, reason: "matched all"))
        #expect(
            await Self.check(Self.voidTerms(3))
                == SPFOutcome(result: .permerror, reason: "void lookup limit reached")
        )
        #expect(await Self.check(Self.voidTerms(3), voidLookupLimit: 3).result == .neutral)
        #expect(await Self.check(Self.voidTerms(1), voidLookupLimit: 0).result == .permerror)
    }

    /// Names with no records of the type count as void like NXDOMAIN;
    /// mx, ptr and exists count too; the exp= lookup never does.
    @Test func whatCountsAsVoid() async {
        let dns = ZoneDNS.with(
            txt: [
                "example.com": [
                    "v=spf1 a:empty.example.com mx:empty.example.com exists:nx.example.com -all exp=nx.example.com"
                ]
            ],
            aaaa: ["empty.example.com": ["2001:db8::1"]]
        )
        #expect(await Self.check(dns) == SPFOutcome(result: .permerror, reason: "void lookup limit reached"))
        #expect(
            await Self.check(dns, voidLookupLimit: 3)
                == SPFOutcome(result: .fail, reason: "matched all", explanation: "DEFAULT")
        )
        let ptr = ZoneDNS.with(txt: ["example.com": ["v=spf1 ptr ptr ptr ?all"]])
        #expect(await Self.check(ptr) == SPFOutcome(result: .permerror, reason: "void lookup limit reached"))
    }

    // MARK: MX and PTR name limits (§4.6.4)

    static func mxNames(_ count: Int) -> ZoneDNS {
        .with(
            txt: ["example.com": ["v=spf1 mx -all"]],
            a: ["mx10.example.com": ["192.0.2.1"]],
            mx: ["example.com": (1...count).map { (UInt16($0), "mx\($0).example.com") }]
        )
    }

    @Test func tenMXNamesAreAllowedEleventhIsPermerror() async {
        #expect(await Self.check(Self.mxNames(10)) == SPFOutcome(result: .pass, reason: "matched mx"))
        #expect(await Self.check(Self.mxNames(11)) == SPFOutcome(result: .permerror, reason: "too many MX records"))
    }

    static func ptrNames(_ count: Int, matchingAt position: Int) -> ZoneDNS {
        var a: [String: [String]] = [:]
        for index in 1...count { a["h\(index).example.com"] = [index == position ? "192.0.2.1" : "198.51.100.1"] }
        return .with(
            txt: ["example.com": ["v=spf1 ptr -all"]],
            a: a,
            ptr: ["1.2.0.192.in-addr.arpa": (1...count).map { "h\($0).example.com." }]
        )
    }

    @Test func onlyTheFirstTenPTRNamesAreLookedAt() async {
        #expect(await Self.check(Self.ptrNames(12, matchingAt: 10)) == SPFOutcome(result: .pass, reason: "matched ptr"))
        #expect(await Self.check(Self.ptrNames(12, matchingAt: 11)).result == .fail)
    }

    // MARK: Mechanisms

    @Test func ptrValidatesAndMatchesSubdomains() async {
        let dns = ZoneDNS.with(
            txt: [
                "example.com": ["v=spf1 ptr -all"], "other.com": ["v=spf1 ptr:Example.COM -all"],
                "sub.com": ["v=spf1 ptr:mail.example.com -all"],
                "forged.com": ["v=spf1 ptr:forged.com -all"],
            ],
            a: ["mail.example.com": ["192.0.2.1"], "x.forged.com": ["198.51.100.1"]],
            ptr: ["1.2.0.192.in-addr.arpa": ["x.forged.com", "MAIL.example.com"]]
        )
        #expect(await Self.check(dns) == SPFOutcome(result: .pass, reason: "matched ptr"))
        #expect(await Self.check(dns, sender: "a@other.com").result == .pass)
        #expect(await Self.check(dns, sender: "a@sub.com").result == .pass)
        // x.forged.com does not resolve back to the client: not validated.
        #expect(await Self.check(dns, sender: "a@forged.com").result == .fail)
    }

    /// §5.5: a PTR query error is no match; an A error skips that name.
    @Test func ptrErrorsAreNoMatch() async {
        let dns = ZoneDNS.with(
            txt: ["example.com": ["v=spf1 ptr ?all"]],
            a: ["good.example.com": ["192.0.2.1"]],
            ptr: ["1.2.0.192.in-addr.arpa": ["bad.example.com", "good.example.com"]],
            timeouts: ["bad.example.com"]
        )
        #expect(await Self.check(dns) == SPFOutcome(result: .pass, reason: "matched ptr"))
        let failing = ZoneDNS.with(txt: ["example.com": ["v=spf1 ptr ?all"]], timeouts: ["1.2.0.192.in-addr.arpa"])
        #expect(await Self.check(failing) == SPFOutcome(result: .neutral, reason: "matched all"))
    }

    @Test func addressMechanismsUsePrefixes() async {
        let dns = ZoneDNS.with(
            txt: [
                "example.com": ["v=spf1 a/24 -all"], "mx.com": ["v=spf1 mx:example.com//64 -all"],
                "exact.com": ["v=spf1 a:example.com -all"],
            ],
            a: ["example.com": ["192.0.2.200"]],
            aaaa: ["example.com": ["2001:db8::1"]],
            mx: ["example.com": [(10, "example.com")]]
        )
        #expect(await Self.check(dns) == SPFOutcome(result: .pass, reason: "matched a"))
        #expect(await Self.check(dns, sender: "a@exact.com").result == .fail)
        #expect(await Self.check(dns, ip: IPAddress("2001:db8::ffff")!, sender: "a@mx.com").result == .pass)
        #expect(await Self.check(dns, ip: IPAddress("2001:db9::1")!, sender: "a@mx.com").result == .fail)
        // /24 is for IPv4 only; IPv6 clients compare all 128 bits.
        #expect(await Self.check(dns, ip: IPAddress("2001:db8::2")!).result == .fail)
        #expect(await Self.check(dns, ip: IPAddress("2001:db8::1")!).result == .pass)
    }

    /// An IPv4-mapped IPv6 client is the IPv4 client (§5).
    @Test func ipv4MappedClientsAreIPv4() async {
        let dns = ZoneDNS.with(txt: [
            "example.com": ["v=spf1 ip6:::ffff:0:0/96 ip4:192.0.2.0/24 -all exp=e.example.com"],
            "e.example.com": ["%{c} %{i} %{v}"],
        ])
        let mapped = IPAddress("::ffff:192.0.2.1")!
        #expect(await Self.check(dns, ip: mapped) == SPFOutcome(result: .pass, reason: "matched ip"))
        let outside = IPAddress("::ffff:198.51.100.1")!
        #expect(
            await Self.check(dns, ip: outside)
                == SPFOutcome(
                    result: .fail,
                    reason: "matched all",
                    explanation: "198.51.100.1 198.51.100.1 in-addr"
                )
        )
    }

    @Test func existsAsksForAOnly() async {
        let dns = ZoneDNS.with(
            txt: ["example.com": ["v=spf1 exists:%{ir}.%{l}.bl.example.org -all"]],
            a: ["1.2.0.192.user.bl.example.org": ["127.0.0.2"]],
            aaaa: ["v6.bl.example.org": ["::1"]]
        )
        #expect(await Self.check(dns) == SPFOutcome(result: .pass, reason: "matched exists"))
        #expect(await Self.check(dns, sender: "v6@example.com").result == .fail)
    }

    // MARK: include (§5.2) and redirect (§6.1)

    @Test(
        arguments: [
            ("v=spf1 +all", SPFResult.fail, "matched all"),
            ("v=spf1 -all", SPFResult.pass, "matched ip"),
            ("v=spf1 ~all", SPFResult.pass, "matched ip"),
            ("v=spf1 ?all", SPFResult.pass, "matched ip"),
            ("v=spf1 include:nx.example.net", SPFResult.permerror, "no DNS record found"),
            ("v=spf1 moo", SPFResult.permerror, "unknown field"),
            ("not spf", SPFResult.permerror, "no DNS record found"),
            ("TIMEOUT", SPFResult.temperror, "temporary DNS failure: timeout querying inc.example.com"),
        ] as [(String, SPFResult, String)]
    )
    func includeResults(_ included: String, _ result: SPFResult, _ reason: String) async {
        var dns = ZoneDNS.with(txt: ["example.com": ["v=spf1 -include:inc.example.com ip4:192.0.2.1 -all"]])
        dns.zone["inc.example.com"] =
            included == "TIMEOUT" ? [.failure(.timeout)] : [.record(.txt, .txt([Array(included.utf8)]))]
        let outcome = await Self.check(dns)
        #expect(outcome.result == result)
        #expect(outcome.reason == reason)
    }

    @Test func redirect() async {
        let dns = ZoneDNS.with(
            txt: [
                "example.com": ["v=spf1 ip4:198.51.100.1 redirect=_spf.%{d} exp=ignored.example.com"],
                "_spf.example.com": ["v=spf1 a -all exp=why.%{d}"],
                "why._spf.example.com": ["%{d} says no to %{i}"],
                "ignored.example.com": ["ignored"],
                "none.com": ["v=spf1 redirect=nx.example.com"],
            ],
            a: ["_spf.example.com": ["192.0.2.2"]]
        )
        #expect(
            await Self.check(dns)
                == SPFOutcome(
                    result: .fail,
                    reason: "matched all",
                    explanation: "_spf.example.com says no to 192.0.2.1"
                )
        )
        // "a" in the redirected record means the redirected domain.
        #expect(await Self.check(dns, ip: IPAddress("192.0.2.2")!).result == .pass)
        #expect(
            await Self.check(dns, sender: "a@none.com") == SPFOutcome(result: .permerror, reason: "no DNS record found")
        )
    }

    // MARK: Identities and initial processing (§2.4, §4.3)

    @Test func identities() async {
        let dns = ZoneDNS.with(txt: [
            "example.com": ["v=spf1 -all exp=e.example.com"],
            "e.example.com": ["s=%{s} l=%{l} o=%{o} d=%{d} h=%{h} r=%{r} t=%{t}"],
        ])
        #expect(
            await Self.check(dns, sender: "", helo: "example.com").explanation
                == "s=postmaster@example.com l=postmaster o=example.com d=example.com h=example.com r=mx.example.net t=1700000000"
        )
        #expect(
            await Self.check(dns, sender: "@example.com").explanation
                == "s=postmaster@example.com l=postmaster o=example.com d=example.com h=mail.example.com r=mx.example.net t=1700000000"
        )
        #expect(
            await Self.check(dns, sender: "\"a@b\"@Example.COM.").explanation
                == "s=\"a@b\"@Example.COM. l=\"a@b\" o=Example.COM. d=Example.COM h=mail.example.com r=mx.example.net t=1700000000"
        )
    }

    @Test func malformedDomainsAreNone() async {
        let dns = ZoneDNS.with(txt: ["example.com": ["v=spf1 -all"]])
        for sender in [
            "a@" + String(repeating: "x", count: 64) + ".example.com", "a@x..example.com", "a@[192.0.2.1]",
            "a@192.0.2.1", "a@", "a@caf\u{e9}.example.com",
        ] {
            #expect(await Self.check(dns, sender: sender) == SPFOutcome(result: .none, reason: "invalid domain"))
        }
        // Single labels are asked about; here, as in real DNS, they do not exist.
        #expect(
            await Self.check(dns, sender: "", helo: "OEMCOMPUTER")
                == SPFOutcome(result: .none, reason: "no DNS record found")
        )
        #expect(
            await Self.check(dns, sender: "a@nx.example.com")
                == SPFOutcome(result: .none, reason: "no DNS record found")
        )
        #expect(await Self.check(dns, sender: "a@example.com.").result == .fail)
    }

    // MARK: Records and DNS errors (§4.4, §4.5)

    @Test func recordSelection() async {
        let dns = ZoneDNS.with(txt: [
            "two.com": ["v=spf1 -all", "V=SPF1 +all"],
            "other.com": ["google-site-verification=x", "v=spf1 +all", "v=spf10 -all"],
            "empty.com": ["v=spf1"],
            "none.com": ["v=spf2.0/pra -all"],
        ])
        #expect(
            await Self.check(dns, sender: "a@two.com")
                == SPFOutcome(result: .permerror, reason: "multiple matching DNS records")
        )
        #expect(await Self.check(dns, sender: "a@other.com").result == .pass)
        #expect(await Self.check(dns, sender: "a@empty.com") == SPFOutcome(result: .neutral))
        #expect(await Self.check(dns, sender: "a@none.com") == SPFOutcome(result: .none, reason: "no DNS record found"))
    }

    @Test func dnsErrorsAreTemperror() async {
        let dns = ZoneDNS.with(
            txt: [
                "a.com": ["v=spf1 a:t.example.com -all"], "mx.com": ["v=spf1 mx:m.example.com -all"],
                "ex.com": ["v=spf1 exists:t.example.com -all"],
            ],
            mx: ["m.example.com": [(0, "t.example.com")]],
            timeouts: ["t.example.com", "example.com"]
        )
        #expect(
            await Self.check(dns)
                == SPFOutcome(result: .temperror, reason: "temporary DNS failure: timeout querying example.com")
        )
        for domain in ["a.com", "mx.com", "ex.com"] {
            #expect(
                await Self.check(dns, sender: "a@" + domain)
                    == SPFOutcome(result: .temperror, reason: "temporary DNS failure: timeout querying t.example.com")
            )
        }
    }

    // MARK: Explanations (§6.2)

    @Test func explanations() async {
        let dns = ZoneDNS.with(
            txt: [
                "example.com": ["v=spf1 -all exp=e.%{d}"],
                "e.example.com": ["%{i} is not one of %{d}'s designated mail servers. "],
                "soft.com": ["v=spf1 ~all exp=e.example.com"],
                "two.com": ["v=spf1 -all exp=e.two.com"], "e.two.com": ["one", "two"],
                "bad.com": ["v=spf1 -all exp=e.bad.com"], "e.bad.com": ["%{x}"],
                "p.com": ["v=spf1 -all exp=e.p.com"], "e.p.com": ["from %{p}"],
            ],
            a: ["mail.p.com": ["192.0.2.1"]],
            ptr: ["1.2.0.192.in-addr.arpa": ["mail.example.org", "mail.p.com"]]
        )
        #expect(
            await Self.check(dns).explanation
                == "192.0.2.1 is not one of example.com's designated mail servers. "
        )
        #expect(await Self.check(dns, sender: "a@soft.com") == SPFOutcome(result: .softfail, reason: "matched all"))
        #expect(await Self.check(dns, sender: "a@two.com").explanation == "DEFAULT")
        #expect(await Self.check(dns, sender: "a@bad.com").explanation == "DEFAULT")
        #expect(await Self.check(dns, sender: "a@p.com").explanation == "from mail.p.com")
    }

    @Test func theDefaultExplanationIsConfigurable() async {
        let dns = ZoneDNS.with(txt: ["example.com": ["v=spf1 -all"]])
        let standard = SPFChecker(dns: dns)
        #expect(
            await standard.check(ip: Self.client, helo: "h.example.com", sender: "a@example.com").explanation
                == SPFChecker.standardExplanation
        )
        var custom = standard
        custom.defaultExplanation = "go away"
        #expect(
            await custom.check(ip: Self.client, helo: "h.example.com", sender: "a@example.com")
                == SPFOutcome(result: .fail, reason: "matched all", explanation: "go away")
        )
    }
}
