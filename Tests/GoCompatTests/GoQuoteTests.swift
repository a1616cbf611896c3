import Testing

@testable import GoCompat

/// Expected values are what Go's strconv.Quote gives for the same input.
@Suite struct GoQuoteTests {
    @Test(arguments: [
        ("plain text", #""plain text""#),
        ("say \"hi\" \\ bye", #""say \"hi\" \\ bye""#),
        ("a\r\nb\tc", #""a\r\nb\tc""#),
        ("\u{07}\u{08}\u{0C}\u{0B}", #""\a\b\f\v""#),
        ("nul\u{00}esc\u{1B}del\u{7F}", #""nul\x00esc\x1bdel\x7f""#),
        // C1 controls: U+009B is a terminal's CSI.
        ("\u{85}\u{9B}", #""\u0085\u009b""#),
        // Bidi overrides and isolates, line/paragraph separators, BOM: all
        // outside Go's IsPrint.
        ("a\u{202E}b\u{2066}c", #""a\u202eb\u2066c""#),
        ("\u{2028}\u{2029}\u{FEFF}", #""\u2028\u2029\ufeff""#),
        // Spaces other than U+0020 are not printable to Go.
        ("a\u{A0}b", #""a\u00a0b""#),
        // Private use, beyond the BMP.
        ("\u{F0000}", #""\U000f0000""#),
        // Letters, marks, symbols and emoji stay as they are.
        ("ñandú 用户 n\u{0303} € 😀", "\"ñandú 用户 n\u{0303} € 😀\""),
    ])
    func quotesAsGo(input: String, quoted: String) {
        #expect(goQuoted(input) == quoted)
    }

    @Test func innerDropsOnlyTheOuterQuotes() {
        #expect(goQuotedInner("a\"b\n") == #"a\"b\n"#)
    }
}
