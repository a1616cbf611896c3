import Testing

@testable import SMTPCore

@Suite struct CommandTests {
    @Test(arguments: [
        ("MAIL FROM:<a@b.example>", "MAIL", "FROM:<a@b.example>"),
        ("mail FROM:<a@b.example>", "MAIL", "FROM:<a@b.example>"),
        ("rCpT to:<a@b.example> NOTIFY=NEVER", "RCPT", "to:<a@b.example> NOTIFY=NEVER"),
        ("ehlo client.example", "EHLO", "client.example"),
        ("EHLO  two spaces", "EHLO", " two spaces"),
        ("NOOP", "NOOP", ""),
        ("quit", "QUIT", ""),
        ("DATA ", "DATA", ""),
        ("", "", ""),
        ("AUTH PLAIN AGp1YW4Ac2VjcmV0", "AUTH", "PLAIN AGp1YW4Ac2VjcmV0"),
        ("RCPT TO:<ñandú@pingüino.example>", "RCPT", "TO:<ñandú@pingüino.example>"),
    ])
    func splitsVerbAndArgument(line: String, verb: String, argument: String) {
        let command = Command(line: bytes(line))
        #expect(command.verb == verb)
        #expect(command.argument == argument)
        #expect(command == Command(verb: verb, argument: argument))
    }

    @Test func argumentKeepsItsCase() {
        #expect(Command(line: bytes("helo MiXeD.Example")).argument == "MiXeD.Example")
    }

    @Test func httpVerbs() {
        #expect(Command.httpVerbs == ["GET", "POST", "CONNECT"])
        #expect(Command.httpVerbs.contains(Command(line: bytes("get / HTTP/1.1")).verb))
    }
}

@Suite struct PathArgumentTests {
    @Test(arguments: [
        ("FROM:<a@b.example>", "<a@b.example>"),
        ("from:<a@b.example>", "<a@b.example>"),
        ("From:<a@b.example>", "<a@b.example>"),
        ("FROM: <a@b.example>", "<a@b.example>"),
        ("FROM:   <a@b.example>", "<a@b.example>"),
        ("FROM:\t<a@b.example>", "<a@b.example>"),
        ("FROM:<a@b.example> SIZE=10 BODY=8BITMIME", "<a@b.example>"),
        ("FROM:<a@b.example> SMTPUTF8", "<a@b.example>"),
        ("FROM:<>", "<>"),
        ("FROM:<> BODY=7BIT", "<>"),
        ("FROM:a@b.example", "a@b.example"),
        ("FROM:Name <a@b.example>", "Name"),
    ])
    func from(argument: String, token: String) throws {
        #expect(try PathArgument.extract(argument, prefix: "FROM:") == token)
    }

    @Test(arguments: [
        ("TO:<a@b.example>", "<a@b.example>"),
        ("to:<a@b.example>", "<a@b.example>"),
        ("To: <a@b.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a@b.example", "<a@b.example>"),
    ])
    func to(argument: String, token: String) throws {
        #expect(try PathArgument.extract(argument, prefix: "TO:") == token)
    }

    @Test(arguments: ["", "<a@b.example>", "FROM <a@b.example>", "FRO", "FROM", "TO:<a@b.example>", " FROM:<a@b.example>"])
    func missingPrefix(argument: String) {
        #expect(throws: PathArgument.Failure.missingPrefix) {
            try PathArgument.extract(argument, prefix: "FROM:")
        }
    }

    @Test(arguments: ["FROM:", "FROM: ", "FROM:   ", "from:\t", "FROM: \t "])
    func nothingAfterThePrefix(argument: String) {
        #expect(throws: PathArgument.Failure.empty) {
            try PathArgument.extract(argument, prefix: "FROM:")
        }
    }

    @Test func toPrefixIsNotFrom() {
        #expect(throws: PathArgument.Failure.missingPrefix) { try PathArgument.extract("FROM:<a@b>", prefix: "TO:") }
        #expect(throws: PathArgument.Failure.empty) { try PathArgument.extract("TO:", prefix: "TO:") }
    }
}

