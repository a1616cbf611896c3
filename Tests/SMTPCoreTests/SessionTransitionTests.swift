import Foundation
import Testing

@testable import SMTPCore

/// One test per transition of `Session.State`: the event, the actions it
/// returns, and the state it leaves; the impossible events trap.
@Suite struct SessionTransitionTests {
    static let policy = FakePolicy()

    private func isState(_ session: Session, _ name: String) -> Bool {
        switch session.state {
        case .greeting: name == "greeting"
        case .awaitingTLS: name == "awaitingTLS"
        case .ready: name == "ready"
        case .mail: name == "mail"
        case .rcpt: name == "rcpt"
        case .auth(let step, _): name == "auth \(step)"
        case .tlsHandshaking: name == "tlsHandshaking"
        case .data: name == "data"
        case .delivering: name == "delivering"
        case .closed: name == "closed"
        }
    }

    private func session() -> Session { Session(mode: .smtp, hostname: "mx", maxDataSize: 1000) }

    private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    // MARK: greeting

    @Test func greetingStartSendsTheGreetingUncounted() {
        var s = session()
        #expect(s.start() == [.sendUncounted(Reply(220, "mx ESMTP chasquid"))])
        #expect(isState(s, "ready"))
    }

    @Test func greetingStartOnImplicitTLSWaits() {
        var s = session()
        #expect(s.start(implicitTLS: true) == [])
        #expect(isState(s, "awaitingTLS"))
    }

    @Test func greetingStartDuringShutdownTurnsAway() {
        var s = session()
        #expect(s.start(shuttingDown: true) == [.sendUncounted(.shuttingDown), .close])
        #expect(isState(s, "closed"))
    }

