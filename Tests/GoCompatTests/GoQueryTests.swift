import Foundation
import Testing

@testable import GoCompat

/// Expected values are what Go's url.QueryEscape and url.QueryUnescape give.
@Suite struct GoQueryTests {
    @Test func escapeKeepsUnreservedCharacters() {
        #expect(GoQuery.escape("AZaz09-_.~") == "AZaz09-_.~")
        #expect(GoQuery.escape("a b/c") == "a+b%2Fc")
        #expect(GoQuery.escape("ñ@x") == "%C3%B1%40x")
    }

    @Test func unescapeInvertsEscape() throws {
        #expect(try GoQuery.unescape("a+b%2fc%C3%B1") == "a b/cñ")
        #expect(throws: GoQuery.Error(description: "invalid URL escape in \"a%z\"")) { try GoQuery.unescape("a%z") }
        #expect(throws: GoQuery.Error(description: "invalid UTF-8 in \"%C3\"")) { try GoQuery.unescape("%C3") }
    }
}

@Suite struct GoDateTests {
    /// Go's time.RFC1123Z in local time, checked against Foundation's formatter.
    @Test(arguments: [0.0, 1_136_214_245, 1_700_000_000.75])
    func formatsLikeRFC1123Z(seconds: Double) {
        let date = Date(timeIntervalSince1970: seconds)
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss Z"
        #expect(rfc1123Date(date) == formatter.string(from: date))
    }
}
