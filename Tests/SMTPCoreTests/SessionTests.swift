import Testing

@testable import SMTPCore

// COMPAT.md §12.1 and §12.2, one transition or reply-table row per test.

@Suite struct GreetingAndHelloTests {
    @Test func greeting() {
        let h = Harness()
        #expect(h.session.greeting == Reply(220, "mx.example.org ESMTP chasquid"))
        #expect(h.session.greeting.encoded == "220 mx.example.org ESMTP chasquid\r\n")
    }

    @Test func ehloBeforeTLS() async {
        var h = Harness()
        let step = await h.send("EHLO client.example")
        expectStep(step, .reply, 250)
        let lines = step.reply.lines
        #expect(lines.count == 8)
        #expect(lines.first?.hasPrefix("mx.example.org") == true)
        #expect(
            Array(lines.dropFirst()) == [
                "8BITMIME", "PIPELINING", "SMTPUTF8", "ENHANCEDSTATUSCODES", "SIZE \(Harness.maxDataSize)",
                "STARTTLS", "HELP",
            ])
        // AUTH is never offered in plain text [SEC].
        #expect(!lines.contains { $0.uppercased().hasPrefix("AUTH") })
    }

    @Test func ehloAfterTLSOffersAuthNotStartTLS() async {
        var h = Harness()
        await h.startTLS(serverName: nil)
        let lines = await h.send("EHLO client.example").reply.lines
        #expect(lines.count == 8)
        #expect(Array(lines[1...5]) == ["8BITMIME", "PIPELINING", "SMTPUTF8", "ENHANCEDSTATUSCODES", "SIZE 52428800"])
        let auth = lines[6].split(separator: " ").map(String.init)
        #expect(auth.first == "AUTH")
        #expect(auth.contains("PLAIN"))
        #expect(auth.contains("LOGIN"))
        #expect(lines[7] == "HELP")
        #expect(!lines.contains("STARTTLS"))
    }

    @Test func ehloOnImplicitTLS() async {
        var h = Harness(mode: .submissionTLS, onTLS: true)
        let lines = await h.send("EHLO client.example").reply.lines
        #expect(lines[6].hasPrefix("AUTH "))
        #expect(!lines.contains("STARTTLS"))
    }

    @Test func ehloWireForm() async {
        var h = Harness()
        let encoded = await h.send("EHLO c").reply.encoded
        #expect(encoded.hasPrefix("250-mx.example.org"))
        #expect(encoded.hasSuffix("250-STARTTLS\r\n250 HELP\r\n"))
    }

    @Test func sizeIsMaxDataSize() async {
        var h = Harness(maxDataSize: 12345)
        let step = await h.send("EHLO x")
        #expect(step.reply.lines.contains("SIZE 12345"))
    }

    @Test func helo() async {
        var h = Harness()
        let step = await h.send("HELO client.example")
        expectStep(step, .reply, 250)
        #expect(h.session.info.ehloDomain == "client.example")
        #expect(!h.session.info.usedEHLO)
    }

    @Test func ehloStoresTheFirstWordUnvalidated() async {
        var h = Harness()
        await h.ok("EHLO [not a domain!] extra words")
        #expect(h.session.info.ehloDomain == "[not")
        #expect(h.session.info.usedEHLO)
        await h.ok("HELO \tspaced.example\tmore")
        #expect(h.session.info.ehloDomain == "spaced.example")
    }

    @Test(arguments: ["HELO", "EHLO", "HELO ", "EHLO ", "EHLO    ", "helo", "EHLO \t", "HELO  \t "])
    func helloWithoutArgument(line: String) async {
        var h = Harness()
        expectStep(await h.send(line), .reply, 501)
        #expect(h.session.info.ehloDomain == nil)
    }

    @Test func repeatingEhloKeepsTheEnvelope() async {
        var h = Harness()
        await h.ok("EHLO a", "MAIL FROM:<x@remote.example>", "RCPT TO:<juan@example.com>", "EHLO b", "HELO c")
        #expect(h.session.envelope?.from == "x@remote.example")
        #expect(h.session.envelope?.recipients == ["juan@example.com"])
        #expect(h.session.info.ehloDomain == "c")
        expectStep(await h.send("DATA"), .readData, 354)
    }
}

@Suite struct SimpleVerbTests {
    @Test func rset() async {
        var h = Harness()
        await h.ok("EHLO a", "MAIL FROM:<x@remote.example>", "RCPT TO:<juan@example.com>")
        expectStep(await h.send("RSET"), .reply, 250, "2.0.0")
        #expect(h.session.envelope == nil)
        expectStep(await h.send("RCPT TO:<juan@example.com>"), .reply, 503, "5.5.1")
    }

    @Test func noop() async {
        var h = Harness()
        expectStep(await h.send("NOOP"), .reply, 250, "2.0.0")
        expectStep(await h.send("noop with arguments"), .reply, 250, "2.0.0")
    }

    @Test func help() async {
        var h = Harness()
        expectStep(await h.send("HELP"), .reply, 214, "2.0.0")
    }

    @Test func quit() async {
        var h = Harness()
        expectStep(await h.send("QUIT"), .close, 221, "2.0.0")
    }

    @Test(arguments: ["VRFY juan", "EXPN list", "vrfy <juan@example.com>", "EXPN"])
    func noAddressHarvesting(line: String) async {
        var h = Harness()
        expectStep(await h.send(line), .reply, 502, "5.5.1")
        #expect(h.policy.log.all.isEmpty)
    }

    @Test(arguments: ["GET / HTTP/1.1", "POST /form HTTP/1.1", "CONNECT mx.example.org:25 HTTP/1.1", "get /"])
    func crossProtocolGuardCloses(line: String) async {
        var h = Harness()
        expectStep(await h.send(line), .close, 502, "5.7.0")
    }

