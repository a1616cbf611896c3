import Foundation

/// One SMTP session, from greeting to close (RFC 5321, COMPAT.md §12), as a
/// state machine with no I/O.
///
/// The connection reports events (bytes received, TLS up, a timeout, the
/// end of input, the outcome of a delivery) and performs the actions each
/// one returns. Every reply, its order, the error budget, the DATA checks and
/// the trace headers are decided here; the connection only moves bytes.
public struct Session: Sendable {
    /// Where an AUTH exchange stands: the next line is this response.
    public enum AuthStep: Equatable, Sendable {
        case plain
        case loginUser
        case loginPassword(user: String)
    }

    /// A DATA block being received: the decoder, the header kept for the
    /// checks, and whether any data came at all.
    public struct DataTransfer: Sendable {
        public var envelope: Envelope
        var decoder: DataDecoder
        var header = HeaderCollector(limit: MessageChecks.headerLimit)
        var sawData = false
    }

    public enum State: Sendable {
        /// Not started: `start` sends the greeting.
        case greeting
        /// Implicit TLS (port 465): nothing is read until the handshake ends.
        case awaitingTLS
        /// Commands, with no transaction.
        case ready
        /// MAIL accepted; no recipient yet.
        case mail(Envelope)
        /// At least one recipient accepted.
        case rcpt(Envelope)
        /// A 334 was sent; the next line is an AUTH response. The
        /// transaction in progress, if any, survives it.
        case auth(AuthStep, Envelope?)
        /// STARTTLS answered; waiting for the handshake. Bytes are dropped.
        case tlsHandshaking
        /// Reading the DATA block.
        case data(DataTransfer)
        /// The message is with the sink; nothing is read until it answers.
        case delivering(Envelope)
        case closed
    }

    public internal(set) var state: State = .greeting
    public internal(set) var info: SessionInfo
    /// Set when the last command was refused for a reason the mail log
    /// records; cleared by the next command.
    public internal(set) var rejection: Rejection?
    public let maxDataSize: Int
    public let maxReceivedHeaders: Int
    /// Errors allowed before the session is dropped with a 421 [SEC].
    public let maxErrors: Int
    /// The clock for the `Received:` date.
    private let now: @Sendable () -> Date
    private var tlsVersion: String?
    private var tlsCipherSuite: String?
    private var framer = LineFramer()
    private var errors = 0
    private var shuttingDown = false
    /// The outcome of the AUTH attempt just handled, for its note.
    var authOutcome: (user: String, succeeded: Bool)?
    /// Actions of the event being handled, and replies not yet written
    /// (pipelined replies are batched until the buffered commands are done).
    private var actions: [SessionAction] = []
    private var pendingReplies: [Reply] = []

    public init(
        mode: ListenerMode, hostname: String, maxDataSize: Int, onTLS: Bool = false, remoteIP: String? = nil,
        maxReceivedHeaders: Int = SMTPDefaults.maxReceivedHeaders, maxErrors: Int = SMTPDefaults.maxErrors,
        now: @escaping @Sendable () -> Date = Date.init
    ) {
        self.info = SessionInfo(
            mode: mode, serverName: hostname, onTLS: onTLS, ehloDomain: nil, usedEHLO: false,
            authenticatedAs: nil, authenticatedUser: nil, authenticatedDomain: nil, remoteIP: remoteIP)
        self.maxDataSize = maxDataSize
        self.maxReceivedHeaders = maxReceivedHeaders
        self.maxErrors = maxErrors
        self.now = now
    }

    public var greeting: Reply { Reply(220, "\(info.serverName) ESMTP chasquid") }

    /// The transaction in progress.
    public var envelope: Envelope? {
        switch state {
        case .mail(let envelope), .rcpt(let envelope), .delivering(let envelope): envelope
        case .auth(_, let envelope): envelope
        case .data(let transfer): transfer.envelope
        case .greeting, .awaitingTLS, .ready, .tlsHandshaking, .closed: nil
        }
    }

    /// Moves to the command state that matches `envelope`.
    mutating func setTransaction(_ envelope: Envelope?) {
        guard let envelope else {
            state = .ready
            return
        }
        state = envelope.recipients.isEmpty ? .mail(envelope) : .rcpt(envelope)
    }

    // MARK: - Events

