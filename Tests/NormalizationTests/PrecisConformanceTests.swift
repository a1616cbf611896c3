import Foundation
import Testing

@testable import Normalization

/// The conformance data kept in the repository (Tests/Fixtures).
func testdataPath(_ relative: String) -> String {
    let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    return tests.appendingPathComponent("Fixtures/" + relative).path
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
        compare(c)
    }

    func compare(_ c: PrecisCase) {
        let result = try? Normalize.user(c.input)
        if let expected = c.output {
            #expect(result == expected)
        } else {
            #expect(result == nil, "should be rejected (\(c.error ?? ""))")
        }
    }
}