    /// chasquid closes on an HTTP verb outside the error budget: even after
    /// two errors the client gets the 502, not the budget's 421.
    @Test func crossProtocolGuardIsOutsideTheErrorBudget() async {
        var h = Harness(maxErrors: SMTPDefaults.maxErrors)
        for line in ["FOO", "BAR"] {
            expectStep(await h.send(line), .reply, 500, "5.5.1")
        }
        expectStep(await h.send("GET / HTTP/1.1"), .close, 502, "5.7.0")
        #expect(h.actions.notes.contains(.failed(Command(line: bytes("GET / HTTP/1.1")), Reply(502, "5.7.0 You hear someone cursing shoplifters"))))
        #expect(!h.actions.notes.contains(.tooManyErrors))
    }

    @Test(arguments: ["FOO", "BDAT 10 LAST", "TURN", "ETRN x", "X", "SEND FROM:<a@b>"])
    func unknownVerb(line: String) async {
        var h = Harness()
        let step = await h.send(line)
        expectStep(step, .reply, 500, "5.5.1")
        #expect(step.reply.text == "5.5.1 Unknown command")
    }

    @Test func emptyLineIsUnknown() async {
        var h = Harness()
        expectStep(await h.send(""), .reply, 500, "5.5.1")
    }
}

@Suite struct MailFromTests {
    @Test func accepted() async {
        var h = Harness()
        await h.ok("EHLO a")
        expectStep(await h.send("MAIL FROM:<Juan@Remote.example>"), .reply, 250, "2.1.5")
        #expect(h.session.envelope == Envelope(from: "Juan@remote.example"))
        #expect(h.policy.log.all == ["sender Juan@Remote.example"])
    }

    @Test(arguments: [
        "MAIL FROM:<a@remote.example>", "mail from:<a@remote.example>", "MAIL From: <a@remote.example>",
        "MAIL FROM:a@remote.example", "MAIL FROM:<a@remote.example> BODY=8BITMIME SIZE=999999999999 SMTPUTF8",
        "MAIL FROM:<a@remote.example> RET=HDRS ENVID=x",
    ])
    func syntaxVariants(line: String) async {
        var h = Harness()
        expectStep(await h.send(line), .reply, 250, "2.1.5")
        #expect(h.session.envelope?.from == "a@remote.example")
    }

    @Test func noEhloNeededForMail() async {
        var h = Harness()
        expectStep(await h.send("MAIL FROM:<a@remote.example>"), .reply, 250, "2.1.5")
    }

    @Test(arguments: ["MAIL <a@remote.example>", "MAIL TO:<a@remote.example>", "MAIL FROM <a@remote.example>", "MAIL"])
    func missingFromPrefix(line: String) async {
        var h = Harness()
        expectStep(await h.send(line), .reply, 500, "5.5.2")
    }

    @Test(arguments: ["MAIL FROM:", "MAIL FROM:   ", "MAIL FROM:\t"])
    func nothingAfterFrom(line: String) async {
        var h = Harness()
        expectStep(await h.send(line), .reply, 500, "5.5.4")
    }

    @Test func submissionRequiresAuthBeforeMail() async {
        for mode in [ListenerMode.submission, .submissionTLS] {
            var h = Harness(mode: mode, onTLS: mode == .submissionTLS)
            await h.ok("EHLO a")
            expectStep(await h.send("MAIL FROM:<juan@example.com>"), .reply, 550, "5.7.9")
            #expect(h.session.envelope == nil)
            #expect(!h.policy.log.contains(prefix: "sender"))
        }
    }

    @Test func submissionChecksThePrefixFirst() async {
        var h = Harness(mode: .submission)
        expectStep(await h.send("MAIL TO:<juan@example.com>"), .reply, 500, "5.5.2")
    }

    /// §12.2 MAIL FROM order: 1. prefix, 2. AUTH on submission, 3. the token.
    @Test func submissionChecksAuthBeforeTheToken() async {
        var h = Harness(mode: .submission)
        expectStep(await h.send("MAIL FROM:"), .reply, 550, "5.7.9")
        expectStep(await h.send("MAIL FROM:<not valid"), .reply, 550, "5.7.9")
    }

    @Test func submissionAfterAuth() async {
        var h = Harness(mode: .submission)
        await h.authenticate()
        expectStep(await h.send("MAIL FROM:<juan@example.com>"), .reply, 250, "2.1.5")
    }

    @Test(arguments: [
        "MAIL FROM:<a@remote.example", "MAIL FROM:<a(b@remote.example>", "MAIL FROM:<a@@remote.example>",
        "MAIL FROM:<a..b@remote.example>", "MAIL FROM:<a@>", "MAIL FROM:Name<a@remote.example>",
        "MAIL FROM:<a@remote..example>", "MAIL FROM:<a b@remote.example>",
    ])
    func malformedSender(line: String) async {
        var h = Harness()
        expectStep(await h.send(line), .reply, 501, "5.1.7")
        #expect(h.session.envelope == nil)
    }

    @Test(arguments: ["MAIL FROM:<postmaster>", "MAIL FROM:juan"])
    func senderWithoutDomain(line: String) async {
        var h = Harness()
        expectStep(await h.send(line), .reply, 501, "5.1.8")
    }

    @Test func senderTooLong() async {
        var h = Harness()
        let fits = String(repeating: "a", count: 256 - "@remote.example".count) + "@remote.example"
        #expect(fits.utf8.count == 256)
        expectStep(await h.send("MAIL FROM:<\(fits)>"), .reply, 250, "2.1.5")
        expectStep(await h.send("MAIL FROM:<a\(fits)>"), .reply, 501, "5.1.7")
    }

    @Test func nullSenderSkipsTheChecks() async {
        var h = Harness()
        h.policy.senderRefusal = Reply(550, "5.7.23 SPF check failed: nope")
        expectStep(await h.send("MAIL FROM:<>"), .reply, 250, "2.1.5")
        #expect(h.session.envelope == Envelope(from: "<>"))
        #expect(!h.policy.log.contains(prefix: "sender"))
        expectStep(await h.send("RCPT TO:<juan@example.com>"), .reply, 250, "2.1.5")
    }

    @Test func nullSenderWithParameters() async {
        var h = Harness()
        expectStep(await h.send("MAIL FROM:<> BODY=8BITMIME"), .reply, 250, "2.1.5")
        #expect(h.session.envelope?.from == "<>")
    }

