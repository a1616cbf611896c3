import Testing

@testable import SMTPCore

@Suite struct HeaderCheckTests {
    /// The trim is by Character, as it always was: a space fused with a
    /// combining mark is not a space.
    @Test func messageIDsAreTrimmedOfSpacesAndTabsOnly() {
        func old(_ s: String) -> String {
            String(s.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
        }
        for sample in [
            "", " ", "\t \t", " <a@b> ", "<a@b>", "\t<x y>\t ", " \u{301}<a@b> \u{301}", "<a@b>\r", " ü ", "\n<a>\n",
        ] {
            #expect(HeaderCheck.trimmed(sample) == old(sample), "\(sample.debugDescription)")
        }
    }

    private func check(_ message: String) throws(HeaderCheck.Problem) -> HeaderCheck {
        try HeaderCheck.check(bytes(message))
    }

    @Test func headersAndBody() throws {
        let result = try check("From: a@b.example\nSubject: hi\n\nbody text\nmore: body\n")
        #expect(result.receivedCount == 0)
        #expect(result.messageID == nil)
    }

    @Test func headersOnlyWithoutBlankLine() throws {
        _ = try check("Subject: only headers\n")
        _ = try check("Subject: only headers")
        _ = try check("Subject: a\nFrom: b\n")
    }

    @Test func startingWithABlankLineMeansNoHeaders() throws {
        let result = try check("\nbody without headers, and no colon\n")
        #expect(result.receivedCount == 0)
        _ = try check("\n")
    }

    @Test func crlfLinesAreReadToo() throws {
        let result = try check("Received: a\r\nSubject: x\r\n\r\nbody\r\n")
        #expect(result.receivedCount == 1)
        #expect(throws: HeaderCheck.Problem.lineWithoutColon(line: 2)) { try check("Subject: x\r\nno colon\r\n") }
    }

    @Test func emptyMessage() {
        #expect(throws: HeaderCheck.Problem.empty) { try check("") }
    }

    @Test(arguments: [" Subject: x\n\nbody\n", "\tSubject: x\n", " \n"])
    func continuationFirstLine(message: String) {
        #expect(throws: HeaderCheck.Problem.continuationFirst) { try check(message) }
    }

    @Test func lineWithoutColonGivesItsLineNumber() {
        #expect(throws: HeaderCheck.Problem.lineWithoutColon(line: 1)) { try check("just some text\n") }
        #expect(throws: HeaderCheck.Problem.lineWithoutColon(line: 1)) { try check("Hello world") }
        #expect(throws: HeaderCheck.Problem.lineWithoutColon(line: 3)) {
            try check("Subject: x\nFrom: y\nbody text without a blank line\n")
        }
        // Continuation lines count as lines.
        #expect(throws: HeaderCheck.Problem.lineWithoutColon(line: 4)) {
            try check("Subject: x\n folded\n\tmore\nno colon here\n\nbody\n")
        }
    }

    @Test func continuationLinesAreFine() throws {
        _ = try check("Subject: a\n b\n\tc\nFrom: x\n\nbody\n")
    }

    @Test func bodyIsNotChecked() throws {
        let result = try check("Subject: x\n\nno colon\n more\nReceived: not a header\n")
        #expect(result.receivedCount == 0)
    }

    @Test func emptyHeaderNameIsTolerated() throws {
        // Go's net/mail skips an empty key.
        _ = try check(": value\nSubject: x\n\n")
    }

    @Test func receivedCountingIsCaseInsensitive() throws {
        let result = try check(
            "Received: from a\n\tby b\nreceived: from c\nRECEIVED: from d\nReCeIvEd:x\n"
                + "X-Received: no\nReceived-SPF: no\nSubject: s\n\nReceived: body\n")
        #expect(result.receivedCount == 4)
    }

    @Test func manyReceived() throws {
        let headers = String(repeating: "Received: from x by y\n", count: 51)
        #expect(try check(headers + "\nbody\n").receivedCount == 51)
        #expect(SMTPDefaults.maxReceivedHeaders == 50)
    }

    @Test func messageID() throws {
        #expect(try check("Message-ID: <abc@d.example>\n\nbody\n").messageID == "<abc@d.example>")
        #expect(try check("message-id:<abc@d.example>  \n").messageID == "<abc@d.example>")
        #expect(try check("Subject: x\nMessage-Id: \t<x@y>\n").messageID == "<x@y>")
    }

    @Test func foldedMessageID() throws {
        #expect(try check("Message-ID:\n <abc@d.example>\nSubject: x\n\n").messageID == "<abc@d.example>")
        #expect(try check("Message-ID:\n\t<abc@d.example>\n").messageID == "<abc@d.example>")
    }

    @Test func firstMessageIDWins() throws {
        #expect(try check("Message-ID: <one@x>\nMessage-ID: <two@x>\n").messageID == "<one@x>")
    }

    @Test func messageIDInBodyIsIgnored() throws {
        #expect(try check("Subject: x\n\nMessage-ID: <body@x>\n").messageID == nil)
    }

    @Test func otherHeaderContinuationDoesNotLeakIntoMessageID() throws {
        let result = try check("Message-ID: <id@x>\nSubject: a\n b\n")
        #expect(result.messageID == "<id@x>")
    }
}
