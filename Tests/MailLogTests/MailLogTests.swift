import Testing

@testable import MailLog

/// Whatever a client sends, one event stays one line (issue 13 §4).
@Suite struct MailLogLineTests {
    @Test func aNewlineInAnAuthIdentityForgesNoLine() throws {
        let log = try MailLog(.memory)
        log.auth(
            remote: "192.0.2.1:1234", user: "x@example.com\n2026-01-01 00:00:00.000000 198.51.100.7:1 auth succeeded for y",
            succeeded: false)
        #expect(log.lines == [#"192.0.2.1:1234 auth failed for x@example.com\n2026-01-01 00:00:00.000000 198.51.100.7:1 auth succeeded for y"#])
    }

    @Test(arguments: [
        ("a\rb", #"a\rb"#), ("tab\there", #"tab\there"#), ("nul\u{00}cut", #"nul\x00cut"#),
        ("esc\u{1B}[31m", #"esc\x1b[31m"#), ("del\u{7F}", #"del\x7f"#), ("c1\u{85}\u{9B}", #"c1\u0085\u009b"#),
        ("ls\u{2028}ps\u{2029}", #"ls\u2028ps\u2029"#),
        // Quotes, backslashes and letters stay as written.
        (#"say "hi" \ ñandú"#, #"say "hi" \ ñandú"#),
    ])
    func controlsAreEscaped(input: String, logged: String) {
        #expect(MailLog.oneLine(input) == logged)
    }
}