    @Test func senderRefusalFromPolicyIsPassedThrough() async {
        var h = Harness()
        h.policy.senderRefusal = Reply(550, "5.7.23 SPF check failed: not authorised")
        let step = await h.send("MAIL FROM:<a@remote.example>")
        #expect(step == .reply(Reply(550, "5.7.23 SPF check failed: not authorised")))
        #expect(h.session.envelope == nil)
        // The mail log gets the policy's reason, not the reply text.
        #expect(h.session.rejection == Rejection(from: "a@remote.example", to: [], reason: "failed SPF: test"))
    }

    @Test func spfVerdictIsKeptWithTheEnvelopeUntilTheNextMail() async {
        var h = Harness()
        h.policy.senderSPF = SPFVerdict(result: "softfail", reason: "matched all")
        await h.ok("MAIL FROM:<a@remote.example>")
        #expect(h.session.envelope?.spf == SPFVerdict(result: "softfail", reason: "matched all"))
        h.policy.senderSPF = nil
        await h.ok("MAIL FROM:<b@remote.example>")
        #expect(h.session.envelope?.spf == nil)
    }

    @Test func policySeesTheSession() async {
        var h = Harness()
        await h.authenticate()
        await h.ok("MAIL FROM:<juan@example.com>")
        #expect(h.policy.log.all.last == "sender juan@example.com")
    }

    @Test func senderDomainBecomesUnicode() async {
        var h = Harness()
        expectStep(await h.send("MAIL FROM:<Ana@XN--PINGINO-Q2A.Example>"), .reply, 250, "2.1.5")
        #expect(h.session.envelope?.from == "Ana@pingüino.example")
    }

    @Test func senderIDNAError() async {
        var h = Harness()
        expectStep(await h.send("MAIL FROM:<a@xn--zz.example>"), .reply, 501, "5.1.8")
        #expect(h.session.envelope == nil)
    }

    /// chasquid checks SPF and the security level first, then converts the
    /// domain: `xn---` (Go's decoder refuses a lone delimiter) is 501 after
    /// the policy passed it, and an SPF failure outranks it.
    @Test func senderLoneDelimiterACEIsRefusedAfterThePolicy() async {
        var h = Harness()
        #expect(
            await h.send("MAIL FROM:<a@xn--->").reply
                == Reply(501, "5.1.8 Malformed sender domain (IDNA conversion failed)"))
        #expect(h.policy.log.contains(prefix: "sender a@xn---"))
        #expect(h.session.envelope == nil)

        var refused = Harness()
        refused.policy.senderRefusal = Reply(550, "5.7.23 SPF check failed: nope")
        #expect(await refused.send("MAIL FROM:<a@xn--->").reply == Reply(550, "5.7.23 SPF check failed: nope"))
    }

    @Test func secondMailStartsOver() async {
        var h = Harness()
        await h.ok("EHLO a", "MAIL FROM:<a@remote.example>", "RCPT TO:<juan@example.com>")
        await h.ok("MAIL FROM:<b@remote.example>")
        #expect(h.session.envelope == Envelope(from: "b@remote.example"))
        expectStep(await h.send("DATA"), .reply, 503, "5.5.1")
    }

    /// §12.1: "MAIL, RSET, STARTTLS and a successful DATA reset" the envelope;
    /// only DATA's reset depends on success (chasquid resets before parsing).
    @Test func failedMailStillResetsTheEnvelope() async {
        var h = Harness()
        await h.ok("EHLO a", "MAIL FROM:<a@remote.example>", "RCPT TO:<juan@example.com>")
        expectStep(await h.send("MAIL FROM:<broken"), .reply, 501, "5.1.7")
        #expect(h.session.envelope == nil)
        expectStep(await h.send("DATA"), .reply, 503, "5.5.1")
    }
}

@Suite struct RcptToTests {
    /// A plain-text SMTP session with a sender already given.
    private func withSender() async -> Harness {
        var h = Harness()
        await h.ok("EHLO client.example", "MAIL FROM:<a@remote.example>")
        return h
    }

    @Test func localRecipientAccepted() async {
        var h = await withSender()
        expectStep(await h.send("RCPT TO:<juan@example.com>"), .reply, 250, "2.1.5")
        #expect(h.session.envelope?.recipients == ["juan@example.com"])
        #expect(h.policy.log.contains(prefix: "exists juan@example.com"))
    }

    @Test(arguments: [
        "RCPT TO:<juan@example.com>", "rcpt to:<juan@example.com>", "RCPT To: <juan@example.com>",
        "RCPT TO:juan@example.com", "RCPT TO:<juan@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;juan@example.com",
    ])
    func syntaxVariants(line: String) async {
        var h = await withSender()
        expectStep(await h.send(line), .reply, 250, "2.1.5")
    }

    @Test func rcptBeforeMail() async {
        var h = Harness()
        await h.ok("EHLO a")
        expectStep(await h.send("RCPT TO:<juan@example.com>"), .reply, 503, "5.5.1")
        #expect(h.policy.log.all.isEmpty)
    }

    /// §12.2 RCPT TO order: the sender is checked (2) before the address (4).
    @Test func emptyRcptBeforeMail() async {
        var h = Harness()
        expectStep(await h.send("RCPT TO:"), .reply, 503, "5.5.1")
    }

    @Test(arguments: ["RCPT <juan@example.com>", "RCPT FROM:<juan@example.com>", "RCPT", "RCPT TO <juan@example.com>"])
    func missingToPrefix(line: String) async {
        var h = await withSender()
        expectStep(await h.send(line), .reply, 500, "5.5.2")
    }

    @Test func missingToPrefixBeforeMail() async {
        var h = Harness()
        expectStep(await h.send("RCPT <juan@example.com>"), .reply, 500, "5.5.2")
    }

    @Test(arguments: ["RCPT TO:", "RCPT TO:  "])
    func nothingAfterTo(line: String) async {
        var h = await withSender()
        expectStep(await h.send(line), .reply, 500, "5.5.4")
    }