    @Test func greetingBytesTrap() async {
        await #expect(processExitsWith: .failure) {
            var s = Session(mode: .smtp, hostname: "mx", maxDataSize: 1000)
            _ = await s.received(Array("NOOP\r\n".utf8), policy: FakePolicy())
        }
    }

    // MARK: awaitingTLS

    @Test func awaitingTLSDropsBytes() async {
        var s = session()
        _ = s.start(implicitTLS: true)
        #expect(await s.received(bytes("EHLO x\r\n"), policy: Self.policy) == [])
        #expect(isState(s, "awaitingTLS"))
    }

    @Test func awaitingTLSHandshakeGreets() {
        var s = session()
        _ = s.start(implicitTLS: true)
        #expect(s.tlsEstablished(serverName: nil, version: "TLS-1.3") == [.sendUncounted(Reply(220, "mx ESMTP chasquid"))])
        #expect(isState(s, "ready"))
        #expect(s.info.onTLS)
    }

    @Test func awaitingTLSTimeoutCloses() {
        var s = session()
        _ = s.start(implicitTLS: true)
        #expect(s.timedOut(idle: .seconds(60)) == [.close])
        #expect(isState(s, "closed"))
    }

    @Test func awaitingTLSInputEndedCloses() {
        var s = session()
        _ = s.start(implicitTLS: true)
        #expect(s.inputEnded() == [.close])
    }

    // MARK: ready, mail, rcpt

    @Test func readyPipelinedCommandsAreOneWrite() async {
        var s = session()
        _ = s.start()
        let actions = await s.received(bytes("EHLO a\r\nNOOP\r\nMAIL FROM:<a@remote.example>\r\n"), policy: Self.policy)
        #expect(actions.withoutNotes.count == 1)
        #expect(actions.replies.map(\.code) == [250, 250, 250])
        #expect(isState(s, "mail"))
    }

    @Test func readyPartialLineWaits() async {
        var s = session()
        _ = s.start()
        #expect(await s.received(bytes("NO"), policy: Self.policy) == [])
        #expect(await s.received(bytes("OP\r\n"), policy: Self.policy).replies == [Reply(250, "2.0.0 OK")])
    }

    @Test func readyShortIdleIsIgnored() {
        var s = session()
        _ = s.start()
        #expect(s.timedOut(idle: .seconds(59)) == [])
        #expect(isState(s, "ready"))
    }

    @Test func readyIdleTimeoutCloses() {
        var s = session()
        _ = s.start()
        #expect(s.timedOut(idle: .seconds(60)) == [.note(.timedOut), .sendUncounted(Reply(421, "4.4.2 Timed out, bye")), .close])
        #expect(isState(s, "closed"))
    }

    /// A command arriving one byte at a time is cut when the reply is
    /// overdue, bytes or not (issue 18).
    @Test func aTrickledCommandIsCutWhenTheReplyIsOverdue() async {
        var s = session()
        _ = s.start()
        #expect(await s.received(bytes("EH"), policy: Self.policy) == [])
        #expect(s.replyOverdue() == [.note(.timedOut), .sendUncounted(Reply(421, "4.4.2 Timed out, bye")), .close])
        #expect(isState(s, "closed"))
    }

    @Test func anOverdueReplyInDataOrAfterCloseDoesNothing() async {
        var s = await inData()
        _ = await s.received(bytes("DATA\r\nSubject: slow\r\n"), policy: Self.policy)
        #expect(s.replyOverdue() == [])
        #expect(isState(s, "data"))
        var closed = session()
        _ = closed.start()
        _ = closed.inputEnded()
        #expect(closed.replyOverdue() == [])
    }

    @Test func readyInputEndedCloses() {
        var s = session()
        _ = s.start()
        #expect(s.inputEnded() == [.close])
    }

    @Test func readyLineTooLongCloses() async {
        var s = session()
        _ = s.start()
        let actions = await s.received(bytes("NOOP\r\n" + String(repeating: "x", count: 2000)), policy: Self.policy)
        #expect(actions.withoutNotes == [
            .send([Reply(250, "2.0.0 OK")]), .sendUncounted(Reply(554, "error reading command: line too long")), .close,
        ])
    }

    @Test func mailThenRcptThenRset() async {
        var s = session()
        _ = s.start()
        _ = await s.received(bytes("EHLO a\r\nMAIL FROM:<a@remote.example>\r\n"), policy: Self.policy)
        #expect(isState(s, "mail"))
        _ = await s.received(bytes("RCPT TO:<juan@example.com>\r\n"), policy: Self.policy)
        #expect(isState(s, "rcpt"))
        _ = await s.received(bytes("RSET\r\n"), policy: Self.policy)
        #expect(isState(s, "ready"))
    }

    @Test func readyTLSEstablishedTraps() async {
        await #expect(processExitsWith: .failure) {
            var s = Session(mode: .smtp, hostname: "mx", maxDataSize: 1000)
            _ = s.start()
            _ = s.tlsEstablished(serverName: nil, version: "TLS-1.3")
        }
    }

    @Test func readyDeliveredTraps() async {
        await #expect(processExitsWith: .failure) {
            var s = Session(mode: .smtp, hostname: "mx", maxDataSize: 1000)
            _ = s.start()
            _ = await s.delivered(Reply(250, "ok"), policy: FakePolicy())
        }
    }

    // MARK: tlsHandshaking

    @Test func startTLSDropsPipelinedPlaintext() async {
        var s = session()
        _ = s.start()
        let actions = await s.received(bytes("STARTTLS\r\nMAIL FROM:<a@remote.example>\r\n"), policy: Self.policy)
        #expect(actions.withoutNotes == [.startTLS(Reply(220, "2.0.0 You experience a strange sense of peace"))])
        #expect(isState(s, "tlsHandshaking"))
        #expect(await s.received(bytes("RCPT TO:<juan@example.com>\r\n"), policy: Self.policy) == [])
        #expect(s.tlsEstablished(serverName: "sni.example", version: "TLS-1.3") == [])
        #expect(isState(s, "ready"))
        #expect(s.info.serverName == "sni.example")
        // Nothing of the plain text survived the handshake.
        #expect(await s.received(bytes("RCPT TO:<juan@example.com>\r\n"), policy: Self.policy).replies.first?.code == 503)
    }

    @Test func tlsHandshakingTimeoutCloses() async {
        var s = session()
        _ = s.start()
        _ = await s.received(bytes("STARTTLS\r\n"), policy: Self.policy)
        #expect(s.timedOut(idle: .seconds(10)) == [])
        #expect(s.timedOut(idle: .seconds(60)).last == .close)
    }

    // MARK: auth

    @Test func authLoginSteps() async {
        var s = session()
        _ = s.start()
        _ = await s.received(bytes("STARTTLS\r\n"), policy: Self.policy)
        _ = s.tlsEstablished(serverName: nil, version: "TLS-1.3")
        _ = await s.received(bytes("EHLO a\r\nAUTH LOGIN\r\n"), policy: Self.policy)
        #expect(isState(s, "auth loginUser"))
        let user = await s.received(bytes(base64("juan@example.com") + "\r\n"), policy: Self.policy)
        #expect(user.notes == [.authResponse])
        #expect(isState(s, "auth loginPassword(user: \"juan@example.com\")"))
        let done = await s.received(bytes(base64("secret") + "\r\n"), policy: Self.policy)
        #expect(done.replies == [Reply(235, "2.7.0 Authentication successful")])
        #expect(done.notes.contains(.authenticated(user: "juan@example.com", succeeded: true)))
        #expect(isState(s, "ready"))
    }

    @Test func authKeepsTheTransaction() async {
        var s = session()
        _ = s.start()
        _ = await s.received(bytes("STARTTLS\r\n"), policy: Self.policy)
        _ = s.tlsEstablished(serverName: nil, version: "TLS-1.3")
        _ = await s.received(bytes("EHLO a\r\nMAIL FROM:<a@remote.example>\r\nAUTH PLAIN\r\n"), policy: Self.policy)
        #expect(isState(s, "auth plain"))
        _ = await s.received(bytes("*\r\n"), policy: Self.policy)
        #expect(isState(s, "mail"))
    }

    // MARK: data and delivering

    private func inData() async -> Session {
        var s = Session(mode: .smtp, hostname: "mx", maxDataSize: 1000, remoteIP: "192.0.2.1", now: { Date(timeIntervalSince1970: 0) })
        _ = s.start()
        _ = await s.received(bytes("EHLO a\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<juan@example.com>\r\n"), policy: Self.policy)
        return s
    }

    @Test func dataOpensTheSpoolWithTheTraceHeaders() async {
        var s = await inData()
        let actions = await s.received(bytes("DATA\r\n"), policy: Self.policy)
        #expect(actions.replies == [Reply(354, "You suddenly realize it is unnaturally quiet")])
        guard case .openSpool(let headers) = actions.last else {
            Issue.record("\(actions)")
            return
        }
        let text = String(decoding: headers, as: UTF8.self)
        #expect(text.hasPrefix("Received: from a ([192.0.2.1])\n\tby mx (chasquid) with ESMTP\n"))
        #expect(actions.notes.contains(.dataStarted(onTLS: false)))
        #expect(isState(s, "data"))
    }

    @Test func dataBytesAreAppendedThenDelivered() async {
        var s = await inData()
        _ = await s.received(bytes("DATA\r\n"), policy: Self.policy)
        let body = await s.received(bytes("Subject: x\r\n\r\n"), policy: Self.policy)
        #expect(body.allSatisfy { if case .append = $0 { true } else { false } })
        let end = await s.received(bytes("..b\r\n.\r\nNOOP\r\n"), policy: Self.policy)
        guard case .deliver(let envelope) = end.last else {
            Issue.record("\(end)")
            return
        }
        #expect(envelope.from == "a@remote.example" && envelope.recipients == ["juan@example.com"])
        // The trace headers the spool starts with, kept for the sink (DKIM).
        #expect(envelope.trace?.serverName == "mx")
        #expect(envelope.trace?.received.hasPrefix("Received: from a ([192.0.2.1])\n") == true)
        #expect(isState(s, "delivering"))
        // The NOOP pipelined after the dot waits for the delivery.
        let after = await s.delivered(Reply(250, "2.0.0 queued"), policy: Self.policy)
        #expect(after.withoutNotes == [.send([Reply(250, "2.0.0 queued"), Reply(250, "2.0.0 OK")])])
        #expect(after.notes.first == .dataEnded)
        #expect(isState(s, "ready"))
    }

    @Test func deliveringSpoolFailureKeepsTheTransaction() async {
        var s = await inData()
        _ = await s.received(bytes("DATA\r\nSubject: x\r\n\r\nb\r\n.\r\n"), policy: Self.policy)
        let actions = await s.spoolFailed("no space left on device", policy: Self.policy)
        #expect(actions.replies == [Reply(451, "4.3.0 Failed to queue message: no space left on device")])
        #expect(isState(s, "rcpt"))
    }

    @Test func aTLSHandshakeOnAPlainPortIsClosedOutsideTheBudget() async {
        var s = session()
        _ = s.start()
        let hello: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03, 0x0D, 0x0A, 0x99, 0x0D, 0x0A]
        let actions = await s.received(hello, policy: Self.policy)
        #expect(actions.replies == [Reply(500, "5.5.1 TLS handshake on a plain-text port, use port 465 or STARTTLS")])
        #expect(actions.withoutNotes.last == .close)
        #expect(isState(s, "closed"))
    }

    @Test func deliveringOnAFullDiskIs452AndNotTheClientsError() async {
        var s = await inData()
        _ = await s.received(bytes("DATA\r\nSubject: x\r\n\r\nb\r\n.\r\n"), policy: Self.policy)
        let actions = await s.spoolFailed("write q/s: no space left on device", storageFull: true, policy: Self.policy)
        #expect(actions.replies == [Reply(452, "4.3.1 Insufficient system storage, try again later")])
        #expect(!actions.notes.contains { if case .failed = $0 { true } else { false } })
        #expect(isState(s, "rcpt"))
        // The queue refusing it for the same reason is the same.
        _ = await s.received(bytes("DATA\r\nSubject: x\r\n\r\nb\r\n.\r\n"), policy: Self.policy)
        let again = await s.delivered(.insufficientStorage, policy: Self.policy)
        #expect(!again.notes.contains { if case .failed = $0 { true } else { false } })
    }

    @Test func deliveringDuringShutdownDrains() async {
        var s = await inData()
        _ = await s.received(bytes("DATA\r\nSubject: x\r\n\r\nb\r\n.\r\nNOOP\r\n"), policy: Self.policy)
        s.shutdownBegan()
        let actions = await s.delivered(Reply(250, "2.0.0 queued"), policy: Self.policy)
        #expect(actions.withoutNotes == [.send([Reply(250, "2.0.0 queued")]), .sendUncounted(.shuttingDown), .close])
    }

    @Test func dataBareLineFeedCloses() async {
        var s = await inData()
        _ = await s.received(bytes("DATA\r\n"), policy: Self.policy)
        let actions = await s.received(bytes("a\nb\r\n"), policy: Self.policy)
        #expect(actions.withoutNotes.suffix(3) == [
            .discardSpool, .send([Reply(521, "5.5.2 Error reading DATA: invalid line ending")]), .close,
        ])
    }

    @Test func dataInputEndedClosesWith554() async {
        var s = await inData()
        _ = await s.received(bytes("DATA\r\n"), policy: Self.policy)
        let actions = s.inputEnded()
        #expect(actions.withoutNotes == [
            .discardSpool, .send([Reply(554, "5.4.0 Error reading DATA: connection closed")]), .close,
        ])
    }

    @Test func dataTLSEstablishedTraps() async {
        await #expect(processExitsWith: .failure) {
            var s = Session(mode: .smtp, hostname: "mx", maxDataSize: 1000)
            _ = s.start()
            _ = await s.received(
                Array("EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<juan@example.com>\r\nDATA\r\n".utf8), policy: FakePolicy())
            _ = s.tlsEstablished(serverName: nil, version: "TLS-1.3")
        }
    }

    @Test func deliveringBytesTrap() async {
        await #expect(processExitsWith: .failure) {
            var s = Session(mode: .smtp, hostname: "mx", maxDataSize: 1000)
            _ = s.start()
            _ = await s.received(
                Array("EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<juan@example.com>\r\nDATA\r\nSubject: x\r\n\r\nb\r\n.\r\n".utf8),
                policy: FakePolicy())
            _ = await s.received(Array("NOOP\r\n".utf8), policy: FakePolicy())
        }
    }

    // MARK: closed

    @Test func quitCloses() async {
        var s = session()
        _ = s.start()
        #expect(await s.received(bytes("QUIT\r\n"), policy: Self.policy).withoutNotes == [.send([Reply(221, "2.0.0 Be seeing you...")]), .close])
        #expect(isState(s, "closed"))
    }

    @Test func closedBytesTrap() async {
        await #expect(processExitsWith: .failure) {
            var s = Session(mode: .smtp, hostname: "mx", maxDataSize: 1000)
            _ = s.start()
            _ = await s.received(Array("QUIT\r\n".utf8), policy: FakePolicy())
            _ = await s.received(Array("NOOP\r\n".utf8), policy: FakePolicy())
        }
    }

    /// Every command of a dialogue, cut at every byte, gives the same replies.
    @Test func fragmentationAtEveryByte() async {
        let dialogue = bytes("EHLO a\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<juan@example.com>\r\nVRFY x\r\n")
        var whole = session()
        _ = whole.start()
        let expected = await whole.received(dialogue, policy: Self.policy).replies
        for cut in 1..<dialogue.count {
            var s = session()
            _ = s.start()
            var replies = await s.received(dialogue[..<cut], policy: Self.policy).replies
            replies += await s.received(dialogue[cut...], policy: Self.policy).replies
            #expect(replies == expected, "cut at \(cut)")
        }
    }
}

/// `drain`: a shutdown reached a connection the registry left to finish DATA.
@Suite struct SessionDrainTests {
    @Test func betweenTransactionsItClosesWith421() {
        var s = Session(mode: .smtp, hostname: "mx", maxDataSize: 1000)
        _ = s.start()
        #expect(s.drain() == [.sendUncounted(.shuttingDown), .close])
    }

    @Test func inDataItWaitsForTheEnd() async {
        var s = Session(mode: .smtp, hostname: "mx", maxDataSize: 1000)
        _ = s.start()
        _ = await s.received(
            Array("EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<juan@example.com>\r\nDATA\r\n".utf8), policy: FakePolicy())
        #expect(s.drain() == [])
        // The end of the message then drains: the reply, the 421, the close.
        _ = await s.received(Array("Subject: x\r\n\r\nb\r\n.\r\n".utf8), policy: FakePolicy())
        let actions = await s.delivered(Reply(250, "2.0.0 queued"), policy: FakePolicy())
        #expect(actions.withoutNotes == [.send([Reply(250, "2.0.0 queued")]), .sendUncounted(.shuttingDown), .close])
    }
}
