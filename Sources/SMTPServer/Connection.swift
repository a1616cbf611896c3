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
    /// `haproxy_incoming`: every connection starts with a PROXY header
    /// (v1 or v2), whose source address is the client's.
    public var expectsProxyHeader: Bool

    public init(
        mode: ListenerMode, hostname: String, maxDataSize: Int, maxReceivedHeaders: Int = SMTPDefaults.maxReceivedHeaders,
        expectsProxyHeader: Bool = false
    ) {
        self.expectsProxyHeader = expectsProxyHeader
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
        clock: ConnectionClock, logBudget: ClientLogBudget? = nil
    ) {
        self.settings = settings
        self.policy = policy
        self.sink = sink
        self.facts = facts
        self.observer = SessionObserver(
            mode: settings.mode, remoteAddress: facts.remoteAddress, logger: logger, mailLog: mailLog,
            metrics: metrics, trace: trace, remoteIP: facts.remoteIP, logBudget: logBudget)
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

    /// What the loop keeps between events.
    private struct LoopState {
        var session: Session
        /// The spool of the message being received, and the first error writing it.
        var spool: SpoolFile?
        var spoolError: (any Error)?
        /// The idle timer counts from our last reply too: a client waiting
        /// for a slow post-data hook has sent nothing, and is not idle.
        var lastReply: ConnectionClock.Instant
        /// A failed read while this is set is a failed TLS handshake.
        var handshakeDue: Bool
        /// DATA ended after a shutdown began: the registry skipped this
        /// connection, so it drains itself once the transaction is over.
        var drainAfterData = false
    }

    private func serve(_ inbound: inout Inbound, _ outbound: Outbound, implicitTLS: Bool, id: Int) async throws {
        var state = LoopState(
            session: Session(
                mode: settings.mode, hostname: settings.hostname, maxDataSize: settings.maxDataSize,
                remoteIP: facts.remoteIP, maxReceivedHeaders: settings.maxReceivedHeaders),
            lastReply: clock.now, handshakeDue: implicitTLS)
        var actions = state.session.start(implicitTLS: implicitTLS, shuttingDown: registry.isShuttingDown)
        while try await perform(actions, &state, outbound, id: id) {
            if state.drainAfterData {
                state.drainAfterData = false
                actions = state.session.drain()
                continue
            }
            let event: SMTPInbound?
            do {
                event = try await inbound.next()
            } catch {
                if state.handshakeDue { observer.handshakeFailed(error) }
                // In DATA a broken connection ends the transaction; elsewhere it ends the session.
                guard case .data = state.session.state else { throw error }
                event = nil
            }
            // Only the end of a DATA transaction asks whether a shutdown began.
            if case .data = state.session.state, registry.isShuttingDown { state.session.shutdownBegan() }
            switch event {
            case nil:
                actions = state.session.inputEnded()
            case .bytes(let buffer):
                actions = await state.session.received(buffer.readableBytesView, policy: policy)
            case .tlsEstablished(let details):
                state.handshakeDue = false
                observer.tlsEstablished(details)
                actions = state.session.tlsEstablished(
                    serverName: details.serverName, version: details.version, cipherSuite: details.cipherSuite)
            case .timedOut:
                actions = state.session.timedOut(idle: state.lastReply.duration(to: clock.now))
            case .replyOverdue:
                // Queued behind a slow reply, it may be stale: our clock decides.
                let sinceReply = state.lastReply.duration(to: clock.now)
                actions = sinceReply >= SMTPDefaults.commandTimeout ? state.session.replyOverdue() : []
            }
        }
    }

    /// Performs the session's actions in order; false once it closes.
    private func perform(_ actions: [SessionAction], _ state: inout LoopState, _ outbound: Outbound, id: Int)
        async throws -> Bool
    {
        var actions = actions[...]
        while let action = actions.popFirst() {
            switch action {
            case .send(let replies):
                try await write(outbound, replies, counted: true)
                state.lastReply = clock.now
            case .sendUncounted(let reply):
                try await write(outbound, [reply], counted: false)
                state.lastReply = clock.now
            case .startTLS(let reply):
                observer.sent(reply, counted: true)
                try await outbound.write(.startTLS(ByteBuffer(bytes: reply.encodedBytes)))
                state.lastReply = clock.now
                state.handshakeDue = true
            case .openSpool(let headers):
                do {
                    state.spool = try sink.newSpool()
                    try state.spool?.append(headers)
                } catch {
                    state.spoolError = error
                }
            case .append(let bytes):
                guard let file = state.spool, state.spoolError == nil else { continue }
                do {
                    if file.fillsBuffer(adding: bytes.count) {
                        // This append writes to the file: on a file thread, not the event loop.
                        try await offloaded { () throws(FileError) in try file.append(bytes) }
                    } else {
                        try file.append(bytes)
                    }
                } catch {
                    state.spoolError = error
                }
            case .discardSpool:
                state.spool?.discard()
                (state.spool, state.spoolError) = (nil, nil)
            case .deliver(let envelope):
                // `deliver` is always last: the session waits for the outcome.
                actions = await deliver(envelope, &state)[...]
            case .close:
                return false
            case .note(.dataEnded):
                if registry.setInData(id, false) { state.drainAfterData = true }
            case .note(let note):
                observer.observe(note, registry: registry, connection: id)
            }
        }
        return true
    }

    /// Hands the spool to the sink, or tells the session it could not be written.
    private func deliver(_ envelope: Envelope, _ state: inout LoopState) async -> [SessionAction] {
        guard let file = state.spool, state.spoolError == nil else {
            let error = state.spoolError ?? MissingSpool()
            let storageFull = sink.spoolWriteFailed(error, remoteAddress: facts.remoteAddress)
            return await state.session.spoolFailed("\(error)", storageFull: storageFull, policy: policy)
        }
        state.spool = nil
        let reply = await sink.accept(
            envelope: envelope, session: state.session.info, remoteAddress: facts.remoteAddress, spool: file)
        if registry.isShuttingDown { state.session.shutdownBegan() }
        return await state.session.delivered(reply, policy: policy)
    }

    private struct MissingSpool: Error, CustomStringConvertible {
        var description: String { "no spool" }
    }

    private func write(_ outbound: Outbound, _ replies: [Reply], counted: Bool) async throws {
        var buffer = ByteBuffer()
        for reply in replies {
            buffer.writeBytes(reply.encodedBytes)
            observer.sent(reply, counted: counted)
        }
        try await outbound.write(.bytes(buffer))
    }
}