    @Test func hundredAndOneRecipientsThenTooMany() async {
        var h = Harness()
        h.policy.users = Set((0..<110).map { "u\($0)@example.com" })
        await h.ok("EHLO a", "MAIL FROM:<a@remote.example>")
        for i in 0..<101 {
            let step = await h.send("RCPT TO:<u\(i)@example.com>")
            #expect(step.reply.code == 250, "recipient \(i + 1): \(step)")
        }
        #expect(h.session.envelope?.recipients.count == 101)
        expectStep(await h.send("RCPT TO:<u101@example.com>"), .reply, 452, "4.5.3")
        #expect(h.session.envelope?.recipients.count == 101)
        expectStep(await h.send("DATA"), .readData, 354)
    }

    @Test func tooManyIsCheckedBeforeTheAddress() async {
        var h = Harness()
        h.policy.users = Set((0..<101).map { "u\($0)@example.com" })
        await h.ok("MAIL FROM:<a@remote.example>")
        for i in 0..<101 { _ = await h.send("RCPT TO:<u\(i)@example.com>") }
        expectStep(await h.send("RCPT TO:<malformed"), .reply, 452, "4.5.3")
    }

    @Test(arguments: [
        "RCPT TO:<juan@example.com", "RCPT TO:<ju(an@example.com>", "RCPT TO:<postmaster>", "RCPT TO:<@example.com>",
        "RCPT TO:<juan@>", "RCPT TO:<>",
    ])
    func malformedRecipient(line: String) async {
        var h = await withSender()
        expectStep(await h.send(line), .reply, 501, "5.1.3")
        #expect(h.session.envelope?.recipients == [])
    }

    @Test func recipientIDNAError() async {
        var h = await withSender()
        expectStep(await h.send("RCPT TO:<juan@xn--zz.example>"), .reply, 501, "5.1.2")
    }

    @Test func recipientTooLong() async {
        var h = Harness()
        let local = String(repeating: "a", count: 256 - "@example.com".count)
        h.policy.users = [local + "@example.com", "a" + local + "@example.com"]
        await h.ok("MAIL FROM:<a@remote.example>")
        expectStep(await h.send("RCPT TO:<\(local)@example.com>"), .reply, 250, "2.1.5")
        let tooLong = await h.send("RCPT TO:<a\(local)@example.com>")
        expectStep(tooLong, .reply, 501, "5.1.3")
        #expect(tooLong.reply.text == "5.1.3 Destination address too long")
        // 321 octets, the case chasquid was compared on.
        let long321 = String(repeating: "b", count: 321 - "@example.com".count) + "@example.com"
        #expect(await h.send("RCPT TO:<\(long321)>").reply == Reply(501, "5.1.3 Destination address too long"))
    }

    /// "xn---" is no domain: Go's Punycode decoder refuses the lone
    /// delimiter, so chasquid refuses it before any policy is asked.
    @Test func recipientLoneDelimiterACE() async {
        var h = await withSender()
        #expect(
            await h.send("RCPT TO:<user@xn--->").reply
                == Reply(501, "5.1.2 Malformed destination domain (IDNA conversion failed)"))
        #expect(!h.policy.log.contains(prefix: "isLocal"))
    }

    @Test func relayWithoutAuthIsRefused() async {
        var h = await withSender()
        expectStep(await h.send("RCPT TO:<someone@elsewhere.example>"), .reply, 503, "5.7.1")
        #expect(!h.policy.log.contains(prefix: "exists"))
        #expect(h.session.envelope?.recipients == [])
    }

    @Test func relayWithoutAuthOnTLSIsRefusedToo() async {
        var h = Harness(onTLS: true)
        await h.ok("EHLO a", "MAIL FROM:<a@remote.example>")
        expectStep(await h.send("RCPT TO:<someone@elsewhere.example>"), .reply, 503, "5.7.1")
    }

    @Test func relayWithAuth() async {
        var h = Harness()
        await h.authenticate()
        // Any MAIL FROM is allowed once authenticated (by design).
        await h.ok("MAIL FROM:<anyone@anywhere.example>")
        expectStep(await h.send("RCPT TO:<someone@XN--PINGINO-Q2A.elsewhere>"), .reply, 250, "2.1.5")
        #expect(h.session.envelope?.recipients == ["someone@pingüino.elsewhere"])
        #expect(!h.policy.log.contains(prefix: "exists"))
    }

    @Test func localUnknown() async {
        var h = await withSender()
        expectStep(await h.send("RCPT TO:<nobody@example.com>"), .reply, 550, "5.1.1")
        #expect(h.session.envelope?.recipients == [])
    }

    @Test func localLookupFailure() async {
        var h = await withSender()
        expectStep(await h.send("RCPT TO:<broken@example.com>"), .reply, 451, "4.4.3")
        #expect(h.session.envelope?.recipients == [])
    }

    @Test(arguments: ["RCPT TO:<♚@example.com>", "RCPT TO:<Ⅳ@example.com>", "RCPT TO:<¹@example.com>"])
    func localPrecisInvalid(line: String) async {
        var h = await withSender()
        expectStep(await h.send(line), .reply, 550, "5.1.3")
        #expect(!h.policy.log.contains(prefix: "exists"))
    }

    @Test func localLookupUsesTheNormalisedAddress() async {
        var h = await withSender()
        expectStep(await h.send("RCPT TO:<JUAN@Example.COM>"), .reply, 250, "2.1.5")
        expectStep(await h.send("RCPT TO:<ÑANDÚ@xn--pingino-q2a.example>"), .reply, 250, "2.1.5")
        #expect(h.policy.log.all.contains("exists juan@example.com"))
        #expect(h.policy.log.all.contains("exists ñandú@pingüino.example"))
        #expect(h.policy.log.all.contains("isLocal example.com"))
        #expect(h.policy.log.all.contains("isLocal pingüino.example"))
    }

    /// §8: Addr normalisation is "used for local RCPTs" (chasquid stores the normalised form).
    @Test func localRecipientIsStoredNormalised() async {
        var h = await withSender()
        await h.ok("RCPT TO:<JUAN@Example.COM>")
        #expect(h.session.envelope?.recipients == ["juan@example.com"])
    }

    @Test func duplicateRecipientsAreKept() async {
        var h = await withSender()
        await h.ok("RCPT TO:<juan@example.com>", "RCPT TO:<juan@example.com>")
        #expect(h.session.envelope?.recipients.count == 2)
    }
}

