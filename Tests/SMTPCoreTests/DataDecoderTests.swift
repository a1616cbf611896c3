import TestSupport
import Testing

@testable import SMTPCore

/// What a whole DATA block decoded to.
struct DecodeResult: Equatable, CustomStringConvertible {
    enum Ending: Equatable {
        /// No terminal event yet: more input needed.
        case none
        case end(overLimit: Bool)
        case bareLineEnding
    }

    /// All `.data` events, concatenated.
    var data: [UInt8]
    var ending: Ending
    /// The `remaining` of `.end`, plus any input never fed because the end came first.
    var remaining: [UInt8]
    var rawSize: Int

    var description: String {
        "data=\(String(decoding: data, as: UTF8.self).debugDescription) ending=\(ending) "
            + "remaining=\(String(decoding: remaining, as: UTF8.self).debugDescription) rawSize=\(rawSize)"
    }
}

/// Feeds `chunks` in order until a terminal event, and checks the event
/// stream's shape on the way: no empty `.data`, nothing after the terminal event.
func decode(_ chunks: [[UInt8]], maxSize: Int = 1 << 20, sourceLocation: SourceLocation = #_sourceLocation)
    -> DecodeResult
{
    var decoder = DataDecoder(maxSize: maxSize)
    var result = DecodeResult(data: [], ending: .none, remaining: [], rawSize: 0)
    var index = 0
    while index < chunks.count {
        let events = decoder.feed(chunks[index])
        index += 1
        for (position, event) in events.enumerated() {
            switch event {
            case .data(let d):
                #expect(!d.isEmpty, "empty .data event", sourceLocation: sourceLocation)
                #expect(position == 0, ".data after another event", sourceLocation: sourceLocation)
                result.data += d
            case .end(let overLimit, let remaining):
                #expect(position == events.count - 1, "events after .end", sourceLocation: sourceLocation)
                result.ending = .end(overLimit: overLimit)
                result.remaining = remaining + chunks[index...].flatMap { $0 }
                result.rawSize = decoder.rawSize
                return result
            case .bareLineEnding:
                #expect(position == events.count - 1, "events after .bareLineEnding", sourceLocation: sourceLocation)
                result.ending = .bareLineEnding
                result.rawSize = decoder.rawSize
                return result
            }
        }
    }
    result.rawSize = decoder.rawSize
    return result
}

func decode(_ input: String, maxSize: Int = 1 << 20, sourceLocation: SourceLocation = #_sourceLocation)
    -> DecodeResult
{
    decode([bytes(input)], maxSize: maxSize, sourceLocation: sourceLocation)
}

/// Splits `input` into chunks of `size` bytes.
func chunked(_ input: [UInt8], size: Int) -> [[UInt8]] {
    stride(from: 0, to: input.count, by: size).map { Array(input[$0..<min($0 + size, input.count)]) }
}

@Suite struct DataDecoderTests {
    @Test func simpleMessageCRLFBecomesLF() {
        let r = decode("Subject: hi\r\n\r\nbody line\r\n.\r\n")
        #expect(r.data == bytes("Subject: hi\n\nbody line\n"))
        #expect(r.ending == .end(overLimit: false))
        #expect(r.remaining == [])
    }

    @Test func dotUnstuffingDropsTheFirstDotOfEveryLine() {
        let r = decode("..x\r\n.y\r\n...\r\na.b\r\n..\r\n. \r\n.\r\n")
        #expect(r.data == bytes(".x\ny\n..\na.b\n.\n \n"))
        #expect(r.ending == .end(overLimit: false))
    }

    @Test func dotOnFirstLineIsStuffedToo() {
        let r = decode(".Subject: x\r\n\r\n.\r\n")
        #expect(r.data == bytes("Subject: x\n\n"))
    }

    @Test func loneDotAsFirstLineIsAnEmptyMessage() {
        let r = decode(".\r\n")
        #expect(r.data == [])
        #expect(r.ending == .end(overLimit: false))
        #expect(r.rawSize == 3)
    }

    @Test func emptyLineThenDot() {
        let r = decode("\r\n.\r\n")
        #expect(r.data == bytes("\n"))
        #expect(r.ending == .end(overLimit: false))
    }

    @Test func dotFollowedByTextIsNotTheEnd() {
        let r = decode("a\r\n.b\r\n.\r\n")
        #expect(r.data == bytes("a\nb\n"))
        #expect(r.ending == .end(overLimit: false))
    }

    @Test func noEndYet() {
        let r = decode("Subject: x\r\n\r\nbody\r\n")
        #expect(r.ending == .none)
        #expect(r.data == bytes("Subject: x\n\nbody\n"))
    }

    @Test func partialTerminatorIsNotTheEnd() {
        #expect(decode("a\r\n.\r").ending == .none)
        #expect(decode("a\r\n.").ending == .none)
    }

    @Test func bytesAfterTheTerminatorAreReturned() {
        let r = decode("a\r\n.\r\nMAIL FROM:<x@y.example>\r\nRCPT")
        #expect(r.data == bytes("a\n"))
        #expect(r.ending == .end(overLimit: false))
        #expect(r.remaining == bytes("MAIL FROM:<x@y.example>\r\nRCPT"))
        // Pipelined bytes are not part of the message's size.
        #expect(r.rawSize == bytes("a\r\n.\r\n").count)
    }

    @Test func remainingWhenTheTerminatorEndsAChunk() {
        var decoder = DataDecoder(maxSize: 100)
        #expect(decoder.feed(bytes("a\r\n.\r")) == [.data(bytes("a\n"))])
        #expect(decoder.feed(bytes("\nQUIT\r\n")) == [.end(overLimit: false, remaining: bytes("QUIT\r\n"))])
    }

    @Test func eventsForOneFeed() {
        var decoder = DataDecoder(maxSize: 100)
        #expect(decoder.feed(bytes("ab\r\n.\r\nX")) == [.data(bytes("ab\n")), .end(overLimit: false, remaining: bytes("X"))])
    }

    @Test func emptyFeedGivesNoEvents() {
        var decoder = DataDecoder(maxSize: 100)
        #expect(decoder.feed([]) == [])
        #expect(decoder.feed(bytes("\r")) == [])
    }

    // MARK: SMTP smuggling guard [SEC]

    @Test(arguments: [
        "a\nb\r\n.\r\n",  // bare LF mid-message
        "\n.\r\n",  // bare LF first
        "a\rb\r\n.\r\n",  // CR followed by a non-LF
        "a\r\r\n.\r\n",  // CR CR LF
        "a\r\n.\n",  // lone dot ended by a bare LF
        "a\n.\n",  // the classic smuggling terminator
        "a\r\n.\rMAIL FROM:<x@y>\r\n",  // lone dot ended by a bare CR
        "a\r\n\n.\r\n",  // LF after CRLF
        "\r.\r\n",  // bare CR first
    ])
    func bareLineEndingIsRefused(input: String) {
        let r = decode(input)
        #expect(r.ending == .bareLineEnding)
    }

    @Test func bareLineEndingEmitsNothingPastIt() {
        let r = decode("ok\r\nbad\nnever\r\n.\r\n")
        #expect(r.ending == .bareLineEnding)
        #expect(!String(decoding: r.data, as: UTF8.self).contains("never"))
    }

    @Test func bareCRAcrossChunks() {
        let r = decode([bytes("a\r"), bytes("b\r\n.\r\n")])
        #expect(r.ending == .bareLineEnding)
    }

    // MARK: Size

    @Test func sizeCountsRawBytesIncludingTheFinalDotCRLF() {
        let message = "abc\r\n.\r\n"  // 8 raw bytes.
        let exact = decode(message, maxSize: 8)
        #expect(exact.ending == .end(overLimit: false))
        #expect(exact.data == bytes("abc\n"))
        #expect(exact.rawSize == 8)
        let over = decode(message, maxSize: 7)
        #expect(over.ending == .end(overLimit: true))
        #expect(over.rawSize == 8)
    }

    @Test func stuffedDotsCountAsRawBytes() {
        // "..\r\n.\r\n" decodes to ".\n" but is 7 raw bytes.
        #expect(decode("..\r\n.\r\n", maxSize: 7).ending == .end(overLimit: false))
        #expect(decode("..\r\n.\r\n", maxSize: 6).ending == .end(overLimit: true))
    }

    @Test(arguments: [1, 7, 100, 4096])
    func exactlyMaxSizeIsAcceptedOneMoreIsNot(bodyLines: Int) {
        let message = bytes(
            "Subject: size\r\n\r\n" + String(repeating: "0123456789abcdef\r\n", count: bodyLines) + ".\r\n")
        let expected = bytes(
            "Subject: size\n\n" + String(repeating: "0123456789abcdef\n", count: bodyLines))
        let ok = decode([message], maxSize: message.count)
        #expect(ok.ending == .end(overLimit: false))
        #expect(ok.data == expected)
        #expect(ok.rawSize == message.count)

        let over = decode([message], maxSize: message.count - 1)
        #expect(over.ending == .end(overLimit: true))
        #expect(over.rawSize == message.count)
    }

    @Test func overLimitEmitsNothingPastTheLimitButStillFindsTheEnd() {
        let body = String(repeating: "x", count: 5000) + "\r\n" + String(repeating: "y", count: 5000) + "\r\n"
        let input = bytes(body + ".\r\nQUIT\r\n")
        let full = decode([input])
        for maxSize in [0, 1, 10, 100, 4999, 5001, 5002, 9000] {
            for chunkSize in [1, 3, 64, input.count] {
                let r = decode(chunked(input, size: chunkSize), maxSize: maxSize)
                #expect(r.ending == .end(overLimit: true), "maxSize \(maxSize)")
                #expect(r.data.count <= maxSize, "maxSize \(maxSize): \(r.data.count) bytes emitted")
                #expect(full.data.starts(with: r.data), "maxSize \(maxSize): not a prefix")
                #expect(r.remaining == bytes("QUIT\r\n"), "maxSize \(maxSize)")
                #expect(r.rawSize == input.count - 6)
            }
        }
    }

    @Test func isOverLimitTracksRawSize() {
        var decoder = DataDecoder(maxSize: 4)
        _ = decoder.feed(bytes("abcd"))
        #expect(decoder.rawSize == 4)
        #expect(!decoder.isOverLimit)
        _ = decoder.feed(bytes("e"))
        #expect(decoder.isOverLimit)
    }

    @Test func aVeryLongLineIsFine() {
        let line = String(repeating: "z", count: 200 * 1024)
        let input = bytes("Subject: long\r\n\r\n" + line + "\r\n.\r\n")
        for chunks in [[input], chunked(input, size: 1500)] {
            let r = decode(chunks)
            #expect(r.ending == .end(overLimit: false))
            #expect(r.data == bytes("Subject: long\n\n" + line + "\n"))
        }
    }

    // MARK: Chunking does not matter

    static let chunkingInputs: [String] = [
        "Subject: x\r\n\r\nbody\r\n.\r\n",
        ".\r\n",
        "\r\n.\r\n",
        "..x\r\n.y\r\n...\r\n..\r\n.\r\nQUIT\r\n",
        "a\r\n.b\r\n.\r\nNOOP\r\nRSET\r\n",
        "a\nb\r\n.\r\n",
        "a\rb\r\n.\r\n",
        "a\r\n.\rX",
        "a\r\n.\n",
        "línea ñ\r\n\r\n.\r\n",
        "no end\r\n",
        "x\r\n..\r\n.\r\n.\r\n",
        String(repeating: "0123456789\r\n", count: 300) + ".\r\nQUIT\r\n",
    ]

    @Test(arguments: chunkingInputs)
    func byteByByteEqualsAllAtOnce(input: String) {
        let all = bytes(input)
        for maxSize in [1 << 20, 5, 100] {
            let whole = decode([all], maxSize: maxSize)
            for size in [1, 2, 3, 5, 7, 64] {
                #expect(decode(chunked(all, size: size), maxSize: maxSize) == whole, "chunks of \(size), max \(maxSize)")
            }
        }
    }

    @Test(arguments: chunkingInputs)
    func randomChunkingEqualsAllAtOnce(input: String) {
        let all = bytes(input)
        let whole = decode([all])
        var rng = SplitMix64(seed: UInt64(all.count))
        for _ in 0..<20 {
            var chunks: [[UInt8]] = []
            var position = 0
            while position < all.count {
                let size = Int(rng.next() % 9)  // Empty chunks included.
                chunks.append(Array(all[position..<min(position + size, all.count)]))
                position += size
            }
            #expect(decode(chunks) == whole)
        }
    }
}

typealias SplitMix64 = SeededRandom
