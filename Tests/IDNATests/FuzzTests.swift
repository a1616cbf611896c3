import TestSupport
import Testing

@testable import IDNA

/// Random and malformed input: every function returns a value or an error,
/// never crashes or hangs. A fixed seed keeps runs repeatable.
@Suite struct FuzzTests {
    typealias SplitMix = SeededRandom

    static func randomString(_ rng: inout SplitMix) -> String {
        let pools: [ClosedRange<UInt32>] = [
            0x20...0x7E, 0x00...0x1F, 0x80...0x2FF, 0x300...0x36F, 0x590...0x6FF, 0x200B...0x200D, 0x3000...0x30FF,
            0xFF00...0xFFEF, 0x1F300...0x1F6FF, 0xE0000...0xE007F,
        ]
        var s = String.UnicodeScalarView()
        for _ in 0..<Int.random(in: 0...40, using: &rng) {
            if Int.random(in: 0...5, using: &rng) == 0 {
                s.append(contentsOf: ["x", "n", "-", "-", "."].randomElement(using: &rng)!.unicodeScalars)
                continue
            }
            let pool = pools.randomElement(using: &rng)!
            if let scalar = Unicode.Scalar(UInt32.random(in: pool, using: &rng)) { s.append(scalar) }
        }
        return String(s)
    }

    @Test func uts46NeverCrashes() {
        var rng = SplitMix(seed: 46)
        for _ in 0..<5_000 {
            let input = Self.randomString(&rng)
            _ = try? UTS46.toASCII(input)
            _ = try? UTS46.toUnicode(input)
            _ = try? UTS46.toUnicode("xn--" + input)
        }
    }

    @Test func punycodeNeverCrashes() {
        var rng = SplitMix(seed: 3492)
        for _ in 0..<5_000 {
            let input = Self.randomString(&rng)
            if let decoded = try? Punycode.decode(input) { _ = try? Punycode.encode(decoded) }
            if let encoded = try? Punycode.encode(input) {
                #expect((try? Punycode.decode(encoded)) == input, "round trip of \(input.debugDescription)")
            }
        }
        // Overflow-shaped inputs.
        for input in ["99999999999999999999", "zzzzzzzzzzzzzzzzzzzzzzzz", "-", "a-", "-9", String(repeating: "9", count: 5000)] {
            _ = try? Punycode.decode(input)
        }
    }
}
