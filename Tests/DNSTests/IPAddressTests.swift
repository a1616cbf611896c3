import Testing

@testable import DNS

@Suite struct IPAddressTests {
    @Test(arguments: [
        ("192.0.2.1", "192.0.2.1"), ("0.0.0.0", "0.0.0.0"), ("255.255.255.255", "255.255.255.255"),
        ("2001:DB8::1", "2001:db8::1"), ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"), ("::", "::"), ("::1", "::1"),
        ("1::", "1::"), ("::ffff:192.0.2.5", "::ffff:192.0.2.5"), ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
    ])
    func parsesAndPrintsCanonically(_ input: String, _ canonical: String) throws {
        let address = try #require(IPAddress(input))
        #expect(address.description == canonical)
        #expect(IPAddress(canonical) == address)
    }

    @Test(arguments: [
        "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.-4", "1::2::3", "12345::", ":::", "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7::8:9", "g::1", "::1.2.3", "1.2.3.4::", " 1.2.3.4",
    ])
    func rejectsMalformedText(_ input: String) {
        #expect(IPAddress(input) == nil)
    }

    @Test func reverseNames() throws {
        #expect(try #require(IPAddress("192.0.2.1")).reverseName == "1.2.0.192.in-addr.arpa")
        #expect(
            try #require(IPAddress("2001:db8::567:89ab")).reverseName
                == "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa")
    }

    @Test func prefixMatching() throws {
        let client = try #require(IPAddress("192.0.2.130"))
        #expect(client.isIn(try #require(IPAddress("192.0.2.128")), prefixLength: 25))
        #expect(!client.isIn(try #require(IPAddress("192.0.2.0")), prefixLength: 25))
        #expect(client.isIn(try #require(IPAddress("10.0.0.0")), prefixLength: 0))
        #expect(client.isIn(client, prefixLength: 32))
        #expect(!client.isIn(client, prefixLength: 33))
        let v6 = try #require(IPAddress("2001:db8:1234::1"))
        #expect(v6.isIn(try #require(IPAddress("2001:db8:1200::")), prefixLength: 40))
        #expect(!v6.isIn(try #require(IPAddress("2001:db8:1200::")), prefixLength: 48))
        // Families never match each other.
        #expect(!client.isIn(v6, prefixLength: 0))
    }

    @Test func mappedAddressesUnmapToIPv4() throws {
        #expect(try #require(IPAddress("::ffff:10.1.2.3")).unmapped == IPAddress("10.1.2.3"))
        #expect(try #require(IPAddress("2001:db8::1")).unmapped == IPAddress("2001:db8::1"))
    }
}

@Suite struct ResolverConfigurationTests {
    @Test func readsServersAndOptions() throws {
        let configuration = ResolverConfiguration.parse(
            resolvConf: """
                # comment
                search example.com
                nameserver 192.0.2.53
                nameserver 2001:db8::53 # trailing comment
                nameserver fe80::1%eth0
                nameserver 192.0.2.54
                nameserver not-an-address
                options ndots:2 timeout:3 attempts:4 rotate
                """)
        #expect(configuration.servers.map { $0.ipAddress ?? "" } == ["192.0.2.53", "2001:db8::53", "fe80::1"])
        #expect(configuration.servers.allSatisfy { $0.port == 53 })
        #expect(configuration.timeout == .seconds(3))
        #expect(configuration.attempts == 4)
        #expect(configuration.rotate)
    }

    @Test func defaultsToTheLocalHost() {
        let configuration = ResolverConfiguration.parse(resolvConf: "search example.com\n")
        #expect(configuration.servers.map { $0.ipAddress ?? "" } == ["127.0.0.1", "::1"])
        #expect(configuration.timeout == .seconds(5))
        #expect(configuration.attempts == 2)
    }

    @Test func singleServerForms() throws {
        #expect(try ResolverConfiguration.single("127.0.0.1:9053").servers.first?.port == 9053)
        #expect(try ResolverConfiguration.single("[::1]:9053").servers.first?.ipAddress == "::1")
        #expect(try ResolverConfiguration.single("127.0.0.1").servers.first?.port == 53)
        #expect(throws: DNSError.self) { try ResolverConfiguration.single("localhost:53") }
        #expect(throws: DNSError.self) { try ResolverConfiguration.single("127.0.0.1:99999") }
    }
}