@Suite struct DataTests {
    @Test func goAhead() async {
        var h = Harness()
        await h.ok("EHLO a", "MAIL FROM:<a@remote.example>", "RCPT TO:<juan@example.com>")
        let step = await h.send("DATA")
        expectStep(step, .readData, 354)
    }

    @Test func dataWithoutHello() async {
        var h = Harness()
        await h.ok("MAIL FROM:<a@remote.example>", "RCPT TO:<juan@example.com>")
        expectStep(await h.send("DATA"), .reply, 503, "5.5.1")
    }

    @Test func dataWithoutMail() async {
        var h = Harness()
        await h.ok("EHLO a")
        expectStep(await h.send("DATA"), .reply, 503, "5.5.1")
    }

    @Test func dataWithoutRcpt() async {
        var h = Harness()
        await h.ok("EHLO a", "MAIL FROM:<a@remote.example>")
        expectStep(await h.send("DATA"), .reply, 503, "5.5.1")
    }

    @Test func dataWithOnlyRefusedRecipients() async {
        var h = Harness()
        await h.ok("EHLO a", "MAIL FROM:<a@remote.example>")
        _ = await h.send("RCPT TO:<nobody@example.com>")
        expectStep(await h.send("DATA"), .reply, 503, "5.5.1")
    }

    private func inData(maxDataSize: Int = Harness.maxDataSize) async -> Harness {
        var h = Harness(maxDataSize: maxDataSize)
        await h.enterData()
        return h
    }

    @Test func tooBig() async {
        var h = await inData(maxDataSize: 10)
        expectStep(await h.sendBytes(bytes("Subject: far too long\r\n\r\nbody\r\n.\r\n")), .reply, 552, "5.3.4")
        #expect(h.actions.contains(.discardSpool))
        #expect(!h.actions.contains { if case .deliver = $0 { true } else { false } })
        #expect(h.actions.notes.contains(.rejected(Rejection(from: "a@remote.example", to: ["juan@example.com"], reason: "message too big"))))
        #expect(h.session.envelope == nil)
    }

    @Test func bareLineEndingCloses() async {
        var h = await inData()
        expectStep(await h.sendBytes(bytes("Subject: x\n\nbody\n.\n")), .close, 521, "5.5.2")
        #expect(h.actions.contains(.discardSpool))
    }

    @Test func connectionLostDuringData() async {
        var h = await inData()
        _ = await h.sendBytes(bytes("Subject: x\r\n"))
        let actions = h.session.inputEnded()
        #expect(actions.replies == [Reply(554, "5.4.0 Error reading DATA: connection closed")])
        #expect(actions.notes.contains(.connectionLostDuringData))
        #expect(actions.contains(.discardSpool))
        #expect(actions.last == .close)
    }

    @Test func timeoutDuringData() async {
        var h = await inData()
        let actions = h.session.timedOut(idle: .seconds(1))
        #expect(actions.replies == [Reply(554, "5.4.0 Error reading DATA: timeout")])
        #expect(actions.last == .close)
    }

    @Test func acceptedResetsTheEnvelope() async {
        var h = await inData()
        _ = await h.sendBytes(bytes("Subject: hi\r\n\r\nbody\r\n.\r\n"))
        guard case .deliver(let envelope) = h.actions.last else {
            Issue.record("no delivery: \(h.actions)")
            return
        }
        #expect(envelope.recipients == ["juan@example.com"])
        let accepted = Reply(250, "2.0.0 You ascend to the status of Demigod(dess)...")
        let actions = await h.session.delivered(accepted, policy: h.policy)
        #expect(actions.withoutNotes == [.send([accepted])])
        #expect(h.session.envelope == nil)
        // The next message needs a new MAIL, but not a new EHLO.
        expectStep(await h.send("RCPT TO:<juan@example.com>"), .reply, 503, "5.5.1")
        await h.ok("MAIL FROM:<b@remote.example>", "RCPT TO:<ana@example.com>")
        expectStep(await h.send("DATA"), .readData, 354)
    }

    @Test func refusalByTheSinkKeepsTheEnvelope() async {
        var h = await inData()
        _ = await h.sendBytes(bytes("Subject: hi\r\n\r\nbody\r\n.\r\n"))
        let refusal = Reply(554, "5.7.1 Hook says no")
        let actions = await h.session.delivered(refusal, policy: h.policy)
        #expect(actions.replies == [refusal])
        #expect(h.session.envelope?.recipients == ["juan@example.com"])
    }

    @Test func spoolFailureIsATemporaryRefusal() async {
        var h = await inData()
        _ = await h.sendBytes(bytes("Subject: hi\r\n\r\nbody\r\n.\r\n"))
        let actions = await h.session.spoolFailed("disk full", policy: h.policy)
        #expect(actions.withoutNotes == [.discardSpool, .send([Reply(451, "4.3.0 Failed to queue message: disk full")])])
    }

    @Test(arguments: [
        ("no colon here\r\n\r\nbody\r\n.\r\n", "5.6.0"),
        ("\r\n.\r\n", nil),
        (".\r\n", "5.6.0"),
    ])
    func headerChecks(message: String, refusal: String?) async {
        var h = await inData()
        let step = await h.sendBytes(bytes(message))
        if let refusal {
            expectStep(step, .reply, 554, refusal)
            #expect(h.actions.contains(.discardSpool))
        } else {
            #expect(h.actions.last.map { if case .deliver = $0 { true } else { false } } == true, "\(h.actions)")
        }
    }

    @Test func loopIsDetected() async {
        var h = Harness(maxDataSize: Harness.maxDataSize)
        h.session = Session(mode: .smtp, hostname: "mx", maxDataSize: 1000, maxReceivedHeaders: 2)
        _ = h.session.start()
        await h.enterData()
        let step = await h.sendBytes(bytes("Received: a\r\nReceived: b\r\nReceived: c\r\n\r\nx\r\n.\r\n"))
        expectStep(step, .reply, 554, "5.4.6")
        #expect(h.actions.notes.contains(.loopDetected(receivedHeaders: 3)))
    }
}

