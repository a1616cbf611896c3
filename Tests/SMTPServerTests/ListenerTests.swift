import DurableFiles
import Foundation
import Logging
import MailLog
import NIOCore
import NIOPosix
import SMTPClient
import SMTPCore
import SMTPServer
import Synchronization
import Testing

private struct NoDomainsPolicy: SessionPolicy {
    func isLocal(domain: String) -> Bool { false }
    func recipientExists(_ address: String) async -> RecipientCheck { .unknown }
    func authenticate(user: String, domain: String, password: String, session: SessionInfo) async -> AuthCheck { .rejected }
    func checkSender(_ address: String, session: SessionInfo) async -> SenderCheck { .accepted }
}

private struct RefusingSink: MessageSink {
    struct NoSpool: Error {}
    func newSpool() throws -> SpoolFile { throw NoSpool() }
    func accept(envelope: Envelope, session: SessionInfo, remoteAddress: String, spool: sending SpoolFile) async -> Reply {
        Reply(451, "4.3.0 not in this test")
    }
}

/// Keeps log messages, so a test can see what the listener said.
private final class CollectingLogHandler: LogHandler, Sendable {
    let messages = Mutex<[String]>([])
    var metadata: Logger.Metadata {
        get { [:] }
        set {}
    }
    var logLevel: Logger.Level {
        get { .trace }
        set {}
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { nil }
        set {}
    }
    func log(event: LogEvent) { messages.withLock { $0.append(event.message.description) } }
}

@Suite struct ListenerTests {
    struct InjectedFailure: Error, CustomStringConvertible {
        var description: String { "setsockopt: Permission denied (injected)" }
    }

    /// The failure seen as the mail user (EACCES from setsockopt) ended the
    /// whole listener; now it closes that one connection and is logged.
    @Test func failedConnectionSetupClosesOnlyThatConnection() async throws {
        let attempts = Mutex(0)
        let handler = CollectingLogHandler()
        var listener = Listener(
            socket: .address(host: "127.0.0.1", port: 0),
            settings: ConnectionSettings(mode: .smtp, hostname: "mx.example.com", maxDataSize: 1 << 20),
            certificates: nil, policy: NoDomainsPolicy(), sink: RefusingSink(),
            logger: Logger(label: "test", factory: { _ in handler }), mailLog: try MailLog(.memory))
        listener.prepareConnection = { channel in
            let attempt = attempts.withLock { count in
                count += 1
                return count
            }
            if attempt == 1 { throw InjectedFailure() }
            try Listener.setNoDelay(channel)
        }
        let bound = try await listener.bind(group: MultiThreadedEventLoopGroup.singleton)
        let serving = Task { try await bound.serve() }
        defer { serving.cancel() }
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: bound.port)

        // The first connection is closed without a greeting.
        await #expect(throws: (any Error).self) {
            _ = try await ClientConnection.connect(
                to: address, connectTimeout: .seconds(10), greetingTimeout: .seconds(10), sessionTimeout: .seconds(30))
        }
        // The next one is served.
        let (connection, greeting) = try await ClientConnection.connect(
            to: address, connectTimeout: .seconds(10), greetingTimeout: .seconds(10), sessionTimeout: .seconds(30))
        #expect(greeting.code == 220)
        let reply = try await connection.command("NOOP", timeout: .seconds(10))
        #expect(reply.code == 250)
        connection.close()
        #expect(attempts.withLock { $0 } == 2)
        let logged = handler.messages.withLock { $0 }
        #expect(logged.contains { $0.contains("setting up the connection failed") && $0.contains("injected") })
        await bound.stopAccepting()
    }

    /// Weak references to the accepted channels.
    final class Accepted: Sendable {
        struct Weak: @unchecked Sendable { weak var channel: (any Channel)? }
        let channels = Mutex<[Weak]>([])
        var alive: Int { channels.withLock { $0.filter { $0.channel != nil }.count } }
    }

    /// A closed connection is freed at once: the 20-minute connection
    /// deadline held every channel (and its buffers) until it fired, so
    /// memory grew with the number of past sessions (issue 13 §10).
    @Test func closedConnectionsAreFreedNotHeldByTheirDeadline() async throws {
        let accepted = Accepted()
        var listener = Listener(
            socket: .address(host: "127.0.0.1", port: 0),
            settings: ConnectionSettings(mode: .smtp, hostname: "mx.example.com", maxDataSize: 1 << 20),
            certificates: nil, policy: NoDomainsPolicy(), sink: RefusingSink(),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), mailLog: try MailLog(.memory))
        listener.prepareConnection = { channel in
            accepted.channels.withLock { $0.append(Accepted.Weak(channel: channel)) }
            try Listener.setNoDelay(channel)
        }
        let bound = try await listener.bind(group: MultiThreadedEventLoopGroup.singleton)
        let serving = Task { try await bound.serve() }
        defer { serving.cancel() }
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: bound.port)

        let sessions = 20
        for _ in 0..<sessions {
            let (connection, greeting) = try await ClientConnection.connect(
                to: address, connectTimeout: .seconds(10), greetingTimeout: .seconds(10), sessionTimeout: .seconds(30))
            #expect(greeting.code == 220)
            _ = try await connection.command("QUIT", timeout: .seconds(10))
            connection.close()
        }
        #expect(accepted.channels.withLock { $0.count } == sessions)
        // The server side closes after QUIT; give its event loop a moment.
        let deadline = ContinuousClock.now + .seconds(20)
        while accepted.alive > 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(accepted.alive == 0, "\(accepted.alive) of \(sessions) closed channels still held")
        await bound.stopAccepting()
    }
}
