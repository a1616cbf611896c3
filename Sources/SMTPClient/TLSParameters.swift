import NIOCore
import SMTPCore

/// Sits before the TLS handler and lets every byte through, noting the
/// cipher suite from the ServerHello on the way.
final class ServerHelloObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var parser = ServerHelloParser()
    var cipherSuite: UInt16? { parser.cipherSuite }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !parser.finished {
            parser.feed(unwrapInboundIn(data).readableBytesView)
        }
        context.fireChannelRead(data)
    }
}

@available(*, unavailable)
extension ServerHelloObserver: Sendable {}