@Suite struct MailboxTests {
    @Test(arguments: [
        ("<a@b.example>", "a@b.example"),
        ("a@b.example", "a@b.example"),
        ("<Juan.Perez+tag@Example.COM>", "Juan.Perez+tag@Example.COM"),
        ("<@relay1.example,@relay2.example:user@b.example>", "user@b.example"),
        ("<@relay.example:user@b.example>", "user@b.example"),
        ("<\"quoted local\"@b.example>", "\"quoted local\"@b.example"),
        ("<\"a\\\"b\"@b.example>", "\"a\\\"b\"@b.example"),
        ("<\"a.b@c\"@b.example>", "\"a.b@c\"@b.example"),
        ("<ñandú@pingüino.example>", "ñandú@pingüino.example"),
        ("<用户@例子.广告>", "用户@例子.广告"),
        ("<a!#$%&'*+-/=?^_`{|}~@b.example>", "a!#$%&'*+-/=?^_`{|}~@b.example"),
        ("<a@[192.0.2.1]>", "a@[192.0.2.1]"),
        ("<a@xn--pingino-q2a.example>", "a@xn--pingino-q2a.example"),
    ])
    func parsesAddresses(token: String, address: String) throws {
        #expect(try Mailbox.parse(token) == .address(address))
    }

    @Test func nullSender() throws {
        #expect(try Mailbox.parse("<>") == .null)
    }

    @Test func withoutAtSignIsLeftToTheCaller() throws {
        #expect(try Mailbox.parse("<postmaster>") == .address("postmaster"))
        #expect(try Mailbox.parse("user") == .address("user"))
    }

    @Test(arguments: [
        "<a@b.example",  // missing '>'
        "<",
        "<a@b.example>>",
        "a@b.example>",
        "<a b@c.example>",
        "<a(b@c.example>",
        "<a)b@c.example>",
        "<a,b@c.example>",
        "<a;b@c.example>",
        "<a:b@c.example>",
        "<a[b@c.example>",
        "<a\\b@c.example>",
        "<a\"b@c.example>",
        "<a@b@c.example>",
        "<a<b@c.example>",
        "<a\u{7F}b@c.example>",
        "<a\u{01}b@c.example>",
        "<.a@c.example>",
        "<a.@c.example>",
        "<a..b@c.example>",
        "<@c.example>",
        "<a@>",
        "<a@b..example>",
        "<a@.example>",
        "<a@b_(x).example>",
        "<a@[192.0.2.1>",
        "<\"unterminated@b.example>",
        "<\"a\"b\"@b.example>",
        "Name<a@b.example>",
        "",
        "<@relay.example:>",
        // Issue 13 §5: controls in a quoted local part or an address literal.
        "<\"a\rb\"@x.example>",
        "<\"a\nb\"@x.example>",
        "<\"a\u{7F}b\"@x.example>",
        "<\"a\\\rb\"@x.example>",  // escaped, still a control
        "<\"a\u{00}\"@x.example>",
        "<\"a\\\"@x.example>",  // the closing quote escaped
        "<a@[192.0.2.1\r]>",
        "<a@[192.0.2.1\u{7F}]>",
        "<a@[192.0[2].1]>",
        "<a@[]>",
        "<a@[ñ]>",
        // Issue 13 §6: delimiters hidden in a grapheme cluster.
        "<a\u{0D4E}@evil.example@local.example>",
        "<a\u{0600}<b@local.example>",
        "<a\u{0600}\"b@local.example>",
        "<a\u{0600}\\b@local.example>",
        "<a@b\u{0600}@local.example>",
        "<a@b\u{0600}..local.example>",
        "<\"a\u{0600}\"\"@local.example>",
    ])
    func rejectsInvalid(token: String) {
        #expect(throws: Mailbox.Invalid.self) { try Mailbox.parse(token) }
    }

    @Test func scalarsThatFuseWithTheirNeighbourStayInTheAddress() throws {
        // A combining mark after "<" or a Prepend before ">" belongs to the
        // address, not to the brackets; byte for byte, not just canonically.
        func parsedBytes(_ token: String) throws -> [UInt8]? {
            guard case .address(let address) = try Mailbox.parse(token) else { return nil }
            return Array(address.utf8)
        }
        #expect(try parsedBytes("<\u{0301}a@b.example>") == Array("\u{0301}a@b.example".utf8))
        #expect(try parsedBytes("<a@b.example\u{0600}>") == Array("a@b.example\u{0600}".utf8))
        #expect(try parsedBytes("<\"n\u{0303} \u{0600}x\"@b.example>") == Array("\"n\u{0303} \u{0600}x\"@b.example".utf8))
    }
}

