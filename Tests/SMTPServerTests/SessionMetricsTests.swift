import CoreMetrics
import DurableFiles
import Foundation
import Instrumentation
import Logging
import MailLog
import Monitoring
import NIOCore
import NIOPosix
import Prometheus
import SMTPClient
import SMTPCore
import SMTPServer
import Testing

/// A policy that knows one domain and one user, and passes SPF as "none".
private struct OneDomainPolicy: SessionPolicy {
    func isLocal(domain: String) -> Bool { domain == "example.com" }
    func recipientExists(_ address: String) async -> RecipientCheck { address == "juan@example.com" ? .exists : .unknown }
    func authenticate(user: String, domain: String, password: String, session: SessionInfo) async -> AuthCheck { .rejected }
    func checkSender(_ address: String, session: SessionInfo) async -> SenderCheck { .accepted }
}

/// Takes every message, keeps nothing.
private struct DiscardingSink: MessageSink {
    let directory: String

    func newSpool() throws -> SpoolFile { try SpoolFile(creating: directory + "/spool-" + UUID().uuidString) }

    func accept(envelope: Envelope, session: SessionInfo, remoteAddress: String, spool: sending SpoolFile) async -> Reply {
        spool.discard()
        return Reply(250, "2.0.0 OK: queued as TEST")
    }
}

/// A server with its own metrics and traces, and a scripted client.
private struct Harness {
    let backends = MetricsBackends()
    let traces = TraceRegistry()
    var expvar: ExpvarStore { backends.expvar }
    let bound: BoundListener
    let serving: Task<Void, Never>

