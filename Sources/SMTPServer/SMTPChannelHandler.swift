import NIOCore
import NIOSSL
import NIOTLS
import SMTPCore

/// What the connection's async loop reads.
public enum SMTPInbound: Sendable {
    case bytes(ByteBuffer)
    /// The TLS handshake finished. Anything read between a STARTTLS and this
    /// event was sent in plain text and must not be trusted [SEC].
    case tlsEstablished(TLSDetails)
    /// No bytes for too long, or the connection's time is up.
    case timedOut
    /// The command timeout has passed since our last reply, however many
    /// bytes came: a client sending a command one byte at a time.
    case replyOverdue
}

/// What the connection's async loop writes.
public enum SMTPOutbound: Sendable {
    case bytes(ByteBuffer)
    /// Write this (the 220 to STARTTLS), then start TLS in the same event
    /// loop tick, so no client byte can arrive between the two.
    case startTLS(ByteBuffer)
}

public struct TLSDetails: Sendable, Equatable {
    public var serverName: String?
    public var version: String
    /// The IANA name of the negotiated suite, when the ServerHello showed it.
    public var cipherSuite: String? = nil
}

/// Sits next to the socket, before the TLS handler, and reads the suite
/// from the ServerHello the server sends (NIOSSL does not expose it), for
/// the `tls <suite>` line of Received: (COMPAT.md §12.3).
final class ServerHelloWatcher: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var parser = ServerHelloParser()
    var cipherSuite: UInt16? { parser.cipherSuite }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if !parser.finished { parser.feed(unwrapOutboundIn(data).readableBytesView) }
        context.write(data, promise: promise)
    }
}

@available(*, unavailable)
extension ServerHelloWatcher: Sendable {}

/// Sits between the socket (or TLS) and the connection's async loop: wraps
/// bytes, performs the STARTTLS switch, reports handshakes and timeouts.
final class SMTPChannelHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = SMTPInbound
    typealias OutboundIn = SMTPOutbound
    typealias OutboundOut = ByteBuffer

    private let certificates: CertificateStore?
    private var serverName: String?
    /// Fires `replyOverdue` a command timeout after the last reply (plus a
    /// second, so the loop's own clock agrees it has passed). Lazy: a reply
    /// only moves `replyDue`; the one pending task, when it fires early,
    /// waits again for the rest. Cancelling per reply would scan the event
    /// loop's whole timer heap, once per reply of every connection.
    private var replyDeadline: Scheduled<Void>?
    private var replyDue = NIODeadline.distantFuture
    private let replyTimeout: TimeAmount

    init(certificates: CertificateStore?, replyTimeout: Duration = SMTPDefaults.commandTimeout + .seconds(1)) {
        self.certificates = certificates
        let (seconds, attoseconds) = replyTimeout.components
        self.replyTimeout = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    private func armReplyDeadline(_ context: ChannelHandlerContext) {
        replyDue = .now() + replyTimeout
        if replyDeadline == nil { scheduleReplyDeadline(context) }
    }

    private func scheduleReplyDeadline(_ context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        replyDeadline = context.eventLoop.scheduleTask(deadline: replyDue) {
            let (handler, context) = bound.value
            if NIODeadline.now() < handler.replyDue {
                handler.scheduleReplyDeadline(context)
                return
            }
            handler.replyDeadline = nil
            context.fireChannelRead(handler.wrapInboundOut(.replyOverdue))
            context.fireChannelReadComplete()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The pending task holds the handler and its context: free them now.
        replyDeadline?.cancel()
        replyDeadline = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        replyDeadline?.cancel()
        replyDeadline = nil
    }

    func setServerName(_ name: String?) { serverName = name }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(wrapInboundOut(.bytes(unwrapInboundIn(data))))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            let version = (try? context.pipeline.syncOperations.nioSSL_tlsVersion()).flatMap { $0 }
            let suite = (try? context.pipeline.syncOperations.handler(type: ServerHelloWatcher.self))?.cipherSuite
            let details = TLSDetails(
                serverName: serverName, version: Self.versionName(version),
                cipherSuite: suite.map(TLSParameters.cipherSuiteName))
            context.fireChannelRead(wrapInboundOut(.tlsEstablished(details)))
            // NIOAsyncChannel hands reads over on read-complete; no socket
            // read follows a handshake by itself.
            context.fireChannelReadComplete()
            return
        }
        if event is IdleStateHandler.IdleStateEvent {
            context.fireChannelRead(wrapInboundOut(.timedOut))
            context.fireChannelReadComplete()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if context.channel.isActive { armReplyDeadline(context) }
        switch unwrapOutboundIn(data) {
        case .bytes(let buffer):
            context.write(wrapOutboundOut(buffer), promise: promise)
        case .startTLS(let buffer):
            context.writeAndFlush(wrapOutboundOut(buffer), promise: promise)
            do {
                try Self.addTLS(to: context.pipeline, certificates: certificates) { [weak self] name in
                    self?.serverName = name
                }
            } catch {
                context.fireErrorCaught(error)
                context.close(promise: nil)
            }
        }
    }

    /// Puts TLS next to the socket: an SNI reader first, which picks the
    /// certificate and then hands the ClientHello to the TLS handler.
    static func addTLS(
        to pipeline: ChannelPipeline, certificates: CertificateStore?, onServerName: @escaping (String?) -> Void
    ) throws {
        guard let certificates else { throw ChannelError.operationUnsupported }
        let loop = pipeline.eventLoop
        let sniName = "smtp-sni"
        let sni = ByteToMessageHandler(
            SNIHandler { result in
                var name: String?
                if case .hostname(let hostname) = result { name = hostname }
                // Only a name we hold a certificate for becomes ours (the
                // `by` of Received: and Authentication-Results:): SNI is
                // the client's text, and NIO lets any ASCII through.
                let selection = certificates.selection(forServerName: name)
                onServerName(selection.certifiedName)
                let tls = NIOSSLServerHandler(context: selection.context)
                do {
                    let sniContext = try pipeline.syncOperations.context(name: sniName)
                    try pipeline.syncOperations.addHandler(tls, position: .after(sniContext.handler))
                    return loop.makeSucceededVoidFuture()
                } catch {
                    return loop.makeFailedFuture(error)
                }
            })
        try pipeline.syncOperations.addHandler(sni, name: sniName, position: .first)
        // Nearer the socket than the TLS handler (added after the SNI one).
        try pipeline.syncOperations.addHandler(ServerHelloWatcher(), position: .first)
    }

    static func versionName(_ version: TLSVersion?) -> String {
        switch version {
        case .tlsv1: "TLS-1.0"
        case .tlsv11: "TLS-1.1"
        case .tlsv12: "TLS-1.2"
        case .tlsv13: "TLS-1.3"
        default: "TLS"
        }
    }
}

@available(*, unavailable)
extension SMTPChannelHandler: Sendable {}
