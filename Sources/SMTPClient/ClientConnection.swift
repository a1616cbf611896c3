import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SMTPCore

/// Why an outgoing session failed before the server gave a reply to act on.
public struct ClientError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
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

    /// The most reply bytes read in one connection (chasquid reads at most
    /// 2 MiB).
    public static let maximumReplyBytes = 2 * 1024 * 1024

    private init(channel: any Channel, reader: NIOLoopBound<ReplyReader>) {
        self.channel = channel
        self.reader = reader
    }

    /// Connects and reads the greeting.
    public static func connect(
        to address: SocketAddress, timeout: Duration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> (ClientConnection, Reply) {
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
        let connection = ClientConnection(channel: channel, reader: reader)
        do {
            let greeting = try await connection.readReply(timeout: timeout)
            return (connection, greeting)
        } catch {
            connection.close()
            throw error
        }
    }

    /// Sends a command line (CRLF added) and reads the reply.
    public func command(_ line: String, timeout: Duration) async throws -> Reply {
        try await send(Array((line + "\r\n").utf8))
        return try await readReply(timeout: timeout)
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
    public func startTLS(context: NIOSSLContext, serverName: String?, timeout: Duration) async throws {
        let reader = self.reader
        let channel = self.channel
        let eventLoop = channel.eventLoop
        try await eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
            // Anything the server sent after its 220 came in plaintext and
            // could be an injection: it is dropped [SEC].
            reader.value.discardBuffered()
            do {
                let handler = try NIOSSLClientHandler(context: context, serverHostname: serverName)
                try channel.pipeline.syncOperations.addHandler(handler, position: .first)
            } catch {
                return eventLoop.makeFailedFuture(ClientError("TLS setup: \(error)"))
            }
            return reader.value.handshake(timeout: TimeAmount(timeout), eventLoop: eventLoop)
        }.get()
    }

    /// The negotiated TLS version, once TLS is up.
    public func tlsVersion() async -> String? {
        let channel = self.channel
        let version = try? await channel.eventLoop.submit { () -> String? in
            let handler = try? channel.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self)
            guard let version = handler?.tlsVersion else { return nil }
            switch version {
            case .tlsv13: return "TLS-1.3"
            case .tlsv12: return "TLS-1.2"
            default: return "TLS"
            }
        }.get()
        return version ?? nil
    }

    public func close() {
        channel.close(promise: nil)
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
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

    func nextReply(timeout: TimeAmount, eventLoop: any EventLoop) -> EventLoopFuture<Reply> {
        if !replies.isEmpty { return eventLoop.makeSucceededFuture(replies.removeFirst()) }
        if let failure { return eventLoop.makeFailedFuture(failure) }
        let promise = eventLoop.makePromise(of: Reply.self)
        waiting = promise
        let reader = NIOLoopBound(self, eventLoop: eventLoop)
        let deadline = eventLoop.scheduleTask(in: timeout) {
            guard let waiting = reader.value.waiting, waiting.futureResult === promise.futureResult else { return }
            reader.value.waiting = nil
            waiting.fail(ClientError("timed out waiting for the server's reply"))
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
        while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
            var line = buffer[..<newline]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            let text = String(decoding: line, as: UTF8.self)
            buffer.removeSubrange(...newline)
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
        fail(ClientError("\(error)"))
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

    private func fail(_ error: any Error) {
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
