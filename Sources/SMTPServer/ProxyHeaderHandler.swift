import NIOCore
import ProxyProtocol

/// First in the pipeline of a connection from HAProxy (`haproxy_incoming`):
/// reads the PROXY header before anything else (before TLS, on the
/// implicit-TLS listener: COMPAT.md §22.3), hands it over through
/// `header`, passes on whatever bytes followed it, and removes itself. A
/// connection without a valid header in time is closed.
final class ProxyHeaderHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// HAProxy writes the header as soon as it connects.
    static let deadline: TimeAmount = .seconds(30)

    let header: EventLoopPromise<ProxyHeader>
    private var buffered: ByteBuffer?
    private var timer: Scheduled<Void>?
    private enum State { case waiting, passed, refused }
    private var state = State.waiting

    init(header: EventLoopPromise<ProxyHeader>) {
        self.header = header
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let boundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: Self.deadline) {
            guard handler.value.state == .waiting else { return }
            handler.value.fail(
                boundContext.value, "no PROXY header within \(Self.deadline.nanoseconds / 1_000_000_000) s")
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard state == .waiting else {
            // After a refusal nothing the client sent goes further.
            if state == .passed { context.fireChannelRead(data) }
            return
        }
        var incoming = unwrapInboundIn(data)
        if buffered == nil {
            buffered = incoming
        } else {
            buffered!.writeBuffer(&incoming)
        }
        // A v2 header says its length: wait for all of it before parsing,
        // so a header sent a byte at a time is not parsed again each time.
        let view = buffered!.readableBytesView
        if view.count >= 16, view.first == 0x0D {
            let needed = 16 + (Int(view[view.startIndex + 14]) << 8 | Int(view[view.startIndex + 15]))
            if view.count < needed { return }
        }
        switch ProxyProtocol.parse(buffered!.readableBytesView) {
        case .incomplete:
            if buffered!.readableBytes > ProxyProtocol.maximumV2Length { fail(context, "header too long") }
        case .invalid(let reason):
            fail(context, reason)
        case .header(let parsed, let length):
            state = .passed
            timer?.cancel()
            buffered!.moveReaderIndex(forwardBy: length)
            let rest = buffered!
            buffered = nil
            header.succeed(parsed)
            if rest.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(rest))
                context.fireChannelReadComplete()
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if state == .waiting {
            state = .refused
            timer?.cancel()
            header.fail(Failure(description: "connection closed before the PROXY header"))
        }
        context.fireChannelInactive()
    }

    private func fail(_ context: ChannelHandlerContext, _ reason: String) {
        state = .refused
        timer?.cancel()
        buffered = nil
        header.fail(Failure(description: reason))
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension ProxyHeaderHandler: Sendable {}
