import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SMTPCore

/// Why an outgoing session failed before the server gave a reply to act on.
public struct ClientError: Error, Sendable, CustomStringConvertible {
    public var description: String
    /// The TLS library refused the handshake (a certificate that does not
    /// verify, among others), as opposed to a timeout or a closed
    /// connection.
    public var isTLSFailure = false
    public init(_ description: String, isTLSFailure: Bool = false) {
        self.description = description
        self.isTLSFailure = isTLSFailure
    }
}

/// One outgoing SMTP connection: commands out, replies in, STARTTLS in the
/// middle. Every wait has a deadline, so a silent server cannot hold a
/// delivery forever.
///
/// The channel's event loop owns the reply reader; this type only submits
/// work to it, so it can be used from any task.
public final class ClientConnection: Sendable {
    let channel: any Channel
    private let reader: NIOLoopBound<ReplyReader>
    /// Closes the connection when the whole session has run too long.
    private let sessionDeadline: Scheduled<Void>

    /// The most reply bytes read in one connection (chasquid reads at most
    /// 2 MiB).
    public static let maximumReplyBytes = 2 * 1024 * 1024

    private init(channel: any Channel, reader: NIOLoopBound<ReplyReader>, sessionTimeout: Duration) {
        self.channel = channel
        self.reader = reader
        // One deadline for everything, writes included: a server that stops
        // reading cannot hold a delivery forever (chasquid: 10 minutes).
        sessionDeadline = channel.eventLoop.scheduleTask(in: TimeAmount(sessionTimeout)) {
            reader.value.fail(ClientError("session timed out after \(sessionTimeout)"))
            channel.close(promise: nil)
        }
    }

    /// Connects (within `connectTimeout`) and reads the greeting (within
    /// `greetingTimeout`); the whole session must end within `sessionTimeout`.
    public static func connect(
        to address: SocketAddress, connectTimeout: Duration, greetingTimeout: Duration, sessionTimeout: Duration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> (ClientConnection, Reply) {
        let timeout = connectTimeout
        let eventLoop = group.next()
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(TimeAmount(timeout))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ReplyReader())
                    }
                }
                .connect(to: address).get()
        } catch {
            throw ClientError("connecting to \(address): \(error)")
        }
        let reader = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: ReplyReader.self), eventLoop: channel.eventLoop)
        }.get()
        let connection = ClientConnection(channel: channel, reader: reader, sessionTimeout: sessionTimeout)
        do {
            let greeting = try await connection.readReply(timeout: greetingTimeout)
            return (connection, greeting)
        } catch {
            connection.close()
            throw error
        }
    }

    /// Sends a command line (CRLF added) and reads the reply. A line with
    /// CR or LF in it is refused: it would smuggle a second command.
    public func command(_ line: String, timeout: Duration) async throws -> Reply {
        try await sendCommands([line])
        return try await readReply(timeout: timeout)
    }

    /// Sends command lines (CRLF added to each) in one write, for
    /// PIPELINING; the replies are read after. Refused whole if any line has
    /// a CR or LF in it, as `command` refuses one.
    public func sendCommands(_ lines: [String]) async throws {
        guard !lines.contains(where: { $0.utf8.contains(where: { $0 == 13 || $0 == 10 }) }) else {
            throw ClientError("refusing to send a command with a line break in it")
        }
        try await send(Array(lines.map { $0 + "\r\n" }.joined().utf8))
    }

    /// Sends bytes as they are.
    public func send(_ bytes: [UInt8]) async throws {
        do {
            try await channel.writeAndFlush(channel.allocator.buffer(bytes: bytes))
        } catch {
            throw ClientError("writing to the server: \(error)")
        }
    }

    /// The next complete reply.
    public func readReply(timeout: Duration) async throws -> Reply {
        let reader = self.reader
        let eventLoop = channel.eventLoop
        return try await eventLoop.flatSubmit {
            reader.value.nextReply(timeout: TimeAmount(timeout), eventLoop: eventLoop)
        }.get()
    }

    /// Starts TLS on the connection (after the server's 220 to STARTTLS) and
    /// waits for the handshake. `serverName` is sent as SNI and, when the
    /// context verifies, checked against the certificate.
    ///
    /// With `presentedChain`, the certificate chain is not verified but
    /// handed to it as the server sent it (for diagnosing a chain that
    /// failed verification, never for delivering mail).
    public func startTLS(
        context: NIOSSLContext, serverName: String?, timeout: Duration,
        presentedChain: (@Sendable ([NIOSSLCertificate]) -> Void)? = nil
    ) async throws {
        let reader = self.reader
        let channel = self.channel
        let eventLoop = channel.eventLoop
        try await eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
            // Anything the server sent after its 220 came in plaintext and
            // could be an injection: it is dropped [SEC].
            reader.value.discardBuffered()
            do {
                let handler: NIOSSLClientHandler
                if let presentedChain {
                    handler = try NIOSSLClientHandler(
                        context: context, serverHostname: serverName,
                        customVerificationCallback: { chain, promise in
                            presentedChain(chain)
                            promise.succeed(.certificateVerified)
                        })
                } else {
                    handler = try NIOSSLClientHandler(context: context, serverHostname: serverName)
                }
                try channel.pipeline.syncOperations.addHandler(handler, position: .first)
                try channel.pipeline.syncOperations.addHandler(ServerHelloObserver(), position: .first)
            } catch {
                return eventLoop.makeFailedFuture(ClientError("TLS setup: \(error)"))
            }
            return reader.value.handshake(timeout: TimeAmount(timeout), eventLoop: eventLoop)
        }.get()
    }

    /// The version and cipher suite of the TLS session started by
    /// `startTLS`; empty before it.
    public func tlsParameters() async -> TLSParameters {
        let channel = self.channel
        return (try? await channel.eventLoop.submit { () -> TLSParameters in
            let operations = channel.pipeline.syncOperations
            let tls = try? operations.handler(type: NIOSSLClientHandler.self)
            let observer = try? operations.handler(type: ServerHelloObserver.self)
            return TLSParameters(version: tls?.tlsVersion.map(Self.code), cipherSuite: observer?.cipherSuite)
        }.get()) ?? TLSParameters()
    }

    static func code(_ version: TLSVersion) -> UInt16 {
        switch version {
        case .tlsv1: 0x0301
        case .tlsv11: 0x0302
        case .tlsv12: 0x0303
        case .tlsv13: 0x0304
        }
    }

    public func close() {
        sessionDeadline.cancel()
        channel.close(promise: nil)
    }
}

