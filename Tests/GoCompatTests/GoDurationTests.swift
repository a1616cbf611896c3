import Testing

@testable import GoCompat

@Suite struct GoDurationTests {
    @Test(arguments: [
        ("0", Int64(0)), ("20h", 72_000_000_000_000), ("1h30m", 5_400_000_000_000), ("1.5s", 1_500_000_000),
        ("300ms", 300_000_000), ("-1m", -60_000_000_000), ("+2s", 2_000_000_000), ("10us", 10_000),
        ("10µs", 10_000), ("7ns", 7), (".5s", 500_000_000), ("1h1m1s", 3_661_000_000_000),
    ])
    func parses(text: String, nanoseconds: Int64) throws {
        #expect(try GoDuration.parse(text) == nanoseconds)
    }

    @Test(arguments: ["", "1", "3d", "h", "1.2.3s", "--1s", "1 h", "s1", "."])
    func rejects(text: String) {
        #expect(throws: GoDuration.Error.self) { try GoDuration.parse(text) }
    }

    @Test(arguments: [
        (Int64(0), "0s"), (1_500_000_000, "1.5s"), (65_123_456_789, "1m5.123456789s"), (72_000_000_000_000, "20h0m0s"),
        (1_500_000, "1.5ms"), (2_000, "2µs"), (7, "7ns"), (-90_000_000_000, "-1m30s"),
    ])
    func formatsLikeGo(nanoseconds: Int64, text: String) {
        #expect(GoDuration.format(nanoseconds: nanoseconds) == text)
    }
}
