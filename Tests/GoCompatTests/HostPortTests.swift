import Testing

@testable import GoCompat

@Suite struct HostPortTests {
    @Test(arguments: [
        ("mx.example.com", "mx.example.com", nil),
        ("mx.example.com:2525", "mx.example.com", 2525),
        (":25", "", 25),
        ("127.0.0.1:53", "127.0.0.1", 53),
        ("[::1]:25", "::1", 25),
        ("[::1]", "::1", nil),
        ("::1", "::1", nil),
        ("2001:db8::1", "2001:db8::1", nil),
        ("[fe80::1%eth0]:53", "fe80::1%eth0", 53),
    ] as [(String, String, Int?)])
    func parses(text: String, host: String, port: Int?) {
        #expect(HostPort(text) == HostPort(host: host, port: port))
    }

    @Test(arguments: ["[::1", "[::1]x", "[::1]:", "host:", "host:x", "host:65536", "host:-1", "host:２５"])
    func refuses(text: String) {
        #expect(HostPort(text) == nil)
    }
}
