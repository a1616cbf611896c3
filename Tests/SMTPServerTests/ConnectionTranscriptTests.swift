import DurableFiles
import Foundation
import Instrumentation
import Logging
import MailLog
import Monitoring
import NIOCore
import NIOEmbedded
import SMTPCore
import Synchronization
import TestSupport
import Testing

@testable import SMTPServer

/// A policy that knows one domain and one user.
private struct TranscriptPolicy: SessionPolicy {
    func isLocal(domain: String) -> Bool { domain == "example.com" }
    func recipientExists(_ address: String) async -> RecipientCheck { address == "juan@example.com" ? .exists : .unknown }
    func authenticate(user: String, domain: String, password: String, session: SessionInfo) async -> AuthCheck { .rejected }
    func checkSender(_ address: String, session: SessionInfo) async -> SenderCheck { .accepted }
}

/// Keeps what it is given, to check what reached the spool.
private final class KeepingSink: MessageSink, Sendable {
    let directory: String
    let messages = Mutex<[[UInt8]]>([])

    init() {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("transcript-\(UUID())").path
        try! FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func newSpool() throws -> SpoolFile { try SpoolFile(creating: directory + "/spool-" + UUID().uuidString) }

    func accept(envelope: Envelope, session: SessionInfo, remoteAddress: String, spool: sending SpoolFile) async -> Reply {
        defer { spool.discard() }
        do {
            let data = try spool.contents()
            messages.withLock { $0.append(data) }
            return Reply(250, "2.0.0 OK: queued")
        } catch {
            return Reply(451, "4.3.0 \(error)")
        }
    }
}

/// One `Connection` over an `NIOAsyncTestingChannel`: the test plays the
/// channel handler's part (bytes, TLS and idle events in; writes out).
private struct Transcript {
    let channel: NIOAsyncTestingChannel
    let clock = TestClock()
    let sink = KeepingSink()
    let finished: Task<Void, Never>

    init(implicitTLS: Bool = false) async throws {
        let channel = NIOAsyncTestingChannel()
        self.channel = channel
        let wrapped = try await channel.testingEventLoop.executeInContext {
            try NIOAsyncChannel<SMTPInbound, SMTPOutbound>(wrappingChannelSynchronously: channel)
        }
        let connection = Connection(
            settings: ConnectionSettings(mode: implicitTLS ? .submissionTLS : .smtp, hostname: "mx.example.com", maxDataSize: 1 << 20),
            policy: TranscriptPolicy(), sink: sink, facts: ConnectionFacts(remoteAddress: "192.0.2.1:1234", remoteIP: "192.0.2.1"),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), mailLog: try MailLog(.memory),
            registry: ConnectionRegistry(), metrics: MetricsBackends().metrics, trace: .disabled, clock: clock)
        finished = Task { await connection.run(wrapped, implicitTLS: implicitTLS) }
    }

    func send(_ text: String) async throws { try await send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeInbound(SMTPInbound.bytes(ByteBuffer(bytes: bytes)))
    }

    func event(_ event: SMTPInbound) async throws { try await channel.writeInbound(event) }

    /// The next write, as text, and whether it was the STARTTLS switch.
    func nextWrite() async throws -> (text: String, startsTLS: Bool) {
        switch try await channel.waitForOutboundWrite(as: SMTPOutbound.self) {
        case .bytes(let buffer): (String(buffer: buffer), false)
        case .startTLS(let buffer): (String(buffer: buffer), true)
        }
    }

    /// Reads writes until `count` final reply lines (`NNN ` ones) have come.
    func replies(_ count: Int) async throws -> [String] {
        var lines: [String] = []
        while lines.filter({ $0.count >= 4 && Array($0)[3] == " " }).count < count {
            let text = try await nextWrite().text
            lines += text.split(separator: "\r\n", omittingEmptySubsequences: true).map(String.init)
        }
        return lines.filter { $0.count >= 4 && Array($0)[3] == " " }
    }

    func codes(_ count: Int) async throws -> [String] { try await replies(count).map { String($0.prefix(3)) } }

    /// The connection closes the channel and its loop ends.
    func waitForClose() async throws {
        await finished.value
        #expect(!channel.isActive)
    }
}

@Suite struct ConnectionTranscriptTests {
    @Test func greetingThenPipelinedCommandsAnsweredInOneWrite() async throws {
        let t = try await Transcript()
        #expect(try await t.nextWrite().text == "220 mx.example.com ESMTP chasquid\r\n")
        try await t.send("EHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<juan@example.com>\r\nNOOP\r\n")
        let write = try await t.nextWrite().text
        let finals = write.split(separator: "\r\n").filter { Array($0)[3] == " " }.map { String($0.prefix(3)) }
        #expect(finals == ["250", "250", "250", "250"], "\(write)")
        try await t.send("QUIT\r\n")
        #expect(try await t.codes(1) == ["221"])
        try await t.waitForClose()
    }