@Suite struct StartTLSTests {
    @Test func goAheadThenHandshake() async {
        var h = Harness()
        await h.ok("EHLO a", "MAIL FROM:<a@remote.example>", "RCPT TO:<juan@example.com>")
        let step = await h.send("STARTTLS")
        expectStep(step, .startTLS, 220, "2.0.0")
        #expect(h.session.envelope == nil)
        h.handshake()
        #expect(h.session.info.onTLS)
        #expect(h.session.info.serverName == "mx.example.org")
    }

    @Test func acceptedEvenBeforeEhlo() async {
        var h = Harness()
        expectStep(await h.send("STARTTLS"), .startTLS, 220, "2.0.0")
    }

    @Test func alreadyOnTLS() async {
        var h = Harness()
        _ = await h.send("STARTTLS")
        h.handshake()
        expectStep(await h.send("STARTTLS"), .reply, 503, "5.5.1")
    }

    @Test func alreadyOnImplicitTLS() async {
        var h = Harness(mode: .submissionTLS, onTLS: true)
        expectStep(await h.send("STARTTLS"), .reply, 503, "5.5.1")
    }

    @Test func sniNameReplacesTheHostname() async {
        var h = Harness()
        _ = await h.send("STARTTLS")
        h.handshake(serverName: "mail.sni.example")
        #expect(h.session.info.serverName == "mail.sni.example")
        #expect(h.session.greeting == Reply(220, "mail.sni.example ESMTP chasquid"))
        let ehlo = await h.send("EHLO a")
        #expect(ehlo.reply.lines.first?.hasPrefix("mail.sni.example") == true)
    }

    @Test func emptySNIKeepsTheHostname() async {
        var h = Harness()
        await h.startTLS(serverName: "")
        #expect(h.session.info.serverName == "mx.example.org")
    }

    @Test func receivedNamesTheSuiteOnItsOwnLine() {
        var s = Session(mode: .submissionTLS, hostname: "mx.example.org", maxDataSize: 1)
        _ = s.start(implicitTLS: true)
        _ = s.tlsEstablished(serverName: nil, version: "TLS-1.3", cipherSuite: "TLS_AES_128_GCM_SHA256")
        let received = TraceHeaders.received(
            session: s.info, remoteIP: "192.0.2.1", tlsVersion: "TLS-1.3", tlsCipherSuite: "TLS_AES_128_GCM_SHA256",
            envelopeFrom: "a@b")
        let lines = received.split(separator: "\n").map(String.init)
        #expect(lines[1] == "\tby mx.example.org (chasquid) with SMTPS")
        #expect(lines[2] == "\ttls TLS_AES_128_GCM_SHA256")
        #expect(lines[3].hasPrefix("\t(over submission+TLS, TLS-1.3, "))
        // Plain text: no tls line, whatever is passed.
        let plain = Session(mode: .smtp, hostname: "mx.example.org", maxDataSize: 1)
        #expect(!TraceHeaders.received(session: plain.info, remoteIP: "192.0.2.1", tlsVersion: nil, tlsCipherSuite: "X", envelopeFrom: "a").contains("\ttls "))
    }

    @Test func implicitTLSGreetingUsesSNI() {
        var s = Session(mode: .submissionTLS, hostname: "mx.example.org", maxDataSize: 1)
        #expect(s.start(implicitTLS: true).isEmpty, "no greeting before the handshake")
        let actions = s.tlsEstablished(serverName: "smtp.customer.example", version: "TLS-1.3")
        #expect(actions == [.sendUncounted(Reply(220, "smtp.customer.example ESMTP chasquid"))])
        #expect(s.info.onTLS)
    }
}

@Suite struct AuthTests {
    private func onTLS() async -> Harness {
        var h = Harness()
        await h.startTLS(serverName: nil)
        await h.ok("EHLO client.example")
        return h
    }

    @Test func notOnTLS() async {
        var h = Harness()
        await h.ok("EHLO a")
        expectStep(await h.send("AUTH PLAIN " + plain("", "juan@example.com", "secret")), .reply, 503, "5.7.10")
        #expect(!h.session.info.isAuthenticated)
        #expect(!h.policy.log.contains(prefix: "auth"))
    }

    @Test func plainInline() async {
        var h = await onTLS()
        expectStep(await h.send("AUTH PLAIN " + plain("", "Juan@Example.COM", "secret")), .reply, 235, "2.7.0")
        #expect(h.policy.log.all.last == "auth juan|example.com|secret")
        #expect(h.session.info.isAuthenticated)
        #expect(h.session.info.authenticatedUser == "juan")
        #expect(h.session.info.authenticatedDomain == "example.com")
        #expect(h.session.info.authenticatedAs == "juan@example.com")
    }

    @Test func plainNormalisesWidthAndIDNA() async {
        var h = await onTLS()
        h.policy.passwords["ñandú@pingüino.example"] = "pw"
        expectStep(await h.send("AUTH PLAIN " + plain("", "ÑANDÚ@xn--pingino-q2a.example", "pw")), .reply, 235, "2.7.0")
        #expect(h.policy.log.all.last == "auth ñandú|pingüino.example|pw")
    }

    @Test func plainViaChallenge() async {
        var h = await onTLS()
        let challenge = await h.send("AUTH PLAIN")
        #expect(challenge == .authChallenge(Reply(334, "")))
        #expect(challenge.reply.encoded == "334 \r\n")
        #expect(h.isAwaitingAuthResponse)
        expectStep(await h.send(plain("", "juan@example.com", "secret")), .reply, 235, "2.7.0")
        #expect(!h.isAwaitingAuthResponse)
        #expect(h.session.info.isAuthenticated)
    }

    @Test(arguments: ["auth plain", "AUTH plain", "AUTH Plain"])
    func mechanismIsCaseInsensitive(prefix: String) async {
        var h = await onTLS()
        expectStep(await h.send(prefix + " " + plain("", "juan@example.com", "secret")), .reply, 235, "2.7.0")
    }

