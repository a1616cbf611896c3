import Foundation
import Testing

@testable import IDNA

/// The conformance data kept in the repository (Tests/Fixtures).
func testdataPath(_ relative: String) -> String {
    let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    return tests.appendingPathComponent("Fixtures/" + relative).path
}

/// One line of IdnaTestV2.txt.
struct IdnaCase: Sendable, CustomTestStringConvertible {
    var line: Int
    var source: String
    var toUnicode: String
    var toUnicodeErrors: Bool
    var toASCII: String
    var toASCIIErrors: Bool

    var testDescription: String { "line \(line): \(source.debugDescription)" }
}

/// Unescapes \uXXXX and \x{XXXX} as the file writes them.
func unescape(_ s: Substring) -> String {
    var out = String.UnicodeScalarView()
    var scalars = Array(s.unicodeScalars)[...]
    while let c = scalars.first {
        scalars = scalars.dropFirst()
        if c == "\\", scalars.first == "u", scalars.count >= 5,
            let v = UInt32(String(String.UnicodeScalarView(scalars.dropFirst().prefix(4))), radix: 16),
            let u = Unicode.Scalar(v)
        {
            out.append(u)
            scalars = scalars.dropFirst(5)
        } else if c == "\\", scalars.first == "x", scalars.dropFirst().first == "{",
            let close = scalars.firstIndex(of: "}"),
            let v = UInt32(String(String.UnicodeScalarView(scalars[(scalars.startIndex + 2)..<close])), radix: 16),
            let u = Unicode.Scalar(v)
        {
            out.append(u)
            scalars = scalars[(close + 1)...]
        } else {
            out.append(c)
        }
    }
    return String(out)
}

func loadIdnaCases() -> [IdnaCase] {
    guard let text = try? String(contentsOfFile: testdataPath("idna/15.0.0/IdnaTestV2.txt"), encoding: .utf8) else {
        return []
    }
    var cases: [IdnaCase] = []
    for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        let fields = line.split(separator: ";", omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard fields.count >= 7 else { continue }
        let source = unescape(Substring(fields[0]))
        let toUnicode = fields[1].isEmpty ? source : unescape(Substring(fields[1]))
        let unicodeStatus = fields[2]
        let toASCII = fields[3].isEmpty ? toUnicode : unescape(Substring(fields[3]))
        let asciiStatus = fields[4].isEmpty ? unicodeStatus : fields[4]
        func hasErrors(_ status: String) -> Bool { !status.isEmpty && status != "[]" }
        cases.append(
            IdnaCase(
                line: number + 1, source: source, toUnicode: toUnicode, toUnicodeErrors: hasErrors(unicodeStatus),
                toASCII: toASCII, toASCIIErrors: hasErrors(asciiStatus)))
    }
    return cases
}

@Suite struct IdnaConformanceTests {
    static let cases = loadIdnaCases()

    @Test func theDataIsThere() {
        #expect(Self.cases.count > 6000)
    }

    @Test func toUnicode() {
        var failures: [String] = []
        for c in Self.cases {
            let result = try? UTS46.toUnicode(c.source)
            if c.toUnicodeErrors {
                if result != nil { failures.append("\(c.testDescription): expected an error, got \(result!.debugDescription)") }
            } else if result != c.toUnicode {
                failures.append("\(c.testDescription): expected \(c.toUnicode.debugDescription), got \(String(describing: result))")
            }
        }
        #expect(failures.isEmpty, "\(failures.count) of \(Self.cases.count) fail; first: \(failures.prefix(15).joined(separator: "\n"))")
    }

    @Test func toASCIINontransitional() {
        var failures: [String] = []
        for c in Self.cases {
            let result = try? UTS46.toASCII(c.source)
            if c.toASCIIErrors {
                if result != nil { failures.append("\(c.testDescription): expected an error, got \(result!.debugDescription)") }
            } else if result != c.toASCII {
                failures.append("\(c.testDescription): expected \(c.toASCII.debugDescription), got \(String(describing: result))")
            }
        }
        #expect(failures.isEmpty, "\(failures.count) of \(Self.cases.count) fail; first: \(failures.prefix(15).joined(separator: "\n"))")
    }
}
