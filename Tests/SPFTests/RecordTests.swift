import DNS
import Testing

@testable import SPF

/// Record selection and parsing (RFC 7208 §4.5, §4.6, §5, §6), CIDR lengths.
@Suite struct RecordTests {
    static func parse(_ text: String) throws(SPFSyntaxError) -> SPFRecord {
        try SPFRecord.parse(Array(text.utf8))
    }

    static func error(_ text: String) -> String? {
        do {
            _ = try parse(text)
            return nil
        } catch {
            return error.reason
        }
    }

    static func domain(_ text: String) -> MacroString {
        try! MacroString.parseDomainSpec(Array(text.utf8))
    }

    @Test func selectsSPFRecords() {
        for text in ["v=spf1", "v=spf1 -all", "V=SpF1 ~all", "v=spf1  "] {
            #expect(SPFRecord.isSPF(Array(text.utf8)), "\(text)")
        }
        for text in ["v=spf10", "v=spf1mx", "v=spf1\t-all", " v=spf1", "spf1", "", "v=spf2.0/pra"] {
            #expect(!SPFRecord.isSPF(Array(text.utf8)), "\(text)")
        }
    }

    @Test func parsesEveryTermKind() throws {
        let record = try Self.parse(
            "v=spf1 +all -include:_spf.example.com ~a ?a:%{d}.example.org/24//64 MX mx:mail.example.com//48 "
                + "ptr PTR:example.net ip4:192.0.2.0/24 ip6:2001:db8::/32 exists:%{ir}.bl.example.com "
                + "Redirect=other.example.com EXP=exp.%{d2} moo.cow-far_out=man:dog/cat default=+"
        )
        #expect(
            record.directives == [
                Directive(qualifier: .pass, mechanism: .all),
                Directive(qualifier: .fail, mechanism: .include(Self.domain("_spf.example.com"))),
                Directive(qualifier: .softfail, mechanism: .a(nil, DualCIDR())),
                Directive(
                    qualifier: .neutral,
                    mechanism: .a(Self.domain("%{d}.example.org"), DualCIDR(ipv4: 24, ipv6: 64))
                ),
                Directive(qualifier: .pass, mechanism: .mx(nil, DualCIDR())),
                Directive(
                    qualifier: .pass,
                    mechanism: .mx(Self.domain("mail.example.com"), DualCIDR(ipv4: 32, ipv6: 48))
                ),
                Directive(qualifier: .pass, mechanism: .ptr(nil)),
                Directive(qualifier: .pass, mechanism: .ptr(Self.domain("example.net"))),
                Directive(qualifier: .pass, mechanism: .ip4(IPAddress("192.0.2.0")!, prefixLength: 24)),
                Directive(qualifier: .pass, mechanism: .ip6(IPAddress("2001:db8::")!, prefixLength: 32)),
                Directive(qualifier: .pass, mechanism: .exists(Self.domain("%{ir}.bl.example.com"))),
            ]
        )
        #expect(record.redirect == Self.domain("other.example.com"))
        #expect(record.explanation == Self.domain("exp.%{d2}"))
        #expect(record.terms.contains(.modifier(.unknown(name: "moo.cow-far_out"))))
        #expect(record.terms.contains(.modifier(.unknown(name: "default"))))
        #expect(record.terms.count == 15)
    }

    @Test func spacing() throws {
        #expect(try Self.parse("v=spf1").terms.isEmpty)
        #expect(try Self.parse("v=spf1   a    -all   ").directives.count == 2)
    }

    /// The reasons, worded as chasquid's library words them.
    @Test(arguments: [
        // Unknown or malformed terms.
        ("v=spf1 ip4:1.2.3.4 -all moo", "unknown field"),
        ("v=spf1 -all.", "unknown field"),
        ("v=spf1 -all:foobar", "unknown field"),
        ("v=spf1 -all/8", "unknown field"),
        ("v=spf1 redirect:t2.example.com", "unknown field"),
        ("v=spf1 1up=foo", "unknown field"),
        ("v=spf1 =all", "unknown field"),
        ("v=spf1 moo.cow/far_out=man:dog/cat", "unknown field"),
        ("v=spf1 moo.cow:far_out=man:dog/cat", "unknown field"),
        ("v=spf1 include", "unknown field"),
        ("v=spf1 exists", "unknown field"),
        ("v=spf1 ip4", "unknown field"),
        ("v=spf1 ptr/0", "unknown field"),
        ("v=spf1 a/24/64", "invalid mask"),
        ("v=spf1 a/24/", "unknown field"),
        ("v=spf1 +redirect=example.com", "unknown field"),
        ("v=spf1 \u{80}a:example.net", "unknown field"),
        ("v=spf1 a:example.net \u{96}all", "unknown field"),
        ("v=spf1 a:ctrl.example.com\rptr -all", "invalid domain"),
        // Addresses.
        ("v=spf1 ip4:1.2.3", "invalid ipX value"),
        ("v=spf1 ip4:1.2.3.4:8080", "invalid ipX value"),
        ("v=spf1 ip4:01.2.3.4", "invalid ipX value"),
        ("v=spf1 ip4:192.0.2.5\n", "invalid ipX value"),
        ("v=spf1 ip4:::1", "invalid ipX value"),
        ("v=spf1 ip6:1.2.3.4", "invalid ipX value"),
        ("v=spf1 ip6::CAFE::BABE", "invalid ipX value"),
        ("v=spf1 ip4:", "invalid ipX value"),
        // Prefix lengths.
        ("v=spf1 ip4:1.2.3.4/33", "invalid mask"),
        ("v=spf1 ip4:1.2.3.4/032", "invalid mask"),
        ("v=spf1 ip4:1.2.3.4//32", "invalid mask"),
        ("v=spf1 ip4:1.2.3.4/", "invalid mask"),
        ("v=spf1 ip6:::1.1.1.1/129", "invalid mask"),
        ("v=spf1 ip6:::1.1.1.1//33", "invalid mask"),
        ("v=spf1 a/33", "invalid mask"),
        ("v=spf1 a//129", "invalid mask"),
        ("v=spf1 mx/33 -all", "invalid mask"),
        ("v=spf1 a/01", "invalid mask"),
        ("v=spf1 a//0128", "invalid mask"),
        // Macros.
        ("v=spf1 a:%{a}.example.com", "invalid macro"),
        ("v=spf1 exists:foo%(ir).sbl.example.com", "invalid macro"),
        ("v=spf1 exists:foo%.sbl.example.com", "invalid macro"),
        ("v=spf1 -all foo=%abc", "invalid macro"),
        ("v=spf1 -all exp=%{r}.example.com", "invalid macro"),
        ("v=spf1 exists:%{d0}.example.com", "invalid macro"),
        // Domain-specs.
        ("v=spf1 a:museum", "invalid domain"),
        ("v=spf1 a:museum.", "invalid domain"),
        ("v=spf1 a:abc.123", "invalid domain"),
        ("v=spf1 a:example.-com", "invalid domain"),
        ("v=spf1 a:example.com:8080", "invalid domain"),
        ("v=spf1 a:foo.example.com\u{0}", "invalid domain"),
        ("v=spf1 a:", "invalid domain"),
        ("v=spf1 mx:", "invalid domain"),
        ("v=spf1 ptr:", "invalid domain"),
        ("v=spf1 include:", "invalid domain"),
        ("v=spf1 exists:", "invalid domain"),
        ("v=spf1 include:ip5.example.com/24", "invalid domain"),
        ("v=spf1 exists:mail.example.com/24", "invalid domain"),
        ("v=spf1 redirect=", "invalid domain"),
        ("v=spf1 redirect=-all ?all", "invalid domain"),
        ("v=spf1 exp=", "invalid domain"),
        ("v=spf1 exp=-all", "invalid domain"),
        ("v=spf1 a:\u{FEFF}garbage.example.net -all", "invalid domain"),
        // Modifiers at most once.
        ("v=spf1 redirect=a.example.com redirect=a.example.com", "invalid domain"),
        ("v=spf1 exp=a.example.com -all exp=b.example.com", "invalid domain"),
    ])
    func syntaxErrors(_ record: String, _ reason: String) {
        #expect(Self.error(record) == reason)
    }

    @Test func syntaxErrorsNameTheTerm() {
        #expect(throws: SPFSyntaxError(SPFReason.unknownField, Array("moo".utf8))) {
            try Self.parse("v=spf1 -all moo")
        }
    }

    /// dual-cidr-length on a and mx.
    @Test(
        arguments: [
            ("", nil, DualCIDR(ipv4: 32, ipv6: 128)),
            ("/24", nil, DualCIDR(ipv4: 24, ipv6: 128)),
            ("//64", nil, DualCIDR(ipv4: 32, ipv6: 64)),
            ("/24//64", nil, DualCIDR(ipv4: 24, ipv6: 64)),
            ("/0//0", nil, DualCIDR(ipv4: 0, ipv6: 0)),
            ("/32//128", nil, DualCIDR(ipv4: 32, ipv6: 128)),
            (":foo.example.com/24", "foo.example.com", DualCIDR(ipv4: 24, ipv6: 128)),
            (":foo.example.com//0", "foo.example.com", DualCIDR(ipv4: 32, ipv6: 0)),
            (":foo:bar/baz.example.com", "foo:bar/baz.example.com", DualCIDR(ipv4: 32, ipv6: 128)),
            (":%{d}/8", "%{d}", DualCIDR(ipv4: 8, ipv6: 128)),
        ] as [(String, String?, DualCIDR)]
    )
    func dualCIDR(_ argument: String, _ domain: String?, _ cidr: DualCIDR) throws {
        let record = try Self.parse("v=spf1 a\(argument) mx\(argument)")
        let spec = domain.map(Self.domain)
        #expect(record.directives.map(\.mechanism) == [.a(spec, cidr), .mx(spec, cidr)])
    }

    @Test(arguments: [
        ("ip4:1.2.3.4", "1.2.3.4", 32), ("ip4:1.2.3.4/0", "1.2.3.4", 0), ("ip4:10.0.0.0/8", "10.0.0.0", 8),
        ("ip6:::1", "::1", 128), ("ip6:Cafe:Babe:8000::/33", "cafe:babe:8000::", 33),
        ("ip6:::FFFF:1.2.3.4", "::ffff:1.2.3.4", 128), ("ip6:2001:db8::/0", "2001:db8::", 0),
    ])
    func networks(_ term: String, _ address: String, _ length: Int) throws {
        let mechanism = try Self.parse("v=spf1 " + term).directives.first?.mechanism
        if term.hasPrefix("ip4") {
            #expect(mechanism == .ip4(IPAddress(address)!, prefixLength: length))
        } else {
            #expect(mechanism == .ip6(IPAddress(address)!, prefixLength: length))
        }
    }

    @Test func domainNames() {
        #expect(DomainName.checkHostDomain("example.com") == "example.com")
        #expect(DomainName.checkHostDomain("Example.COM.") == "Example.COM")
        #expect(DomainName.checkHostDomain(String(repeating: "a", count: 63) + ".example.com") != nil)
        // Single labels are looked up (see checkHostDomain).
        #expect(DomainName.checkHostDomain("A2345678") == "A2345678")
        #expect(DomainName.checkHostDomain("localhost.") == "localhost")
        for bad in [
            String(repeating: "a", count: 64) + ".example.com", "a...example.com", "[1.2.3.5]", "123",
            "1.2.3.4", "", ".", "example.com..", "exa mple.com", "caf\u{e9}.example",
            String(repeating: "a.", count: 127) + "com",
        ] {
            #expect(DomainName.checkHostDomain(bad) == nil, "\(bad)")
        }
    }

    /// §7.3: over 253 octets, whole labels go from the left.
    @Test func queryNamesAreTruncatedFromTheLeft() {
        let label = String(repeating: "x", count: 60)
        let four = Array(repeating: label, count: 4).joined(separator: ".")
        let three = Array(repeating: label, count: 3).joined(separator: ".")
        // 6 + 243 + 12 = 261 octets: "first." goes (255), then one more label (194).
        #expect(DomainName.queryName("first." + four + ".example.com.") == three + ".example.com")
        // The suite's domain-name-truncation case: only "foobar." goes (258 → 251).
        let o = "somewhat.long.exp.example.com"
        let eight = Array(repeating: o, count: 8).joined(separator: ".")
        #expect(DomainName.queryName("foobar." + eight + ".example.com") == eight + ".example.com")
        // 253 octets exactly stay.
        let exact = String(repeating: "a", count: 61) + "." + four.prefix(191)
        #expect(exact.utf8.count == 253)
        #expect(DomainName.queryName(exact) == exact)
        #expect(DomainName.queryName("mail.example.com.") == "mail.example.com")
        #expect(DomainName.queryName("mail.example...com") == nil)
        #expect(DomainName.queryName(String(repeating: "a", count: 64) + ".com") == nil)
        #expect(DomainName.queryName("macro%percent  space%20url-space.example.com") != nil)
        #expect(DomainName.queryName("") == nil)
        #expect(DomainName.queryName(".") == nil)
    }
}