    @Test func loginFlow() async {
        var h = await onTLS()
        let user = await h.send("AUTH LOGIN")
        #expect(user == .authChallenge(Reply(334, "VXNlcm5hbWU6")))
        let password = await h.send(base64("Juan@example.com"))
        #expect(password == .authChallenge(Reply(334, "UGFzc3dvcmQ6")))
        expectStep(await h.send(base64("secret")), .reply, 235, "2.7.0")
        #expect(h.policy.log.all.last == "auth juan|example.com|secret")
        #expect(h.session.info.authenticatedAs == "juan@example.com")
        #expect(!h.isAwaitingAuthResponse)
    }

    @Test func loginLowercase() async {
        var h = await onTLS()
        expectStep(await h.send("auth login"), .authChallenge, 334)
        _ = await h.send(base64("juan@example.com"))
        expectStep(await h.send(base64("secret")), .reply, 235, "2.7.0")
    }

    @Test func loginWithInitialResponse() async {
        var h = await onTLS()
        let password = await h.send("AUTH LOGIN " + base64("juan@example.com"))
        #expect(password == .authChallenge(Reply(334, "UGFzc3dvcmQ6")))
        expectStep(await h.send(base64("secret")), .reply, 235, "2.7.0")
    }

    @Test func loginWrongPassword() async {
        var h = await onTLS()
        _ = await h.send("AUTH LOGIN")
        _ = await h.send(base64("juan@example.com"))
        expectStep(await h.send(base64("wrong")), .reply, 535, "5.7.8")
        #expect(!h.session.info.isAuthenticated)
        #expect(!h.isAwaitingAuthResponse)
    }

    @Test func loginBadBase64() async {
        var h = await onTLS()
        _ = await h.send("AUTH LOGIN")
        expectStep(await h.send("not base64!"), .reply, 501, "5.5.2")
        #expect(!h.isAwaitingAuthResponse)
        _ = await h.send("AUTH LOGIN")
        _ = await h.send(base64("juan@example.com"))
        expectStep(await h.send("%%%"), .reply, 501, "5.5.2")
        #expect(!h.isAwaitingAuthResponse)
    }

    @Test func wrongPassword() async {
        var h = await onTLS()
        expectStep(await h.send("AUTH PLAIN " + plain("", "juan@example.com", "nope")), .reply, 535, "5.7.8")
        #expect(!h.session.info.isAuthenticated)
        #expect(h.session.info.authenticatedAs == nil)
    }

    @Test func unknownUser() async {
        var h = await onTLS()
        expectStep(await h.send("AUTH PLAIN " + plain("", "nobody@example.com", "secret")), .reply, 535, "5.7.8")
    }

    @Test func backendFailure() async {
        var h = await onTLS()
        h.policy.authBackendFails = true
        expectStep(await h.send("AUTH PLAIN " + plain("", "juan@example.com", "secret")), .reply, 454, "4.7.0")
        #expect(!h.session.info.isAuthenticated)
    }

    @Test(arguments: ["AUTH CRAM-MD5", "AUTH DIGEST-MD5 abc", "AUTH XOAUTH2 abc", "AUTH", "AUTH PLAINX abc"])
    func otherMechanism(line: String) async {
        var h = await onTLS()
        expectStep(await h.send(line), .reply, 534, "5.7.9")
        #expect(!h.isAwaitingAuthResponse)
    }

    @Test(arguments: ["%%%", "AGp1YW4", "not base64 at all"])
    func badBase64Inline(response: String) async {
        var h = await onTLS()
        expectStep(await h.send("AUTH PLAIN " + response), .reply, 501, "5.5.2")
        #expect(!h.policy.log.contains(prefix: "auth"))
    }

    @Test func badBase64ViaChallenge() async {
        var h = await onTLS()
        _ = await h.send("AUTH PLAIN")
        expectStep(await h.send("%%%"), .reply, 501, "5.5.2")
        #expect(!h.isAwaitingAuthResponse)
    }

    @Test(arguments: [base64("juan@example.com\u{0}secret"), base64("no nul at all")])
    func plainWithoutThreeFields(response: String) async {
        var h = await onTLS()
        expectStep(await h.send("AUTH PLAIN " + response), .reply, 501, "5.5.2")
    }

    @Test func authzDiffersFromAuthc() async {
        var h = await onTLS()
        expectStep(
            await h.send("AUTH PLAIN " + plain("ana@example.com", "juan@example.com", "secret")), .reply, 501, "5.5.2")
        #expect(!h.policy.log.contains(prefix: "auth"))
    }

    @Test func authzEqualToAuthc() async {
        var h = await onTLS()
        expectStep(
            await h.send("AUTH PLAIN " + plain("juan@example.com", "juan@example.com", "secret")), .reply, 235, "2.7.0")
    }

    @Test func authzAlone() async {
        var h = await onTLS()
        expectStep(await h.send("AUTH PLAIN " + plain("juan@example.com", "", "secret")), .reply, 235, "2.7.0")
        #expect(h.policy.log.all.last == "auth juan|example.com|secret")
    }

    @Test func domainIsOptional() async {
        var h = await onTLS()
        expectStep(await h.send("AUTH PLAIN " + plain("", "Solo", "pw")), .reply, 235, "2.7.0")
        #expect(h.policy.log.all.last == "auth solo||pw")
        #expect(h.session.info.authenticatedUser == "solo")
        #expect(h.session.info.authenticatedDomain == "")
    }

    @Test func identitySplitsAtTheFirstAt() async {
        var h = await onTLS()
        _ = await h.send("AUTH PLAIN " + plain("", "a@b@example.com", "x"))
        #expect(h.policy.log.all.last == "auth a|b@example.com|x")
    }

    @Test func passwordIsPassedRaw() async {
        var h = await onTLS()
        _ = await h.send("AUTH PLAIN " + plain("", "juan@example.com", " Pässwörd with spaces "))
        #expect(h.policy.log.all.last == "auth juan|example.com| Pässwörd with spaces ")
    }

