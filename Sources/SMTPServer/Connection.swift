import DurableFiles
import GoCompat
import Instrumentation
import Logging
import MailLog
import Normalization
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

/// One client connection: reads bytes, frames commands, drives the
/// `Session`, streams DATA to the spool. All protocol decisions are the
/// session's; this only moves bytes and performs its steps.
struct Connection {
    typealias Inbound = NIOAsyncChannelInboundStream<SMTPInbound>.AsyncIterator
    typealias Outbound = NIOAsyncChannelOutboundWriter<SMTPOutbound>

    let settings: ConnectionSettings
    let policy: any SessionPolicy
    let sink: any MessageSink
    let facts: ConnectionFacts
    let logger: Logger
    let mailLog: MailLog
    let registry: ConnectionRegistry
    let metrics: ServerMetrics
    let trace: Trace

    /// Maximum bytes of the header block kept in memory for the checks.
    static let headerLimit = 1 << 20

    func run(_ channel: NIOAsyncChannel<SMTPInbound, SMTPOutbound>, implicitTLS: Bool) async {
        let id = registry.register(channel.channel)
        let started = ContinuousClock.now
        metrics.adjust(MetricCatalog.openConnections, by: 1)
        trace.log("\(settings.mode.rawValue) connection from \(facts.remoteAddress)")
        defer {
            registry.unregister(id)
            metrics.adjust(MetricCatalog.openConnections, by: -1)
            metrics.record(MetricCatalog.smtpSessionDuration, settings.mode.rawValue, duration: .now - started)
            trace.log("closed")
            trace.finish()
        }
        if registry.isShuttingDown {
            try? await channel.channel.writeAndFlush(SMTPOutbound.bytes(ByteBuffer(string: Reply.shuttingDown.encoded)))
            try? await channel.channel.close()
            return
        }
        do {
            try await channel.executeThenClose { inbound, outbound in
                var iterator = inbound.makeAsyncIterator()
                try await Trace.$current.withValue(trace) {
                    try await serve(&iterator, outbound, implicitTLS: implicitTLS, id: id)
                }
            }
        } catch {
            trace.log("connection error: \(error)")
            logger.debug("SMTP.Conn \(facts.remoteAddress): closed: \(error)")
        }
    }