    /// The connection is up. On an implicit-TLS port the greeting waits for
    /// the handshake; during a shutdown the client is turned away.
    public mutating func start(implicitTLS: Bool = false, shuttingDown: Bool = false) -> [SessionAction] {
        guard case .greeting = state else { preconditionFailure("start() called twice") }
        if shuttingDown {
            sendUncounted(.shuttingDown)
            close()
        } else if implicitTLS {
            state = .awaitingTLS
        } else {
            // chasquid does not count the greeting among the response codes.
            sendUncounted(greeting)
            state = .ready
        }
        return takeActions()
    }

    /// Bytes from the client, in whatever pieces the network made of them.
    public mutating func received(_ bytes: some Collection<UInt8>, policy: some SessionPolicy) async -> [SessionAction] {
        // One copy into an array, from contiguous storage when there is
        // one (a generic copy runs unspecialised, a call per byte).
        let bytes = bytes.withContiguousStorageIfAvailable { Array($0) } ?? Array(bytes)
        switch state {
        case .ready, .mail, .rcpt, .auth:
            framer.append(bytes)
            await handleBufferedLines(policy: policy)
        case .data:
            await feedData(bytes, policy: policy)
        case .awaitingTLS, .tlsHandshaking:
            // Sent in plain text before TLS is up: never a command [SEC].
            break
        case .greeting, .delivering, .closed:
            preconditionFailure("bytes received in state \(state)")
        }
        return takeActions()
    }

    /// The TLS handshake completed. The SNI name, if any, becomes the name
    /// we answer as; after STARTTLS the client must say EHLO again (RFC 3207 §4.2).
    public mutating func tlsEstablished(serverName: String?, version: String?, cipherSuite: String? = nil) -> [SessionAction] {
        let implicit: Bool
        switch state {
        case .awaitingTLS: implicit = true
        case .tlsHandshaking: implicit = false
        default: preconditionFailure("TLS established in state \(state)")
        }
        info.onTLS = true
        if let serverName, !serverName.isEmpty { info.serverName = serverName }
        info.ehloDomain = nil
        tlsVersion = version
        tlsCipherSuite = cipherSuite
        framer.discardPending()
        state = .ready
        if implicit { sendUncounted(greeting) }
        return takeActions()
    }

    /// Nothing came from the client for `idle` (counted from our last reply
    /// too: a client waiting on a slow hook is not idle).
    public mutating func timedOut(idle: Duration) -> [SessionAction] {
        switch state {
        case .awaitingTLS:
            close()
        case .data:
            endDataWithError(Reply(554, "5.4.0 Error reading DATA: timeout"))
        case .ready, .mail, .rcpt, .auth, .tlsHandshaking:
            guard idle >= SMTPDefaults.commandTimeout else { break }
            actions.append(.note(.timedOut))
            sendUncounted(Reply(421, "4.4.2 Timed out, bye"))
            close()
        case .greeting, .delivering, .closed:
            preconditionFailure("timed out in state \(state)")
        }
        return takeActions()
    }

    /// The command timeout passed since our last reply while bytes kept
    /// coming, too slowly to make a command (one byte every few seconds):
    /// dropped as an idle client is, as chasquid's per-command deadline
    /// does. In DATA, bytes keep the transaction going (the connection's
    /// 20 minutes bound it); in other states there is nothing to wait for.
    public mutating func replyOverdue() -> [SessionAction] {
        switch state {
        case .ready, .mail, .rcpt, .auth, .tlsHandshaking:
            actions.append(.note(.timedOut))
            sendUncounted(Reply(421, "4.4.2 Timed out, bye"))
            close()
        case .awaitingTLS, .data, .greeting, .delivering, .closed:
            break
        }
        return takeActions()
    }

    /// The client closed the connection, or it failed.
    public mutating func inputEnded() -> [SessionAction] {
        switch state {
        case .data:
            actions.append(.note(.connectionLostDuringData))
            endDataWithError(Reply(554, "5.4.0 Error reading DATA: connection closed"))
        case .greeting, .delivering, .closed:
            preconditionFailure("input ended in state \(state)")
        default:
            close()
        }
        return takeActions()
    }

