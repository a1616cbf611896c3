import Testing

@testable import SMTPCore

/// The header block found in DATA pieces of any size, each byte looked at
/// once (issue 13 §2: a rescan per read made small pieces O(n²)).
@Suite struct HeaderCollectorTests {
    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    @Test func endsAtTheBlankLineWhereverThePiecesSplit() {
        let message = Self.bytes("A: b\nC: d\n\nbody\n\nmore\n")
        for size in 1...message.count {
            var collector = HeaderCollector(limit: 1 << 20)
            for start in stride(from: 0, to: message.count, by: size) {
                collector.feed(Array(message[start..<min(start + size, message.count)]))
            }
            #expect(collector.isComplete)
            #expect(collector.bytes == Self.bytes("A: b\nC: d\n"), "pieces of \(size)")
        }
    }

    @Test func anEmptyHeaderAndAHeaderWithoutBody() {
        var empty = HeaderCollector(limit: 100)
        empty.feed(Self.bytes("\nbody\n"))
        #expect(empty.isComplete && empty.bytes.isEmpty)
        var open = HeaderCollector(limit: 100)
        open.feed(Self.bytes("A: b\n"))
        #expect(!open.isComplete && open.bytes == Self.bytes("A: b\n"))
    }

    @Test func stopsKeepingAtTheLimit() {
        var collector = HeaderCollector(limit: 10)
        collector.feed(Self.bytes("X: 0123456789\n"))
        #expect(collector.isComplete)
        collector.feed(Self.bytes("Y: more\n\n"))
        #expect(collector.bytes == Self.bytes("X: 0123456789\n"))
    }

    /// 900 KiB of header in 64-byte pieces: the work is the bytes, not
    /// the bytes times the pieces.
    @Test func smallPiecesCostLinearWork() {
        let line = Self.bytes("X-Filler: " + String(repeating: "a", count: 53) + "\n")  // 64 bytes
        var collector = HeaderCollector(limit: 1 << 20)
        let pieces = 900 * 1024 / 64
        for _ in 0..<pieces { collector.feed(line) }
        collector.feed(Self.bytes("\nbody\n"))
        #expect(collector.isComplete)
        #expect(collector.bytes.count == pieces * 64)
        #expect(collector.bytesExamined <= pieces * 64 + 1)
    }
}