@Suite struct ScalarDelimiterTests {
    @Test func theVerbEndsAtTheFirstSpaceScalar() {
        let command = Command(line: Array("MAIL\u{0600} FROM:<a@b>".utf8))
        #expect(command.verb == "MAIL\u{0600}")
        #expect(command.argument == "FROM:<a@b>")
    }

    @Test func thePathPrefixAndTheTokenAreSplitPerScalar() throws {
        #expect(try PathArgument.extract("FROM:\u{0301}<a@b>", prefix: "FROM:") == "\u{0301}<a@b>")
        #expect(try PathArgument.extract("TO: \u{0301}<a@b> SIZE=1", prefix: "TO:") == "\u{0301}<a@b>")
        #expect(try PathArgument.extract("FROM:<a\u{0600}@b>\u{0600} BODY=8BITMIME", prefix: "FROM:") == "<a\u{0600}@b>\u{0600}")
        // The prefix is compared as ASCII, any case; a non-ASCII letter in
        // it is no match.
        #expect(try PathArgument.extract("fRoM:<a@b>", prefix: "FROM:") == "<a@b>")
        #expect(throws: PathArgument.Failure.self) { try PathArgument.extract("FRÖM:<a@b>", prefix: "FROM:") }
        #expect(throws: PathArgument.Failure.self) { try PathArgument.extract("T\u{0301}O:<a@b>", prefix: "TO:") }
    }

    @Test func aReplyIsCutAtEveryLFScalarAndNeverCarriesACROrLFInsideALine() {
        #expect(Reply(554, "first\r\nsecond\nthird\r").lines == ["first", "second", "third"])
        #expect(Reply(554, lines: ["a\rb", "c\r\n250 forged"]).encoded == "554-a b\r\n554 c  250 forged\r\n")
        // One line with a CR at its end still loses it (the one-line fast path).
        #expect(Reply(554, "only\r").lines == ["only"])
        #expect(Reply(250, "2.0.0 OK").lines == ["2.0.0 OK"])
        // The wire bytes are the text's UTF-8 (SMTPUTF8 replies).
        #expect(Reply(250, "Grüße").encodedBytes == Array("250 Grüße\r\n".utf8))
    }
}

@Suite struct CommandReportingTests {
    @Test func unknownVerbsAreCutToSixCharacters() {
        #expect(Command(line: Array("ehlo x".utf8)).reportedVerb == "EHLO")
        #expect(Command(line: Array("XYZZY1234 a".utf8)).reportedVerb == "unknown<\"XYZZY1\">")
    }

    @Test func authKeepsOnlyItsMechanismInTraces() {
        #expect(Command(line: Array("AUTH PLAIN AGp1YW4Ac2VjcmV0".utf8)).traceText == "AUTH PLAIN (initial response not shown)")
        #expect(Command(line: Array("auth login".utf8)).traceText == "AUTH LOGIN")
        #expect(Command(line: Array("AUTH".utf8)).traceText == "AUTH")
        #expect(Command(line: Array("MAIL FROM:<a@b>".utf8)).traceText == "MAIL FROM:<a@b>")
    }
}

@Suite struct KnownVerbTests {
    /// `Command.knownVerbs` names what `Session.handle` implements: a verb in
    /// one and not the other would be counted as unknown, or miscounted.
    @Test func everyKnownVerbIsHandledAndNoOtherIs() async {
        for verb in Command.knownVerbs.sorted() + ["XYZZY", "EHLOX"] {
            var h = Harness()
            let reply = await h.send(verb).reply
            let unknown = reply.code == 500 && reply.text == "5.5.1 Unknown command"
            #expect(unknown == !Command.knownVerbs.contains(verb), "\(verb): \(reply.code) \(reply.text)")
        }
    }

    @Test func unknownVerbsAreGoQuotedByScalar() {
        #expect(Command(line: Array("X\u{1b}[31mABCD".utf8)).reportedVerb == "unknown<\"X\\x1b[31M\">")
        // Combining marks count one by one, as Go's runes do.
        #expect(Command(line: Array("e\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}".utf8)).reportedVerb.unicodeScalars.count == "unknown<\"\">".unicodeScalars.count + 6)
    }
}