    /// The sink's answer to `deliver`. Commands pipelined after the DATA
    /// block are handled next.
    public mutating func delivered(_ reply: Reply, policy: some SessionPolicy) async -> [SessionAction] {
        guard case .delivering(let envelope) = state else { preconditionFailure("delivered in state \(state)") }
        actions.append(.note(.dataEnded))
        await endData(envelope: envelope, reply: reply, policy: policy)
        return takeActions()
    }

    /// The spool could not be created or written: the message is refused
    /// for now (4xx), never accepted and lost.
    public mutating func spoolFailed(
        _ reason: String, storageFull: Bool = false, policy: some SessionPolicy
    ) async -> [SessionAction] {
        guard case .delivering(let envelope) = state else { preconditionFailure("spool failed in state \(state)") }
        actions.append(.discardSpool)
        actions.append(.note(.dataEnded))
        let reply = storageFull ? Reply.insufficientStorage : Reply(451, "4.3.0 Failed to queue message: \(reason)")
        await endData(envelope: envelope, reply: reply, policy: policy)
        return takeActions()
    }

    /// The server is shutting down: once the transaction in progress ends,
    /// the client gets a 421 and is closed.
    public mutating func shutdownBegan() { shuttingDown = true }

    /// The server is shutting down and this connection, left to finish its
    /// transaction, is between transactions: the 421 and close now.
    public mutating func drain() -> [SessionAction] {
        shuttingDown = true
        switch state {
        case .ready, .mail, .rcpt, .auth, .tlsHandshaking:
            sendUncounted(.shuttingDown)
            close()
        case .closed, .data, .delivering, .greeting, .awaitingTLS:
            break
        }
        return takeActions()
    }

    // MARK: - Commands

    private mutating func handleBufferedLines(policy: some SessionPolicy) async {
        loop: while true {
            switch state {
            case .ready, .mail, .rcpt, .auth: break
            case .data where framer.pendingByteCount > 0:
                // The DATA block began in the same read as the command.
                await feedData(framer.takeRemaining(), policy: policy)
                break loop
            default: break loop
            }
            guard let line = framer.next() else { break }
            guard case .line(let bytes) = line else {
                // chasquid writes this one uncounted, as it does the timeout
                // and shutdown replies.
                sendUncounted(Reply(554, "error reading command: line too long"))
                close()
                return
            }
            rejection = nil
            authOutcome = nil
            let command: Command
            let result: CommandResult
            if case .auth(let step, let envelope) = state {
                // An AUTH response is a credential: never parsed or shown as a command.
                actions.append(.note(.authResponse))
                command = Command(verb: "AUTH", argument: "")
                result = await handleAuthResponse(bytes, step: step, envelope: envelope, policy: policy)
            } else {
                command = Command(line: bytes)
                actions.append(.note(.command(command)))
                result = await handle(command, policy: policy)
            }
            finish(command, result)
        }
        flush()
    }

    /// Logs a failure, charges the error budget, and carries out the result.
    private mutating func finish(_ command: Command, _ result: CommandResult) {
        let reply = result.reply
        // A full disk is our fault, not the client's: not counted, and not
        // logged where fail2ban would count it against a sender that retries.
        if reply == .insufficientStorage {
            pendingReplies.append(reply)
            return
        }
        if reply.isError {
            actions.append(.note(.failed(command, reply)))
            if let rejection { actions.append(.note(.rejected(rejection))) }
        }
        if let outcome = authOutcome {
            actions.append(.note(.authenticated(user: outcome.user, succeeded: outcome.succeeded)))
            authOutcome = nil
        }
        // A cross-protocol request is closed at once, outside the budget.
        if reply.isError && !command.isCrossProtocol {
            errors += 1
            if errors >= maxErrors {
                actions.append(.note(.tooManyErrors))
                pendingReplies.append(Reply(421, "4.5.0 Too many errors, bye"))
                close()
                return
            }
        }
        switch result {
        case .reply(let reply), .authChallenge(let reply):
            pendingReplies.append(reply)
        case .close(let reply):
            pendingReplies.append(reply)
            close()
        case .startTLS(let reply):
            flush()
            actions.append(.startTLS(reply))
            // Bytes pipelined after STARTTLS came in plain text: dropped [SEC].
            framer.discardPending()
            state = .tlsHandshaking
        case .readData(let reply):
            pendingReplies.append(reply)
            flush()
            beginData()
        }
    }

    // MARK: - DATA