    @Test func alreadyAuthenticated() async {
        var h = await onTLS()
        await h.ok("AUTH PLAIN " + plain("", "juan@example.com", "secret"))
        expectStep(await h.send("AUTH PLAIN " + plain("", "juan@example.com", "secret")), .reply, 503, "5.5.1")
        expectStep(await h.send("AUTH LOGIN"), .reply, 503, "5.5.1")
    }

    @Test func starCancelsPlain() async {
        var h = await onTLS()
        _ = await h.send("AUTH PLAIN")
        let step = await h.send("*")
        #expect(step.reply.code == 501)
        #expect(step.kind == .reply)
        #expect(!h.isAwaitingAuthResponse)
        #expect(!h.session.info.isAuthenticated)
        #expect(!h.policy.log.contains(prefix: "auth"))
        // Back to commands.
        expectStep(await h.send("NOOP"), .reply, 250, "2.0.0")
    }

    @Test func starCancelsLogin() async {
        var h = await onTLS()
        _ = await h.send("AUTH LOGIN")
        expectStep(await h.send("*"), .reply, 501)
        #expect(!h.isAwaitingAuthResponse)
        _ = await h.send("AUTH LOGIN")
        _ = await h.send(base64("juan@example.com"))
        expectStep(await h.send("*"), .reply, 501)
        #expect(!h.isAwaitingAuthResponse)
        #expect(!h.policy.log.contains(prefix: "auth"))
        // A new attempt works from the start.
        expectStep(await h.send("AUTH PLAIN " + plain("", "juan@example.com", "secret")), .reply, 235, "2.7.0")
    }

    @Test func authThenRelayOnSubmission() async {
        var h = Harness(mode: .submission)
        expectStep(await h.send("MAIL FROM:<juan@example.com>"), .reply, 550, "5.7.9")
        await h.authenticate()
        await h.ok("MAIL FROM:<juan@example.com>", "RCPT TO:<friend@elsewhere.example>")
        expectStep(await h.send("DATA"), .readData, 354)
    }
}

@Suite struct ErrorBudgetTests {
    @Test func thirdErrorBecomes421AndCloses() async {
        var h = Harness(maxErrors: SMTPDefaults.maxErrors)
        expectStep(await h.send("FOO"), .reply, 500)
        expectStep(await h.send("MAIL FROM:<bad"), .reply, 501)
        expectStep(await h.send("RCPT TO:<juan@example.com>"), .close, 421, "4.5.0")
        // The refused command is logged before the budget's verdict.
        #expect(h.actions.notes.suffix(2) == [
            .failed(Command(verb: "RCPT", argument: "TO:<juan@example.com>"), Reply(503, "5.5.1 Sender not yet given")),
            .tooManyErrors,
        ])
        #expect(h.actions.replies == [Reply(421, "4.5.0 Too many errors, bye")])
    }

    @Test func successesDoNotCount() async {
        var h = Harness(maxErrors: SMTPDefaults.maxErrors)
        for _ in 0..<2 {
            expectStep(await h.send("VRFY x"), .reply, 502)
            await h.ok("EHLO a", "NOOP", "HELP", "RSET")
        }
        expectStep(await h.send("VRFY x"), .close, 421, "4.5.0")
    }

    @Test func fourHundredCountsAsError() async {
        var h = Harness(maxErrors: SMTPDefaults.maxErrors)
        await h.ok("EHLO a", "MAIL FROM:<a@remote.example>")
        expectStep(await h.send("RCPT TO:<broken@example.com>"), .reply, 451, "4.4.3")
        expectStep(await h.send("RCPT TO:<broken@example.com>"), .reply, 451, "4.4.3")
        expectStep(await h.send("RCPT TO:<broken@example.com>"), .close, 421, "4.5.0")
    }

    @Test func budgetThroughTheDialogue() async {
        var h = Harness(maxErrors: SMTPDefaults.maxErrors)
        var steps: [SessionStep] = []
        for line in ["EHLO a", "FOO", "NOOP", "RCPT TO:<juan@example.com>", "MAIL FROM:<a@remote.example>", "BAR"] {
            steps.append(await h.send(line))
        }
        expectStep(steps[0], .reply, 250)
        expectStep(steps[1], .reply, 500, "5.5.1")
        expectStep(steps[2], .reply, 250, "2.0.0")
        expectStep(steps[3], .reply, 503, "5.5.1")
        expectStep(steps[4], .reply, 250, "2.1.5")
        expectStep(steps[5], .close, 421, "4.5.0")
    }

    @Test func authFailuresShareTheBudget() async {
        var h = Harness(maxErrors: SMTPDefaults.maxErrors)
        await h.startTLS()
        let bad = "AUTH PLAIN " + plain("", "juan@example.com", "wrong")
        var steps: [SessionStep] = []
        for _ in 0..<3 {
            steps.append(await h.send(bad))
        }
        expectStep(steps[0], .reply, 535, "5.7.8")
        expectStep(steps[1], .reply, 535, "5.7.8")
        expectStep(steps[2], .close, 421, "4.5.0")
        // Even the attempt that spends the budget is in the mail log.
        #expect(h.actions.notes.contains(.authenticated(user: "juan@example.com", succeeded: false)))
    }
}

@Suite struct ReplyTests {
    @Test func singleLine() {
        let r = Reply(250, "2.0.0 OK")
        #expect(r.lines == ["2.0.0 OK"])
        #expect(r.encoded == "250 2.0.0 OK\r\n")
        #expect(r.description == "250 2.0.0 OK")
        #expect(!r.isError)
    }

    @Test func multiLine() {
        let r = Reply(250, lines: ["a", "b", "c"])
        #expect(r.encoded == "250-a\r\n250-b\r\n250 c\r\n")
        #expect(r.text == "a\nb\nc")
        #expect(Reply(250, "a\nb") == Reply(250, lines: ["a", "b"]))
    }

    @Test func emptyText() {
        #expect(Reply(334, "").encoded == "334 \r\n")
        #expect(Reply(334, lines: []).encoded == "334 \r\n")
    }

    @Test func isError() {
        #expect(Reply(400, "").isError)
        #expect(Reply(554, "").isError)
        #expect(!Reply(399, "").isError)
        #expect(!Reply(354, "").isError)
    }
}
