import Testing

@testable import ProxyProtocol

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// A v2 header: signature, version/command, family/transport, length, body.
func v2(command: UInt8 = 0x21, family: UInt8 = 0x11, body: [UInt8]) -> [UInt8] {
    ProxyProtocol.v2Signature + [command, family, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
}

@Suite struct ProxyV1Tests {
    @Test func tcp4AndTcp6() {
        #expect(
            ProxyProtocol.parse(bytes("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\nEHLO x\r\n"))
                == .header(
                    ProxyHeader(
                        version: 1,
                        addresses: .tcp(
                            source: .init(ip: "192.0.2.1", port: 56324), destination: .init(ip: "198.51.100.2", port: 25))),
                    length: 44))
        guard case .header(let h, _) = ProxyProtocol.parse(bytes("PROXY TCP6 2001:DB8:0::1 ::1 65535 0\r\n")) else {
            Issue.record("not parsed")
            return
        }
        // Canonical text, so logs and SPF see one spelling.
        #expect(h.addresses == .tcp(source: .init(ip: "2001:db8::1", port: 65535), destination: .init(ip: "::1", port: 0)))
    }

    @Test func aPartialLineWaits() {
        #expect(ProxyProtocol.parse(bytes("PRO")) == .incomplete)
        #expect(ProxyProtocol.parse(bytes("PROXY TCP4 192.0.2.1 ")) == .incomplete)
        #expect(ProxyProtocol.parse([]) == .incomplete)
    }

    @Test(arguments: [
        ("PROXY UNKNOWN\r\n", "invalid protocol identifier"),
        ("PROXY UNKNOWN 1.2.3.4 1.2.3.4 1 2\r\n", "unknown protocol \"UNKNOWN\""),
        ("PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "invalid protocol identifier"),
        ("PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n", "invalid protocol identifier"),
        ("PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n", "invalid protocol identifier"),
        ("PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\n", "invalid source address"),
        ("PROXY TCP4 ::1 1.2.3.4 1 2\r\n", "invalid source address"),
        ("PROXY TCP6 ::1 1.2.3.4 1 2\r\n", "invalid destination address"),
        ("PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "invalid source port"),
        ("PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n", "invalid source port"),
        ("PROXY TCP4 1.2.3.4 1.2.3.4 1 -2\r\n", "invalid destination port"),
        ("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "header line must end in CRLF"),
        ("EHLO client.example\r\n", "not a PROXY protocol header"),
        ("PROXX TCP4", "invalid protocol identifier"),
    ])
    func invalidLinesAreRefused(line: String, reason: String) {
        #expect(ProxyProtocol.parse(bytes(line)) == .invalid(reason))
    }

    @Test func aLineWithoutAnEndIsCutAtTheLimit() {
        let long = "PROXY TCP4 " + String(repeating: "1", count: 200)
        #expect(ProxyProtocol.parse(bytes(long)) == .invalid("header line too long"))
    }
}

@Suite struct ProxyV2Tests {
    @Test func tcp4WithTrailingTLVs() {
        let body: [UInt8] = [192, 0, 2, 1, 198, 51, 100, 2, 0xDC, 0x04, 0, 25] + [0x04, 0, 1, 0x55]
        let header = v2(body: body)
        #expect(
            ProxyProtocol.parse(header + bytes("EHLO x\r\n"))
                == .header(
                    ProxyHeader(
                        version: 2,
                        addresses: .tcp(
                            source: .init(ip: "192.0.2.1", port: 56324), destination: .init(ip: "198.51.100.2", port: 25))),
                    length: header.count))
    }

    @Test func tcp6() {
        var body = [UInt8](repeating: 0, count: 36)
        body[0] = 0x20; body[1] = 0x01; body[2] = 0x0D; body[3] = 0xB8; body[15] = 1
        body[31] = 1
        body[32] = 0x01; body[33] = 0x00; body[35] = 25
        guard case .header(let h, _) = ProxyProtocol.parse(v2(family: 0x21, body: body)) else {
            Issue.record("not parsed")
            return
        }
        #expect(h.addresses == .tcp(source: .init(ip: "2001:db8::1", port: 256), destination: .init(ip: "::1", port: 25)))
    }

    /// LOCAL: a health check from the proxy; its address block is skipped.
    @Test func localKeepsTheConnectionsAddress() {
        let header = v2(command: 0x20, family: 0x00, body: [1, 2, 3])
        #expect(ProxyProtocol.parse(header) == .header(ProxyHeader(version: 2, addresses: .local), length: header.count))
    }

    @Test func partialHeadersWait() {
        let full = v2(body: [192, 0, 2, 1, 198, 51, 100, 2, 0, 1, 0, 25])
        for cut in [1, 11, 12, 15, 16, full.count - 1] {
            #expect(ProxyProtocol.parse(full.prefix(cut)) == .incomplete, "cut at \(cut)")
        }
    }

    @Test func invalidHeadersAreRefused() {
        #expect(ProxyProtocol.parse(v2(command: 0x11, body: [])) == .invalid("unsupported version 1"))
        #expect(ProxyProtocol.parse(v2(command: 0x22, body: [])) == .invalid("unknown command 2"))
        // UDP and Unix carry no TCP client.
        #expect(ProxyProtocol.parse(v2(family: 0x12, body: [UInt8](repeating: 0, count: 12))) == .invalid("unsupported address family and transport 0x12"))
        #expect(ProxyProtocol.parse(v2(family: 0x31, body: [UInt8](repeating: 0, count: 216))) == .invalid("unsupported address family and transport 0x31"))
        // UNSPEC with PROXY: the connection's own addresses, as LOCAL.
        #expect(ProxyProtocol.parse(v2(family: 0x00, body: [])) == .header(ProxyHeader(version: 2, addresses: .local), length: 16))
        #expect(ProxyProtocol.parse(v2(family: 0x11, body: [1, 2, 3, 4])) == .invalid("address block too short"))
        var wrong = v2(body: [UInt8](repeating: 0, count: 12))
        wrong[5] = 0x0B
        #expect(ProxyProtocol.parse(wrong) == .invalid("not a PROXY protocol header"))
    }
}

@Suite struct ProxyMappedAddressTests {
    /// A dual-stack HAProxy writes IPv4 clients as ::ffff:a.b.c.d; they
    /// are logged (and banned) as IPv4.
    @Test func mappedAddressesAreWrittenAsIPv4() {
        guard case .header(let h, _) = ProxyProtocol.parse(bytes("PROXY TCP6 ::ffff:192.0.2.9 ::1 1 25\r\n")) else {
            Issue.record("not parsed")
            return
        }
        #expect(h.addresses == .tcp(source: .init(ip: "192.0.2.9", port: 1), destination: .init(ip: "::1", port: 25)))
    }
}
