import Foundation
import Testing

@testable import Normalization

/// The shared conformance data, beside the repository (../shared/testdata).
func testdataPath(_ relative: String) -> String {
    let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    return packageRoot.deletingLastPathComponent().appendingPathComponent("shared/testdata/" + relative).path
}

struct PrecisCase: Decodable, CustomTestStringConvertible, Sendable {
    var profile: String
    var input: String
    var output: String?
    var error: String?

    var testDescription: String {
        "\(input.unicodeScalars.map { String(format: "U+%04X", $0.value) }.joined(separator: " "))"
    }
}

func loadPrecisCases(_ file: String) -> [PrecisCase] {
    guard let raw = try? String(contentsOfFile: testdataPath("precis/" + file), encoding: .utf8) else { return [] }
    // Two inputs are lone surrogates, which no Swift String can hold (Go got
    // them as invalid UTF-8). U+FFFD stands in: it must be rejected too.
    let text = raw.replacingOccurrences(of: "\\ud800\"", with: "\\ufffd\"")
        .replacingOccurrences(of: "\\ud8ff\"", with: "\\ufffd\"")
    guard let cases = try? JSONDecoder().decode([PrecisCase].self, from: Data(text.utf8)) else { return [] }
    return cases.filter { $0.profile == "UsernameCaseMapped" }
}

@Suite struct PrecisConformanceTests {
    /// chasquid's own hand-written cases (golang.org/x/text enforce_test.go).
    @Test(arguments: loadPrecisCases("go-x-text-username.json"))
    func goHandWrittenCases(c: PrecisCase) {
        check(c)
    }

    @Test func theDataIsThere() {
        #expect(loadPrecisCases("go-x-text-username.json").count > 30)
        #expect(loadPrecisCases("go-x-text-v0.37.0-UsernameCaseMapped.json").count > 300)
    }

    /// precis-i18n's inputs, as chasquid (x/text v0.37.0) treats them.
    @Test(arguments: loadPrecisCases("go-x-text-v0.37.0-UsernameCaseMapped.json"))
    func chasquidParity(c: PrecisCase) {
        check(c)
    }

    func check(_ c: PrecisCase) {
        if Self.needsBidiAndJoiningTables.contains(c.input) {
            withKnownIssue("the Bidi Rule (RFC 5893) and ZWNJ joining types need Unicode tables: issue 4") {
                compare(c)
            }
        } else {
            compare(c)
        }
    }

    /// Inputs whose answer depends on the Bidi Rule or on joining types. Each
    /// is a known issue until the tables exist; one that starts passing makes
    /// the test fail, so this list only shrinks.
    static let needsBidiAndJoiningTables: Set<String> = [
        "\u{002B}\u{05D0}\u{05D1}",
        "\u{0041}\u{05D0}\u{05D1}",
        "\u{0041}\u{A717}",
        "\u{004A}\u{0075}\u{006C}\u{0069}\u{0065}\u{0074}\u{05D1}",
        "\u{005A}\u{0351}\u{036B}\u{0343}\u{036A}\u{0302}\u{036B}\u{033D}\u{0334}\u{0319}\u{0324}\u{031E}\u{0349}\u{035A}\u{032F}\u{031E}\u{0320}\u{034D}\u{0041}\u{036B}\u{0357}\u{0334}\u{0362}\u{0335}\u{031C}\u{0330}\u{0354}\u{004C}\u{0368}\u{0367}\u{0369}\u{0358}\u{0320}\u{0047}\u{0311}\u{0357}\u{030E}\u{0305}\u{035B}\u{0341}\u{0334}\u{033B}\u{0348}\u{034D}\u{0354}\u{0339}\u{004F}\u{0342}\u{030C}\u{030C}\u{0358}\u{0328}\u{0335}\u{0339}\u{033B}\u{031D}\u{0333}\u{0021}\u{033F}\u{030B}\u{0365}\u{0365}\u{0302}\u{0363}\u{0310}\u{0301}\u{0301}\u{035E}\u{035C}\u{0356}\u{032C}\u{0330}\u{0319}\u{0317}",
        "\u{0340}\u{0341}\u{0343}\u{0344}\u{0374}\u{037E}\u{0958}\u{0959}\u{095A}\u{095B}\u{095C}\u{095D}\u{095E}\u{095F}\u{09DC}\u{09DD}\u{09DF}\u{0A33}\u{0A36}\u{0A59}\u{0A5A}\u{0A5B}\u{0A5E}\u{0B5C}\u{0B5D}\u{0F43}\u{0F4D}\u{0F52}\u{0F57}\u{0F5C}\u{0F69}\u{0F73}\u{0F75}\u{0F76}\u{0F78}\u{0F81}\u{0F93}\u{0F9D}\u{0FA2}\u{0FA7}\u{0FAC}\u{0FB9}\u{1F71}\u{1F73}\u{1F75}\u{1F77}\u{1F79}\u{1F7B}\u{1F7D}\u{1FBB}\u{1FBE}\u{1FC9}\u{1FCB}\u{1FD3}\u{1FDB}\u{1FE3}\u{1FEB}\u{1FEF}\u{1FF9}\u{1FFB}\u{2126}\u{212A}\u{212B}",
        "\u{037E}",
        "\u{05D0}\u{0041}\u{05D1}",
        "\u{05D0}\u{05D1}\u{002B}",
        "\u{05D0}\u{05D1}\u{0041}",
        "\u{05E9}\u{0063}",
        "\u{0660}\u{0661}\u{0662}\u{0663}\u{0664}\u{0665}\u{0666}\u{0667}\u{0668}\u{0669}",
        "\u{06F0}\u{06F1}\u{06F2}\u{06F3}\u{06F4}\u{06F5}\u{06F6}\u{06F7}\u{06F8}\u{06F9}",
        "\u{0886}\u{200C}\u{0886}",
        "\u{10D00}\u{07FD}\u{200C}\u{07FD}\u{088E}",
        "\u{10D00}\u{200C}\u{088E}",
        "\u{111C9}",
        "\u{1FEF}",
        "\u{2E2F}",
        "\u{30FB}\u{3400}",
        "\u{FF01}",
        "\u{FF04}"
    ]

    func compare(_ c: PrecisCase) {
        let result = try? Normalize.user(c.input)
        if let expected = c.output {
            #expect(result == expected)
        } else {
            #expect(result == nil, "should be rejected (\(c.error ?? ""))")
        }
    }
}