    private mutating func beginData() {
        guard var envelope else { preconditionFailure("DATA accepted without an envelope") }
        actions.append(.note(.dataStarted(onTLS: info.onTLS)))
        let trace = TraceBlock(
            serverName: info.serverName, spf: envelope.spf,
            received: TraceHeaders.received(
                session: info, remoteIP: info.remoteIP ?? "", tlsVersion: tlsVersion, tlsCipherSuite: tlsCipherSuite,
                envelopeFrom: envelope.from, date: now()))
        envelope.trace = trace
        actions.append(.openSpool(headers: Array(trace.text.utf8)))
        state = .data(DataTransfer(envelope: envelope, decoder: DataDecoder(maxSize: maxDataSize)))
    }

    /// Runs DATA bytes through the decoder; at the final dot, checks the
    /// message and hands it over, and goes on with what followed it.
    private mutating func feedData(_ chunk: [UInt8], policy: some SessionPolicy) async {
        guard case .data(var transfer) = state else { preconditionFailure("DATA bytes in state \(state)") }
        // Out of the enum while it changes, so the buffers are not copied.
        state = .closed
        for event in transfer.decoder.feed(chunk) {
            switch event {
            case .data(let bytes):
                transfer.sawData = true
                transfer.header.feed(bytes)
                actions.append(.append(bytes))
            case .bareLineEnding:
                state = .data(transfer)
                endDataWithError(Reply(521, "5.5.2 Error reading DATA: invalid line ending"))
                return
            case .end(let overLimit, let remaining):
                framer.append(remaining)
                let envelope = transfer.envelope
                if overLimit {
                    actions.append(.discardSpool)
                    actions.append(.note(.dataEnded))
                    rejection = Rejection(from: envelope.from, to: envelope.recipients, reason: "message too big")
                    state = .ready
                    finishData(Reply(552, "5.3.4 Message too big"))
                    await handleBufferedLines(policy: policy)
                    return
                }
                let verdict = MessageChecks.check(
                    header: transfer.header.bytes, messageIsEmpty: !transfer.sawData,
                    maxReceivedHeaders: maxReceivedHeaders)
                state = .delivering(envelope)
                switch verdict {
                case .accepted:
                    actions.append(.deliver(envelope))
                case .refused(let reply), .loop(_, let reply):
                    if case .loop(let count, _) = verdict {
                        actions.append(.note(.loopDetected(receivedHeaders: count)))
                    }
                    actions.append(.discardSpool)
                    actions.append(.note(.dataEnded))
                    await endData(envelope: envelope, reply: reply, policy: policy)
                }
                return
            }
        }
        state = .data(transfer)
    }

    /// The DATA block could not be read to its end: the spool goes and the
    /// connection closes.
    private mutating func endDataWithError(_ reply: Reply) {
        rejection = nil
        actions.append(.discardSpool)
        actions.append(.note(.dataEnded))
        finish(Command(verb: "DATA", argument: ""), .close(reply))
    }

    /// The DATA transaction ended with `reply`; a success ends the transaction.
    private mutating func endData(envelope: Envelope, reply: Reply, policy: some SessionPolicy) async {
        rejection = nil
        // The DATA checks (header block, loops). Hook refusals are logged by the server.
        if reply.code == 554 && reply.text.hasPrefix("5.") {
            rejection = Rejection(from: envelope.from, to: envelope.recipients, reason: reply.text)
        }
        setTransaction(reply.code == 250 ? nil : envelope)
        finishData(reply)
        await handleBufferedLines(policy: policy)
    }

    /// Sends the end-of-DATA reply; during a shutdown the connection drains now.
    private mutating func finishData(_ reply: Reply) {
        finish(Command(verb: "DATA", argument: ""), .reply(reply))
        if shuttingDown, !isClosed {
            sendUncounted(.shuttingDown)
            close()
        }
    }

    // MARK: - Output

    private var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    private mutating func flush() {
        guard !pendingReplies.isEmpty else { return }
        actions.append(.send(pendingReplies))
        pendingReplies = []
    }

    private mutating func sendUncounted(_ reply: Reply) {
        flush()
        actions.append(.sendUncounted(reply))
    }

    private mutating func close() {
        flush()
        actions.append(.close)
        state = .closed
    }

    private mutating func takeActions() -> [SessionAction] {
        flush()
        defer { actions = [] }
        return actions
    }
}
