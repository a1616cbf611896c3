import Testing

@testable import SMTPCore

/// Bytes of an ASCII/UTF-8 string, for readable test inputs.
func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite struct LineFramerTests {
    private func line(_ s: String) -> LineFramer.Line { .line(bytes(s)) }

    @Test func crlfAndBareLFBothEndALine() {
        var framer = LineFramer()
        framer.append(bytes("HELO a.example\r\nNOOP\nQUIT\r\n"))
        #expect(framer.next() == line("HELO a.example"))
        #expect(framer.next() == line("NOOP"))
        #expect(framer.next() == line("QUIT"))
        #expect(framer.next() == nil)
        #expect(framer.pendingByteCount == 0)
    }

    @Test func emptyLines() {
        var framer = LineFramer()
        framer.append(bytes("\r\n\n"))
        #expect(framer.next() == line(""))
        #expect(framer.next() == line(""))
        #expect(framer.next() == nil)
    }

    @Test func onlyTheCRBeforeTheLFIsStripped() {
        var framer = LineFramer()
        framer.append(bytes("a\rb\r\r\n"))
        #expect(framer.next() == line("a\rb\r"))
    }

    @Test func partialLinesAcrossAppends() {
        var framer = LineFramer()
        framer.append(bytes("HEL"))
        #expect(framer.next() == nil)
        #expect(framer.pendingByteCount == 3)
        framer.append(bytes("O a.example\r"))
        #expect(framer.next() == nil)
        framer.append(bytes("\nMAIL FR"))
        #expect(framer.next() == line("HELO a.example"))
        #expect(framer.next() == nil)
        framer.append(bytes("OM:<a@b.example>\r\n"))
        #expect(framer.next() == line("MAIL FROM:<a@b.example>"))
        #expect(framer.next() == nil)
    }

    @Test func byteByByteFeeding() {
        var framer = LineFramer()
        var lines: [LineFramer.Line] = []
        for b in bytes("EHLO x\r\nRSET\nNOOP\r\n") {
            framer.append([b])
            while let l = framer.next() { lines.append(l) }
        }
        #expect(lines == [line("EHLO x"), line("RSET"), line("NOOP")])
    }

    @Test(arguments: ["\r\n", "\n"])
    func exactly1000BytesIsAccepted(terminator: String) {
        var framer = LineFramer()
        let text = String(repeating: "a", count: 1000)
        framer.append(bytes(text + terminator + "NOOP\r\n"))
        #expect(framer.next() == line(text))
        #expect(framer.next() == line("NOOP"))
    }

    @Test(arguments: ["\r\n", "\n"])
    func over1000BytesIsTooLong(terminator: String) {
        var framer = LineFramer()
        framer.append(bytes(String(repeating: "a", count: 1001) + terminator))
        #expect(framer.next() == .tooLong)
    }

    @Test func defaultLimitIs1000() {
        #expect(LineFramer().maxLength == 1000)
        #expect(SMTPDefaults.maxCommandLineLength == 1000)
    }

    @Test func tooLongIsDetectedBeforeANewlineArrives() {
        var framer = LineFramer()
        framer.append(bytes(String(repeating: "a", count: 5000)))
        #expect(framer.next() == .tooLong)
    }

    @Test func tooLongWithoutNewlineAtTheSmallestSize() {
        // 1000 bytes plus a CR may still become a valid line; two more bytes cannot.
        var framer = LineFramer()
        framer.append(bytes(String(repeating: "a", count: 1000) + "\r"))
        #expect(framer.next() == nil)
        framer.append(bytes("b"))
        #expect(framer.next() == .tooLong)
    }

    @Test func customLimit() {
        var framer = LineFramer(maxLength: 4)
        framer.append(bytes("abcd\r\nabcde\r\n"))
        #expect(framer.next() == line("abcd"))
        #expect(framer.next() == .tooLong)
    }

    @Test func pendingByteCountAndTakeRemaining() {
        var framer = LineFramer()
        framer.append(bytes("STARTTLS\r\nEHLO evil\r\n"))
        #expect(framer.next() == line("STARTTLS"))
        // The client pipelined past STARTTLS: the rest is visible.
        #expect(framer.pendingByteCount == bytes("EHLO evil\r\n").count)
        #expect(framer.takeRemaining() == bytes("EHLO evil\r\n"))
        #expect(framer.pendingByteCount == 0)
        #expect(framer.next() == nil)
        #expect(framer.takeRemaining() == [])
    }

    @Test func takeRemainingGivesAPartialLine() {
        var framer = LineFramer()
        framer.append(bytes("DATA\r\nSubject: hi\r\n\r\nbo"))
        #expect(framer.next() == line("DATA"))
        #expect(framer.takeRemaining() == bytes("Subject: hi\r\n\r\nbo"))
    }

    @Test func discardPending() {
        var framer = LineFramer()
        framer.append(bytes("a\r\nb\r\nc"))
        #expect(framer.next() == line("a"))
        framer.discardPending()
        #expect(framer.pendingByteCount == 0)
        #expect(framer.next() == nil)
        framer.append(bytes("d\r\n"))
        #expect(framer.next() == line("d"))
    }

    @Test func nonASCIIBytesPassThrough() {
        var framer = LineFramer()
        framer.append(bytes("RCPT TO:<ñandú@pingüino.example>\r\n") + [0xFF, 0x0A])
        #expect(framer.next() == line("RCPT TO:<ñandú@pingüino.example>"))
        #expect(framer.next() == .line([0xFF]))
    }

    /// Many pipelined commands in one read are framed in linear time: the
    /// lines are taken by moving a read index, so the pending count falls
    /// line by line and the remainder is exact (issue 13 §2).
    @Test func manyPipelinedLinesInOneAppend() {
        var framer = LineFramer()
        let count = 20_000
        var input: [UInt8] = []
        for i in 0..<count { input += Array("NOOP \(i)\r\n".utf8) }
        input += Array("RSET".utf8)
        framer.append(input)
        var pending = framer.pendingByteCount
        for i in 0..<count {
            #expect(framer.next() == .line(Array("NOOP \(i)".utf8)))
            #expect(framer.pendingByteCount < pending)
            pending = framer.pendingByteCount
        }
        #expect(framer.next() == nil)
        #expect(framer.pendingByteCount == 4)
        framer.append(Array("\r\nQUIT\r\n".utf8))
        #expect(framer.next() == .line(Array("RSET".utf8)))
        #expect(framer.takeRemaining() == Array("QUIT\r\n".utf8))
        #expect(framer.pendingByteCount == 0)
    }

    /// The read index and the compaction across appends: a CR at the end
    /// of one read and its LF in the next, right after the front was
    /// dropped, still make one line without the CR.
    @Test func aLineEndSplitAcrossAppendsAfterCompaction() {
        var framer = LineFramer()
        framer.append(Array("A\r\nB\r\nCC".utf8))
        #expect(framer.next() == .line(Array("A".utf8)))
        #expect(framer.next() == .line(Array("B".utf8)))
        #expect(framer.next() == nil)
        framer.append(Array("C\r".utf8))  // compacts: 6 consumed, 2 pending
        #expect(framer.next() == nil)
        framer.append(Array("\nD\n".utf8))
        #expect(framer.next() == .line(Array("CCC".utf8)))
        #expect(framer.next() == .line(Array("D".utf8)))
        #expect(framer.pendingByteCount == 0)
    }
}
