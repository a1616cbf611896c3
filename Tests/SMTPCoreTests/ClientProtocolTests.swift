import Testing

@testable import SMTPCore

@Suite struct ReplyParserTests {
    @Test func singleAndMultiLineReplies() throws {
        var parser = ReplyParser()
        #expect(try parser.feed("220 mx.example.com ESMTP") == Reply(220, "mx.example.com ESMTP"))
        #expect(try parser.feed("250-mx.example.com") == nil)
        #expect(try parser.feed("250-PIPELINING") == nil)
        #expect(try parser.feed("250 STARTTLS") == Reply(250, lines: ["mx.example.com", "PIPELINING", "STARTTLS"]))
        // Bare codes, with nothing after them, are complete replies.
        #expect(try parser.feed("354") == Reply(354, ""))
        #expect(try parser.feed("250-") == nil)
        #expect(try parser.feed("250 ") == Reply(250, lines: ["", ""]))
    }

    @Test(arguments: ["", "25", "abc hello", "2500 x", "250_x", "099 x", "600 x", "-250 x"])
    func malformedLinesThrow(_ line: String) {
        var parser = ReplyParser()
        #expect(throws: ReplyParser.Malformed.self) { try parser.feed(line) }
    }

    @Test func codesMustAgreeWithinAReply() throws {
        var parser = ReplyParser()
        _ = try parser.feed("250-first")
        #expect(throws: ReplyParser.Malformed.self) { try parser.feed("251 second") }
    }
}

@Suite struct ServerCapabilitiesTests {
    @Test func keywordsAreCaseInsensitiveWithParameters() {
        let capabilities = ServerCapabilities(
            ehloReply: Reply(250, lines: ["mx.example.com greets you", "starttls", "SIZE 1048576", "8BITMIME", "AUTH PLAIN LOGIN"]))
        #expect(capabilities.has("STARTTLS"))
        #expect(capabilities.has("8bitmime"))
        #expect(!capabilities.has("SMTPUTF8"))
        // The greeting line is not a keyword.
        #expect(!capabilities.has("MX.EXAMPLE.COM"))
        #expect(capabilities.sizeLimit == 1_048_576)
        #expect(capabilities.keywords["AUTH"] == ["PLAIN", "LOGIN"])
        #expect(ServerCapabilities(ehloReply: Reply(250, lines: ["x", "SIZE 0"])).sizeLimit == nil)
        #expect(!ServerCapabilities.none.has("STARTTLS"))
    }
}

@Suite struct DataBlockEncodingTests {
    @Test func dotsAreStuffedAndLinesEndInCRLF() {
        let message = Array("Subject: x\n\n.hidden\n..two\nmid.dot\n.\nend".utf8)
        #expect(
            encodeDataBlock(message)
                == Array("Subject: x\r\n\r\n..hidden\r\n...two\r\nmid.dot\r\n..\r\nend\r\n.\r\n".utf8))
    }

    @Test func existingCRLFStaysOneAndEmptyMessageIsJustTheDot() {
        #expect(encodeDataBlock(Array("A: b\r\n\tc\n".utf8)) == Array("A: b\r\n\tc\r\n.\r\n".utf8))
        #expect(encodeDataBlock([]) == Array(".\r\n".utf8))
        #expect(encodeDataBlock(Array(".".utf8)) == Array("..\r\n.\r\n".utf8))
    }

    /// Issue 13 §5: a bare CR never reaches the wire, so a receiver that
    /// ends lines at CR cannot find the end of the data in `\r.\r\n`.
    @Test func aBareCREndsItsLineAndTheDotAfterItIsStuffed() {
        #expect(
            encodeDataBlock(Array("X: a\r.\r\nY: b\rc\n\r\r\n.".utf8))
                == Array("X: a\r\n..\r\nY: b\r\nc\r\n\r\n\r\n..\r\n.\r\n".utf8))
        #expect(encodeDataBlock(Array("end\r".utf8)) == Array("end\r\n.\r\n".utf8))
        let wire = encodeDataBlock(Array("a\rb\r\rc\n\r.\r".utf8))
        for (index, byte) in wire.enumerated() where byte == 13 {
            #expect(index + 1 < wire.count && wire[index + 1] == 10, "bare CR at \(index) in \(wire)")
        }
    }
}