    /// Plain text pipelined after STARTTLS, in the same buffer, is never read
    /// as commands: after the handshake only what comes over TLS is answered.
    @Test func startTLSDropsPipelinedPlaintext() async throws {
        let t = try await Transcript()
        _ = try await t.nextWrite()
        try await t.send("EHLO c\r\n")
        _ = try await t.replies(1)
        try await t.send("STARTTLS\r\nMAIL FROM:<evil@remote.example>\r\nRCPT TO:<juan@example.com>\r\n")
        let switchWrite = try await t.nextWrite()
        #expect(switchWrite.startsTLS)
        #expect(switchWrite.text.hasPrefix("220 2.0.0"))
        // More plain text during the handshake is dropped too.
        try await t.send("DATA\r\n")
        try await t.event(.tlsEstablished(TLSDetails(serverName: "mx.example.com", version: "TLS-1.3")))
        try await t.send("RCPT TO:<juan@example.com>\r\n")
        // No sender was given over TLS: the pipelined MAIL was not taken.
        #expect(try await t.replies(1).first?.hasPrefix("503 5.5.1 Sender not yet given") == true)
        try await t.send("QUIT\r\n")
        #expect(try await t.codes(1) == ["221"])
        try await t.waitForClose()
    }

    /// Every command split at every byte boundary gets the same replies.
    @Test func commandsFragmentedAtEveryBoundary() async throws {
        let dialogue = "EHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<juan@example.com>\r\nRSET\r\n"
        let bytes = Array(dialogue.utf8)
        for cut in 1..<bytes.count {
            let t = try await Transcript()
            _ = try await t.nextWrite()
            try await t.send(Array(bytes[..<cut]))
            try await t.send(Array(bytes[cut...]))
            #expect(try await t.codes(4) == ["250", "250", "250", "250"], "cut at \(cut)")
            try await t.send("QUIT\r\n")
            _ = try await t.replies(1)
            try await t.waitForClose()
        }
    }

    /// A message sent a byte at a time reaches the spool whole, with our
    /// `Received:` first and the dots unstuffed.
    @Test func dataOneByteAtATime() async throws {
        let t = try await Transcript()
        _ = try await t.nextWrite()
        try await t.send("EHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<juan@example.com>\r\nDATA\r\n")
        #expect(try await t.codes(4) == ["250", "250", "250", "354"])
        for byte in Array("Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nNOOP\r\n".utf8) { try await t.send([byte]) }
        #expect(try await t.codes(2) == ["250", "250"])
        let stored = String(decoding: t.sink.messages.withLock { $0 }.first ?? [], as: UTF8.self)
        #expect(stored.hasPrefix("Received: from c ([192.0.2.1])\n\tby mx.example.com (chasquid) with ESMTP\n"), "\(stored)")
        #expect(stored.hasSuffix("\nSubject: hi\n\n.dot\nbody\n"), "\(stored)")
        try await t.send("QUIT\r\n")
        _ = try await t.replies(1)
        try await t.waitForClose()
    }

    /// An idle event before the command timeout (counted from our last
    /// reply) is ignored; one after it gets the 421 and the close.
    @Test func idleTimeoutCountsFromTheLastReply() async throws {
        let t = try await Transcript()
        _ = try await t.nextWrite()
        t.clock.advance(by: .seconds(30))
        try await t.event(.timedOut)
        try await t.send("NOOP\r\n")
        #expect(try await t.codes(1) == ["250"], "the early idle event was ignored")
        t.clock.advance(by: SMTPDefaults.commandTimeout)
        try await t.event(.timedOut)
        #expect(try await t.replies(1) == ["421 4.4.2 Timed out, bye"])
        try await t.waitForClose()
    }

    @Test func timeoutDuringDataCloses() async throws {
        let t = try await Transcript()
        _ = try await t.nextWrite()
        try await t.send("EHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<juan@example.com>\r\nDATA\r\nSubject: x\r\n")
        _ = try await t.replies(4)
        try await t.event(.timedOut)
        #expect(try await t.replies(1) == ["554 5.4.0 Error reading DATA: timeout"])
        try await t.waitForClose()
        #expect(t.sink.messages.withLock { $0 }.isEmpty)
    }

    /// On port 465 nothing is read and nothing sent before the handshake.
    @Test func implicitTLSGreetsAfterTheHandshake() async throws {
        let t = try await Transcript(implicitTLS: true)
        try await t.send("EHLO early\r\n")
        try await t.event(.tlsEstablished(TLSDetails(serverName: "smtp.example.com", version: "TLS-1.3")))
        #expect(try await t.nextWrite().text == "220 smtp.example.com ESMTP chasquid\r\n")
        try await t.send("EHLO c\r\n")
        let ehlo = try await t.replies(1)
        #expect(ehlo.first?.hasPrefix("250 HELP") == true)
        try await t.send("QUIT\r\n")
        _ = try await t.replies(1)
        try await t.waitForClose()
    }

    @Test func lineTooLongClosesUncounted() async throws {
        let t = try await Transcript()
        _ = try await t.nextWrite()
        try await t.send("NOOP\r\n" + String(repeating: "x", count: 2000))
        #expect(try await t.replies(2) == ["250 2.0.0 OK", "554 error reading command: line too long"])
        try await t.waitForClose()
    }
}