    private func serve(_ inbound: inout Inbound, _ outbound: Outbound, implicitTLS: Bool, id: Int) async throws {
        // The idle timer counts from our last reply too: a client waiting
        // for a slow post-data hook has sent nothing, and is not idle.
        var lastReply = ContinuousClock.now
        func respond(_ replies: [Reply], counted: Bool = true) async throws {
            try await send(outbound, replies, counted: counted)
            lastReply = .now
        }
        // Reads the next event; a failure while a handshake is due is a
        // failed TLS handshake.
        var handshakeDue = implicitTLS
        func next() async throws -> SMTPInbound? {
            do {
                return try await inbound.next()
            } catch {
                if handshakeDue {
                    metrics.count(MetricCatalog.tlsHandshakeFailures, settings.mode.rawValue)
                    trace.error("TLS handshake failed: \(error)")
                }
                throw error
            }
        }
        var session = Session(
            mode: settings.mode, hostname: settings.hostname, maxDataSize: settings.maxDataSize, onTLS: false,
            remoteIP: facts.remoteIP)
        var tlsVersion: String?
        if implicitTLS {
            // Nothing is read before the handshake completes on port 465.
            while true {
                guard let event = try await next() else { return }
                if case .tlsEstablished(let details) = event {
                    session.tlsEstablished(serverName: details.serverName)
                    tlsVersion = details.version
                    handshakeDue = false
                    trace.log("TLS established: \(details.version), server name \(details.serverName ?? "(none)")")
                    break
                }
                if case .timedOut = event { return }
            }
        }
        // chasquid does not count the greeting among the response codes.
        try await respond([session.greeting], counted: false)

        var framer = LineFramer()
        var awaitingTLS = false
        var pendingReplies: [Reply] = []
        while true {
            while !awaitingTLS, let line = framer.next() {
                guard case .line(let bytes) = line else {
                    // chasquid writes this one uncounted, as it does the
                    // timeout and shutdown replies.
                    try await respond(pendingReplies)
                    try await respond([Reply(554, "error reading command: line too long")], counted: false)
                    return
                }
                // An AUTH response is a credential: never parse or log it as a command.
                let isAuthResponse = session.isAwaitingAuthResponse
                let command = isAuthResponse ? Command(verb: "AUTH", argument: "") : Command(line: bytes)
                var step: SessionStep
                if isAuthResponse {
                    trace.log("> (AUTH response not shown)")
                    step = await session.handleAuthResponse(bytes, policy: policy)
                } else {
                    trace.log("> " + command.traceText)
                    count(command)
                    step = await session.handle(command, policy: policy)
                }
                let unaccounted = step
                step = session.account(step)
                logOutcome(command: command, step: unaccounted, accounted: step, session: session)
                logAuth(step, session: session)
                switch step {
                case .reply(let reply), .authChallenge(let reply):
                    pendingReplies.append(reply)
                case .close(let reply):
                    pendingReplies.append(reply)
                    try await respond(pendingReplies)
                    return
                case .startTLS(let reply):
                    try await respond(pendingReplies)
                    pendingReplies = []
                    recordSent(reply)
                    try await outbound.write(.startTLS(ByteBuffer(string: reply.encoded)))
                    // Bytes pipelined after STARTTLS came in plain text: drop them [SEC].
                    framer.discardPending()
                    awaitingTLS = true
                    handshakeDue = true
                case .readData(let reply):
                    pendingReplies.append(reply)
                    try await respond(pendingReplies)
                    pendingReplies = []
                    metrics.count(MetricCatalog.incomingTLSCount, tlsVersion == nil ? "plain" : "tls")
                    registry.setInData(id, true)
                    let (outcome, remaining) = await readData(
                        initial: framer.takeRemaining(), inbound: &inbound, session: session, tlsVersion: tlsVersion)
                    registry.setInData(id, false)
                    let received = session.dataReceived(outcome)
                    let after = session.account(received)
                    logOutcome(command: Command(verb: "DATA", argument: ""), step: received, accounted: after, session: session)
                    switch after {
                    case .close(let reply):
                        try await respond([reply])
                        return
                    case .reply(let reply), .authChallenge(let reply), .readData(let reply), .startTLS(let reply):
                        pendingReplies.append(reply)
                    }
                    if registry.isShuttingDown {
                        // The transaction is done; now this connection drains too.
                        try await respond(pendingReplies)
                        try await respond([Reply.shuttingDown], counted: false)
                        return
                    }
                    framer.append(remaining)
                }
            }
            // Pipelining: replies go out together once the buffered commands are done.
            if !pendingReplies.isEmpty {
                try await respond(pendingReplies)
                pendingReplies = []
            }
            guard let event = try await next() else { return }
            switch event {
            case .bytes(let buffer):
                // Between STARTTLS and the end of the handshake, anything that
                // reaches us was sent in plain text; it is never a command.
                if !awaitingTLS { framer.append(buffer.readableBytesView) }
            case .tlsEstablished(let details):
                awaitingTLS = false
                handshakeDue = false
                trace.log("TLS established: \(details.version), server name \(details.serverName ?? "(none)")")
                framer.discardPending()
                session.tlsEstablished(serverName: details.serverName)
                tlsVersion = details.version
            case .timedOut:
                if ContinuousClock.now - lastReply < SMTPDefaults.commandTimeout { continue }
                trace.error("timed out waiting for a command")
                try? await respond([Reply(421, "4.4.2 Timed out, bye")], counted: false)
                return
            }
        }
    }

    /// `<ip:port> auth succeeded for <user>@<domain>` / `auth failed for …`.
    private func logAuth(_ step: SessionStep, session: Session) {
        guard case .reply(let reply) = step, reply.code == 235 || reply.code == 535,
            let identity = session.lastAuthIdentity
        else { return }
        let user = session.info.authenticatedAs ?? identity
        mailLog.auth(remote: facts.remoteAddress, user: user, succeeded: reply.code == 235)
    }

    /// A reply about to be sent: counted by code, and traced.
    private func recordSent(_ reply: Reply) {
        metrics.count(MetricCatalog.responseCodeCount, String(reply.code))
        if reply.isError {
            trace.error("< \(reply.code) \(reply.text)")
        } else {
            trace.log("< \(reply.code) \(reply.text)")
        }
    }

    /// chasquid counts every command but QUIT, and HTTP verbs apart.
    private func count(_ command: Command) {
        if Command.httpVerbs.contains(command.verb) {
            metrics.count(MetricCatalog.wrongProtoCount, command.verb)
        } else if Command.knownVerbs.contains(command.verb) {
            if command.verb != "QUIT" { metrics.count(MetricCatalog.commandCount, command.verb) }
        } else {
            // The label comes from the client: bounded.
            metrics.count(
                MetricCatalog.commandCount, clientLabel: command.reportedVerb, overflow: Command.unknownVerbOverflow)
        }
    }

    private func send(_ outbound: Outbound, _ replies: [Reply], counted: Bool) async throws {
        guard !replies.isEmpty else { return }
        var buffer = ByteBuffer()
        for reply in replies {
            buffer.writeString(reply.encoded)
            if counted {
                recordSent(reply)
            } else {
                trace.log("< \(reply.code) \(reply.text)")
            }
        }
        try await outbound.write(.bytes(buffer))
    }

