import DurableFiles
import Instrumentation
import Logging
import MailLog
import NIOCore
import SMTPCore

/// Per-listener settings for the connections it accepts.
public struct ConnectionSettings: Sendable {
    public var mode: ListenerMode
    public var hostname: String
    public var maxDataSize: Int
    public var maxReceivedHeaders: Int

    public init(mode: ListenerMode, hostname: String, maxDataSize: Int, maxReceivedHeaders: Int = SMTPDefaults.maxReceivedHeaders) {
        self.mode = mode
        self.hostname = hostname
        self.maxDataSize = maxDataSize
        self.maxReceivedHeaders = maxReceivedHeaders
    }
}

/// One client connection: moves bytes between the channel and the
/// `Session`, and performs the session's actions (writes, TLS, the spool,
/// delivery). Every protocol decision is the session's.
struct Connection<ConnectionClock: Clock> where ConnectionClock.Duration == Duration {
    typealias Inbound = NIOAsyncChannelInboundStream<SMTPInbound>.AsyncIterator
    typealias Outbound = NIOAsyncChannelOutboundWriter<SMTPOutbound>

    let settings: ConnectionSettings
    let policy: any SessionPolicy
    let sink: any MessageSink
    let facts: ConnectionFacts
    let observer: SessionObserver
    let registry: ConnectionRegistry
    let clock: ConnectionClock

    init(
        settings: ConnectionSettings, policy: any SessionPolicy, sink: any MessageSink, facts: ConnectionFacts,
        logger: Logger, mailLog: MailLog, registry: ConnectionRegistry, metrics: ServerMetrics, trace: Trace,
        clock: ConnectionClock
    ) {
        self.settings = settings
        self.policy = policy
        self.sink = sink
        self.facts = facts
        self.observer = SessionObserver(
            mode: settings.mode, remoteAddress: facts.remoteAddress, logger: logger, mailLog: mailLog,
            metrics: metrics, trace: trace)
        self.registry = registry
        self.clock = clock
    }

    func run(_ channel: NIOAsyncChannel<SMTPInbound, SMTPOutbound>, implicitTLS: Bool) async {
        let id = registry.register(channel.channel)
        let started = clock.now
        observer.opened()
        defer {
            registry.unregister(id)
            observer.closed(after: started.duration(to: clock.now))
        }
        do {
            try await channel.executeThenClose { inbound, outbound in
                var iterator = inbound.makeAsyncIterator()
                try await Trace.$current.withValue(observer.trace) {
                    try await serve(&iterator, outbound, implicitTLS: implicitTLS, id: id)
                }
            }
        } catch {
            observer.connectionError(error)
        }
    }

    /// The spool of the message being received, and the first error writing it.
    private struct SpoolState {
        var file: SpoolFile?
        var error: String?
    }

    private func serve(_ inbound: inout Inbound, _ outbound: Outbound, implicitTLS: Bool, id: Int) async throws {
        var session = Session(
            mode: settings.mode, hostname: settings.hostname, maxDataSize: settings.maxDataSize,
            remoteIP: facts.remoteIP, maxReceivedHeaders: settings.maxReceivedHeaders)
        var actions = session.start(implicitTLS: implicitTLS, shuttingDown: registry.isShuttingDown)
        var spool = SpoolState()
        var lastReply = clock.now
        var handshakeDue = implicitTLS
        while true {
            var index = 0
            while index < actions.count {
                let action = actions[index]
                index += 1
                switch action {
                case .send(let replies):
                    try await write(outbound, replies, counted: true)
                    lastReply = clock.now
                case .sendUncounted(let reply):
                    try await write(outbound, [reply], counted: false)
                    lastReply = clock.now
                case .startTLS(let reply):
                    observer.sent(reply, counted: true)
                    try await outbound.write(.startTLS(ByteBuffer(string: reply.encoded)))
                    lastReply = clock.now
                    handshakeDue = true
                case .openSpool(let headers):
                    do {
                        spool.file = try sink.newSpool()
                        try spool.file?.append(headers)
                    } catch {
                        spool.error = "\(error)"
                    }
                case .append(let bytes):
                    guard let file = spool.file, spool.error == nil else { continue }
                    do { try file.append(bytes) } catch { spool.error = "\(error)" }
                case .discardSpool:
                    spool.file?.discard()
                    spool = SpoolState()
                case .deliver(let envelope):
                    if registry.isShuttingDown { session.shutdownBegan() }
                    if let file = spool.file, spool.error == nil {
                        spool = SpoolState()
                        let reply = await sink.accept(
                            envelope: envelope, session: session.info, remoteAddress: facts.remoteAddress, spool: file)
                        if registry.isShuttingDown { session.shutdownBegan() }
                        actions += await session.delivered(reply, policy: policy)
                    } else {
                        actions += await session.spoolFailed(spool.error ?? "no spool", policy: policy)
                    }
                case .close:
                    return
                case .note(let note):
                    observer.observe(note, registry: registry, connection: id)
                }
            }
            let event: SMTPInbound?
            do {
                event = try await inbound.next()
            } catch {
                if handshakeDue { observer.handshakeFailed(error) }
                // In DATA a broken connection ends the transaction; elsewhere it ends the session.
                guard case .data = session.state else { throw error }
                event = nil
            }
            if registry.isShuttingDown { session.shutdownBegan() }
            switch event {
            case nil:
                actions = session.inputEnded()
            case .bytes(let buffer):
                actions = await session.received(buffer.readableBytesView, policy: policy)
            case .tlsEstablished(let details):
                handshakeDue = false
                observer.tlsEstablished(details)
                actions = session.tlsEstablished(serverName: details.serverName, version: details.version)
            case .timedOut:
                actions = session.timedOut(idle: lastReply.duration(to: clock.now))
            }
        }
    }

    private func write(_ outbound: Outbound, _ replies: [Reply], counted: Bool) async throws {
        var buffer = ByteBuffer()
        for reply in replies {
            buffer.writeString(reply.encoded)
            observer.sent(reply, counted: counted)
        }
        try await outbound.write(.bytes(buffer))
    }
}