    init() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("smtpserver-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let listener = Listener(
            socket: .address(host: "127.0.0.1", port: 0),
            settings: ConnectionSettings(mode: .smtp, hostname: "mx.example.com", maxDataSize: 1 << 20),
            certificates: nil, policy: OneDomainPolicy(), sink: DiscardingSink(directory: directory),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), mailLog: try MailLog(.memory),
            metrics: backends.metrics, traces: traces)
        bound = try await listener.bind(group: MultiThreadedEventLoopGroup.singleton)
        let server = bound
        serving = Task { try? await server.serve() }
    }

    func connect() async throws -> ClientConnection {
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: bound.port)
        let (connection, greeting) = try await ClientConnection.connect(
            to: address, connectTimeout: .seconds(10), greetingTimeout: .seconds(10), sessionTimeout: .seconds(60))
        #expect(greeting.code == 220)
        return connection
    }

    /// Waits until `count` SMTP connections have finished (their traces close after the reply to QUIT).
    func waitForFinishedSessions(_ count: Int) async throws {
        for _ in 0..<500 {
            if (traces.families.first { $0.name == "SMTP.Conn" }?.finishedTotal ?? 0) >= count { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("sessions did not finish")
    }

    func stop() async {
        await bound.stopAccepting()
        serving.cancel()
    }
}

@Suite struct SessionMetricsTests {
    @Test func aScriptedSessionCountsCommandsRepliesAndTLS() async throws {
        let harness = try await Harness()
        let client = try await harness.connect()
        #expect(try await client.command("EHLO client.example.net", timeout: .seconds(10)).code == 250)
        #expect(try await client.command("XYZZY1234", timeout: .seconds(10)).code == 500)
        #expect(try await client.command("MAIL FROM:<ana@example.net>", timeout: .seconds(10)).code == 250)
        #expect(try await client.command("RCPT TO:<nobody@example.com>", timeout: .seconds(10)).code == 550)
        #expect(try await client.command("RCPT TO:<juan@example.com>", timeout: .seconds(10)).code == 250)
        #expect(try await client.command("DATA", timeout: .seconds(10)).code == 354)
        try await client.send(Array("Subject: hi\r\n\r\nthe body marker QWERTY\r\n.\r\n".utf8))
        #expect(try await client.readReply(timeout: .seconds(10)).code == 250)
        #expect(try await client.command("QUIT", timeout: .seconds(10)).code == 221)
        client.close()
        try await harness.waitForFinishedSessions(1)

        let expvar = harness.expvar
        let commands = "chasquid/smtpIn/commandCount"
        #expect(expvar.int(commands, "EHLO") == 1)
        #expect(expvar.int(commands, "MAIL") == 1)
        #expect(expvar.int(commands, "RCPT") == 2)
        #expect(expvar.int(commands, "DATA") == 1)
        #expect(expvar.int(commands, "unknown<\"XYZZY1\">") == 1)
        #expect(expvar.int(commands, "QUIT") == nil, "chasquid does not count QUIT")
        let codes = "chasquid/smtpIn/responseCodeCount"
        #expect(expvar.int(codes, "220") == nil, "chasquid does not count the greeting")
        #expect(expvar.int(codes, "250") == 4)
        #expect(expvar.int(codes, "354") == 1)
        #expect(expvar.int(codes, "500") == 1)
        #expect(expvar.int(codes, "550") == 1)
        #expect(expvar.int(codes, "221") == 1)
        #expect(expvar.int("chasquid/smtpIn/tlsCount", "plain") == 1)
        #expect(expvar.int("chasquid/smtpIn/tlsCount", "tls") == nil)

        // The same numbers in /metrics, under the converted names.
        let text = MetricsExposition.render(prometheusText: harness.backends.prometheus.emitToString())
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains(#"chasquid_smtpIn_commandCount{command="RCPT"} 2"#))
        #expect(lines.contains(#"chasquid_smtpIn_commandCount{command="unknown<\"XYZZY1\">"} 1"#))
        #expect(lines.contains(#"chasquid_smtpIn_responseCodeCount{code="250"} 4"#))
        #expect(lines.contains(#"chasquid_smtpIn_tlsCount{status="plain"} 1"#))
        #expect(lines.contains("chasquid_smtpIn_loopsDetected 0"))
        #expect(lines.contains(#"chasquid_smtp_in_session_duration_seconds_count{mode="SMTP"} 1"#))
        #expect(lines.contains("chasquid_smtp_in_open_connections 0.0"))
        await harness.stop()
    }

    @Test func theTraceShowsTheDialogueButNoCredentialsOrBody() async throws {
        let harness = try await Harness()
        let client = try await harness.connect()
        _ = try await client.command("EHLO client.example.net", timeout: .seconds(10))
        // Refused here (no TLS), but the line still reaches the trace code.
        _ = try await client.command("AUTH PLAIN AGp1YW4Ac2VjcmV0cGFzc3dvcmQ=", timeout: .seconds(10))
        _ = try await client.command("MAIL FROM:<ana@example.net>", timeout: .seconds(10))
        _ = try await client.command("RCPT TO:<juan@example.com>", timeout: .seconds(10))
        _ = try await client.command("DATA", timeout: .seconds(10))
        try await client.send(Array("Subject: hi\r\n\r\nthe body marker QWERTY\r\n.\r\n".utf8))
        _ = try await client.readReply(timeout: .seconds(10))
        _ = try await client.command("QUIT", timeout: .seconds(10))
        client.close()
        try await harness.waitForFinishedSessions(1)

        let traces = harness.traces.traces(family: "SMTP.Conn", .bucket(0))
        #expect(traces.count == 1)
        let events = traces.first?.events.map(\.message) ?? []
        let expected = [
            "< 220", "> EHLO client.example.net", "< 250", "> AUTH PLAIN (initial response not shown)",
            "> MAIL FROM:<ana@example.net>", "< 250", "> RCPT TO:<juan@example.com>", "< 250", "> DATA", "< 354",
            "< 250 2.0.0 OK: queued as TEST", "> QUIT", "< 221",
        ]
        var position = events.startIndex
        for prefix in expected {
            guard let found = events[position...].firstIndex(where: { $0.hasPrefix(prefix) }) else {
                Issue.record("no \"\(prefix)\" after event \(position) in \(events)")
                break
            }
            position = found + 1
        }
        let all = events.joined(separator: "\n")
        #expect(!all.contains("AGp1YW4Ac2VjcmV0cGFzc3dvcmQ="))
        #expect(!all.contains("secretpassword"))
        #expect(!all.contains("QWERTY"))
        await harness.stop()
    }

    @Test func anHTTPRequestCountsAsWrongProtocolNotAsACommand() async throws {
        let harness = try await Harness()
        let client = try await harness.connect()
        _ = try? await client.command("GET / HTTP/1.1", timeout: .seconds(10))
        client.close()
        try await harness.waitForFinishedSessions(1)
        #expect(harness.expvar.int("chasquid/smtpIn/wrongProtoCount", "GET") == 1)
        #expect(harness.expvar.int("chasquid/smtpIn/commandCount", "GET") == nil)
        await harness.stop()
    }

    /// Issue 13 §5: pipelined commands pass the same CR/LF guard as single
    /// ones, and a refused batch sends nothing at all (the next reply read
    /// is NOOP's, not HELO's).
    @Test func pipelinedCommandsWithALineBreakAreRefusedWhole() async throws {
        let harness = try await Harness()
        let client = try await harness.connect()
        await #expect(throws: ClientError.self) {
            try await client.sendCommands(["HELO client.example.net", "MAIL FROM:<a\r\nRCPT TO:<x@example.com>@b>"])
        }
        await #expect(throws: ClientError.self) { try await client.sendCommands(["NOOP", "NOOP\r"]) }
        #expect(try await client.command("NOOP", timeout: .seconds(10)) == Reply(250, "2.0.0 OK"))
        try await client.sendCommands(["HELO client.example.net", "NOOP"])
        #expect(try await client.readReply(timeout: .seconds(10)) == Reply(250, "mx.example.com"))
        #expect(try await client.readReply(timeout: .seconds(10)) == Reply(250, "2.0.0 OK"))
        client.close()
        await harness.stop()
    }
}