    /// The fail2ban contract (COMPAT.md §11.5): failed commands are logged as
    /// `SMTP.Conn <ip>:<port>: error: <CMD> failed: <code>  <text>`. The
    /// error that uses up the budget is logged too, before `too many errors`,
    /// as chasquid does, although the client gets the 421 instead.
    private func logOutcome(command: Command, step: SessionStep, accounted: SessionStep, session: Session) {
        let reply = Self.reply(of: step)
        guard reply.isError else { return }
        let prefix = "SMTP.Conn \(facts.remoteAddress): error:"
        if Command.httpVerbs.contains(command.verb) {
            logger.info("\(prefix) http command, closing connection")
        } else {
            // Go-quoted, without the outer quotes (`unknown<\"X\">`).
            logger.info("\(prefix) \(goQuotedInner("\(command.reportedVerb) failed: \(reply.code)  \(reply.text)"))")
            if let rejection = session.rejection {
                mailLog.rejected(
                    remote: facts.remoteAddress, from: rejection.from, to: rejection.to, reason: rejection.reason)
            }
        }
        if Self.reply(of: accounted) != reply {
            trace.error("too many errors, breaking connection")
            logger.info("\(prefix) too many errors, breaking connection")
        }
    }

    private static func reply(of step: SessionStep) -> Reply {
        switch step {
        case .reply(let r), .close(let r), .startTLS(let r), .readData(let r), .authChallenge(let r): r
        }
    }

    /// Reads the DATA block into a spool, checks it, and hands it to the sink.
    /// Returns the outcome and the bytes that followed the final dot.
    private func readData(
        initial: [UInt8], inbound: inout Inbound, session: Session, tlsVersion: String?
    ) async -> (Session.DataOutcome, [UInt8]) {
        guard let envelope = session.envelope else { return (.processed(Reply(503, "5.5.1 Sender not yet given")), []) }
        var spool: SpoolFile?
        var storageError: String?
        do {
            let file = try sink.newSpool()
            var trace = envelope.spf.map { TraceHeaders.spf($0, serverName: session.info.serverName) } ?? ""
            trace += TraceHeaders.received(
                session: session.info, remoteIP: facts.remoteIP, tlsVersion: tlsVersion, envelopeFrom: envelope.from)
            try file.append(Array(trace.utf8))
            spool = file
        } catch {
            storageError = "\(error)"
        }
        var decoder = DataDecoder(maxSize: settings.maxDataSize)
        var header = HeaderCollector(limit: Self.headerLimit)
        var sawData = false
        var chunk = initial
        while true {
            for event in decoder.feed(chunk) {
                switch event {
                case .data(let bytes):
                    sawData = true
                    header.feed(bytes)
                    if let file = spool, storageError == nil {
                        do { try file.append(bytes) } catch { storageError = "\(error)" }
                    }
                case .bareLineEnding:
                    spool?.discard()
                    return (.bareLineEnding, [])
                case .end(let overLimit, let remaining):
                    if overLimit {
                        spool?.discard()
                        return (.tooBig, remaining)
                    }
                    guard let file = spool, storageError == nil else {
                        spool?.discard()
                        return (.processed(Reply(451, "4.3.0 Failed to queue message: \(storageError ?? "no spool")")), remaining)
                    }
                    if let refusal = check(header: header.bytes, messageIsEmpty: !sawData) {
                        file.discard()
                        return (.processed(refusal), remaining)
                    }
                    let reply = await sink.accept(
                        envelope: envelope, session: session.info, remoteAddress: facts.remoteAddress, spool: file)
                    return (.processed(reply), remaining)
                }
            }
            guard let event = try? await inbound.next() else {
                spool?.discard()
                trace.error("connection lost during DATA")
                return (.readError("connection closed"), [])
            }
            switch event {
            case .bytes(let buffer): chunk = Array(buffer.readableBytesView)
            case .timedOut:
                spool?.discard()
                return (.readError("timeout"), [])
            case .tlsEstablished:
                chunk = []
            }
        }
    }

    /// The header checks: a parsable header block, and not too many hops.
    private func check(header: [UInt8], messageIsEmpty: Bool) -> Reply? {
        if messageIsEmpty { return Reply(554, "5.6.0 Error parsing message: empty message") }
        // A message that starts with a blank line has no headers, which is fine.
        if header.isEmpty { return nil }
        // A header block cut at the limit may end mid-line; check whole lines only.
        var block = header
        if header.count > Self.headerLimit, let lastNewline = block.lastIndex(of: UInt8(ascii: "\n")) {
            block.removeSubrange((lastNewline + 1)...)
        }
        do {
            let result = try HeaderCheck.check(block)
            if result.receivedCount > settings.maxReceivedHeaders {
                metrics.count(MetricCatalog.loopsDetected)
                trace.error("loop detected: \(result.receivedCount) Received headers")
                return Reply(554, "5.4.6 Loop detected (\(settings.maxReceivedHeaders) hops)")
            }
        } catch {
            return Reply(554, "5.6.0 Error parsing message: \(error)")
        }
        return nil
    }
}
