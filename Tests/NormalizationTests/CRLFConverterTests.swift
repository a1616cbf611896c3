import Normalization
import TestSupport
import Testing

/// The converter searches contiguous bytes for LF and copies blocks; it
/// must give what the plain byte-by-byte rule gives, whatever the chunks.
@Suite struct CRLFConverterTests {
    /// The rule itself: an LF not preceded by CR gets one.
    static func reference(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var previous: UInt8 = 0
        for byte in bytes {
            if byte == 0x0A && previous != 0x0D { out.append(0x0D) }
            out.append(byte)
            previous = byte
        }
        return out
    }

    @Test(arguments: [1, 2, 3, 7, 64, 10_000])
    func anySplitGivesTheReference(chunkSize: Int) {
        var random = SeededRandom(seed: 0x5EED_0000 + UInt64(chunkSize))
        let alphabet: [UInt8] = [0x0A, 0x0D, 0x41, 0x2E]
        for round in 0..<200 {
            let input = (0..<Int.random(in: 0...300, using: &random)).map { _ in alphabet.randomElement(using: &random)! }
            var converter = CRLFConverter()
            var lazyConverter = CRLFConverter()
            var out: [UInt8] = []
            var lazyOut: [UInt8] = []
            var start = 0
            while start < input.count {
                let end = min(start + chunkSize, input.count)
                out += converter.convert(input[start..<end])
                // No contiguous storage: the fallback path.
                lazyOut += lazyConverter.convert(input[start..<end].lazy.map { $0 })
                start = end
            }
            #expect(out == Self.reference(input), "round \(round), chunks of \(chunkSize)")
            #expect(lazyOut == Self.reference(input), "round \(round), chunks of \(chunkSize), not contiguous")
        }
    }
}
