import NIOCore
import NIOPosix

/// The network side of one DNS exchange: send a query, wait for the matching
/// answer or the deadline. One fresh socket per exchange, so each query has a
/// random source port (RFC 5452 §9.2).
enum DNSTransport {
    /// The largest answer read over UDP; we advertise 1232 octets, but a
    /// server may send more and the message must still parse.
    static let maximumDatagramSize = 4096

    /// - Parameter accept: whether a datagram from the server with the
    ///   query's ID is the answer; others are ignored, and the wait goes on.
    static func udpExchange(
        query: [UInt8], server: SocketAddress, timeout: Duration, group: any EventLoopGroup,
        accept: @escaping @Sendable ([UInt8]) -> Bool = { _ in true }
    ) async throws -> [UInt8] {
        let eventLoop = group.next()
        let answer = eventLoop.makePromise(of: [UInt8].self)
        let id = UInt16(query[0]) << 8 | UInt16(query[1])
        let bindHost = server.protocol == .inet6 ? "::" : "0.0.0.0"
        let channel: any Channel
        do {
            channel = try await DatagramBootstrap(group: eventLoop)
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: maximumDatagramSize))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            DatagramAnswerHandler(server: server, id: id, accept: accept, answer: answer))
                    }
                }
                .bind(host: bindHost, port: 0).get()
        } catch {
            answer.fail(error)
            throw DNSTransportError("cannot open a UDP socket: \(error)")
        }
        return try await exchange(on: channel, answer: answer, timeout: timeout) {
            let buffer = channel.allocator.buffer(bytes: query)
            return channel.writeAndFlush(AddressedEnvelope(remoteAddress: server, data: buffer))
        }
    }

    static func tcpExchange(
        query: [UInt8], server: SocketAddress, timeout: Duration, group: any EventLoopGroup
    ) async throws -> [UInt8] {
        let eventLoop = group.next()
        let answer = eventLoop.makePromise(of: [UInt8].self)
        let channel: any Channel
        do {
            let connecting = ClientBootstrap(group: eventLoop)
                .connectTimeout(TimeAmount(timeout))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LengthPrefixedFrameDecoder()))
                        try channel.pipeline.syncOperations.addHandler(StreamAnswerHandler(answer: answer))
                    }
                }
                .connect(to: server)
            // A cancelled lookup does not wait for the connect either; a
            // connection made after that is closed at once.
            let connected = eventLoop.makePromise(of: (any Channel).self)
            connecting.cascade(to: connected)
            channel = try await withTaskCancellationHandler {
                try await connected.futureResult.get()
            } onCancel: {
                connected.fail(DNSTransportError("cancelled"))
                connecting.whenSuccess { $0.close(promise: nil) }
            }
        } catch {
            answer.fail(error)
            throw DNSTransportError("cannot connect over TCP: \(error)")
        }
        return try await exchange(on: channel, answer: answer, timeout: timeout) {
            var buffer = channel.allocator.buffer(capacity: query.count + 2)
            buffer.writeInteger(UInt16(query.count))
            buffer.writeBytes(query)
            return channel.writeAndFlush(buffer)
        }
    }

    /// Sends, then waits for the answer, the deadline or the task's
    /// cancellation (an SPF check past its own deadline); always closes the
    /// channel.
    private static func exchange(
        on channel: any Channel, answer: EventLoopPromise<[UInt8]>, timeout: Duration,
        send: @Sendable @escaping () -> EventLoopFuture<Void>
    ) async throws -> [UInt8] {
        let deadline = channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            answer.fail(DNSTransportError("timed out after \(timeout)"))
        }
        channel.eventLoop.execute {
            send().whenFailure { error in answer.fail(DNSTransportError("send failed: \(error)")) }
        }
        defer {
            deadline.cancel()
            channel.close(promise: nil)
        }
        return try await withTaskCancellationHandler {
            try await answer.futureResult.get()
        } onCancel: {
            answer.fail(DNSTransportError("cancelled"))
        }
    }
}

/// Completes the promise with the first datagram from the server that
/// carries the query's ID and that `accept` takes; anything else is ignored
/// (off-path spoofing), and the real answer can still arrive.
private final class DatagramAnswerHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    let server: SocketAddress
    let id: UInt16
    let accept: @Sendable ([UInt8]) -> Bool
    let answer: EventLoopPromise<[UInt8]>

    init(server: SocketAddress, id: UInt16, accept: @escaping @Sendable ([UInt8]) -> Bool, answer: EventLoopPromise<[UInt8]>) {
        self.server = server
        self.id = id
        self.accept = accept
        self.answer = answer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard envelope.remoteAddress == server, let receivedID = envelope.data.getInteger(at: envelope.data.readerIndex, as: UInt16.self),
            receivedID == id
        else { return }
        let bytes = Array(envelope.data.readableBytesView)
        guard accept(bytes) else { return }
        answer.succeed(bytes)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP port unreachable arrives as a read error: the server is not there.
        answer.fail(DNSTransportError("\(error)"))
    }

    func channelInactive(context: ChannelHandlerContext) {
        answer.fail(DNSTransportError("socket closed"))
    }
}

@available(*, unavailable)
extension DatagramAnswerHandler: Sendable {}

/// Completes the promise with the first framed message on the stream.
private final class StreamAnswerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let answer: EventLoopPromise<[UInt8]>

    init(answer: EventLoopPromise<[UInt8]>) { self.answer = answer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        answer.succeed(Array(unwrapInboundIn(data).readableBytesView))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        answer.fail(DNSTransportError("\(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        answer.fail(DNSTransportError("connection closed before an answer"))
    }
}

@available(*, unavailable)
extension StreamAnswerHandler: Sendable {}

/// DNS over TCP frames each message with a two-octet length (RFC 1035 §4.2.2).
struct LengthPrefixedFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
            buffer.readableBytes >= 2 + Int(length)
        else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        let frame = buffer.readSlice(length: Int(length))!
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }
}