/// Splits the byte stream into lines and lines into replies; hands each
/// reply to the one waiting reader, or keeps it until asked.
final class ReplyReader: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private var buffer: [UInt8] = []
    private var parser = ReplyParser()
    private var replies: [Reply] = []
    private var failure: (any Error)?
    private var waiting: EventLoopPromise<Reply>?
    private var handshakeWaiting: EventLoopPromise<Void>?
    private var totalBytes = 0
    /// For closing the channel from a deadline.
    fileprivate(set) var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func nextReply(timeout: TimeAmount, eventLoop: any EventLoop) -> EventLoopFuture<Reply> {
        if !replies.isEmpty { return eventLoop.makeSucceededFuture(replies.removeFirst()) }
        if let failure { return eventLoop.makeFailedFuture(failure) }
        let promise = eventLoop.makePromise(of: Reply.self)
        waiting = promise
        let reader = NIOLoopBound(self, eventLoop: eventLoop)
        let deadline = eventLoop.scheduleTask(in: timeout) {
            guard let waiting = reader.value.waiting, waiting.futureResult === promise.futureResult else { return }
            // The connection is done: a late reply must never be taken as
            // the answer to a later command.
            reader.value.fail(ClientError("timed out waiting for the server's reply"))
            reader.value.context?.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in deadline.cancel() }
        return promise.futureResult
    }

    func handshake(timeout: TimeAmount, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        if let failure { return eventLoop.makeFailedFuture(failure) }
        let promise = eventLoop.makePromise(of: Void.self)
        handshakeWaiting = promise
        let reader = NIOLoopBound(self, eventLoop: eventLoop)
        let deadline = eventLoop.scheduleTask(in: timeout) {
            guard let waiting = reader.value.handshakeWaiting else { return }
            reader.value.handshakeWaiting = nil
            waiting.fail(ClientError("timed out in the TLS handshake"))
        }
        promise.futureResult.whenComplete { _ in deadline.cancel() }
        return promise.futureResult
    }

    func discardBuffered() {
        buffer = []
        replies = []
        parser = ReplyParser()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data).readableBytesView
        totalBytes += bytes.count
        guard totalBytes <= ClientConnection.maximumReplyBytes else {
            fail(ClientError("the server sent more than \(ClientConnection.maximumReplyBytes) bytes of replies"))
            context.close(promise: nil)
            return
        }
        buffer.append(contentsOf: bytes)
        // One pass over the buffer, and one removal of what was consumed:
        // a flood of short lines costs linear time, not quadratic.
        var start = buffer.startIndex
        defer { buffer.removeSubrange(..<start) }
        while let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
            var line = buffer[start..<newline]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            let text = String(decoding: line, as: UTF8.self)
            start = newline + 1
            do {
                if let reply = try parser.feed(text) { deliver(reply) }
            } catch {
                fail(ClientError("\(error)"))
                context.close(promise: nil)
                return
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            let waiting = handshakeWaiting
            handshakeWaiting = nil
            waiting?.succeed()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(ClientError("\(error)", isTLSFailure: error is NIOSSLError || error is NIOSSLExtraError))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(ClientError("connection closed by the server"))
        context.fireChannelInactive()
    }

    private func deliver(_ reply: Reply) {
        if let waiting {
            self.waiting = nil
            waiting.succeed(reply)
        } else {
            replies.append(reply)
        }
    }

    func fail(_ error: any Error) {
        if failure == nil { failure = error }
        let waiting = self.waiting
        let handshake = handshakeWaiting
        self.waiting = nil
        handshakeWaiting = nil
        waiting?.fail(error)
        handshake?.fail(error)
    }
}

@available(*, unavailable)
extension ReplyReader: Sendable {}
