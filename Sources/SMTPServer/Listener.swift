import Instrumentation
import GoCompat
import Logging
import MailLog
import NIOCore
import NIOPosix
import NIOSSL
import ProxyProtocol
import SMTPCore

/// Where a listener gets its socket: an address to bind, or a socket that
/// systemd passed us.
public enum ListenSocket: Sendable, CustomStringConvertible {
    case address(host: String, port: Int)
    case systemd(descriptor: Int32)

    /// Parses `host:port` or `:port` (COMPAT.md §3); `[::1]:25` for IPv6.
    public init(parsing text: String) throws {
        guard let endpoint = HostPort(text), let port = endpoint.port else {
            throw ListenerError(description: "invalid listening address \"\(text)\"")
        }
        self = .address(host: endpoint.host.isEmpty ? "::" : endpoint.host, port: port)
    }

    public var description: String {
        switch self {
        case .address(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .systemd(let fd): "systemd fd \(fd)"
        }
    }
}

public struct ListenerError: Error, CustomStringConvertible {
    public var description: String
}

/// One listening socket and the connections it accepts.
public struct Listener: Sendable {
    public var socket: ListenSocket
    /// The address as chasquid.conf wrote it (`:25`), for messages; nil
    /// for sockets from systemd.
    public var configuredAddress: String?
    /// Shared by every listener; nil: no limits (tests).
    public var limits: ConnectionLimits?
    /// Daemon-log lines per client network; shared; nil: no budget (tests).
    public var logBudget: ClientLogBudget?
    public var settings: ConnectionSettings
    public var certificates: CertificateStore?
    public var policy: any SessionPolicy
    public var sink: any MessageSink
    public var logger: Logger
    public var mailLog: MailLog
    public var registry: ConnectionRegistry
    public var metrics: ServerMetrics
    public var traces: TraceRegistry?
    /// Readies one accepted socket before its session starts. A failure
    /// here closes that connection only; the listener goes on. Tests
    /// replace it to inject such failures.
    public var prepareConnection: @Sendable (any Channel) throws -> Void = Listener.setNoDelay

    /// TCP_NODELAY at the TCP level (IPPROTO_TCP). At the socket level the
    /// same number is SO_DEBUG, which needs CAP_NET_ADMIN: as the mail user
    /// that setsockopt fails with EACCES. It only speeds up replies, so a
    /// socket that refuses it (a Unix socket from systemd) is served
    /// anyway, as Go ignores its SetNoDelay error.
    public static let setNoDelay: @Sendable (any Channel) throws -> Void = { channel in
        try? channel.syncOptions?.setOption(.tcpOption(.tcp_nodelay), value: 1)
    }

    public init(
        socket: ListenSocket, settings: ConnectionSettings, certificates: CertificateStore?, policy: any SessionPolicy,
        sink: any MessageSink, logger: Logger, mailLog: MailLog, registry: ConnectionRegistry = ConnectionRegistry(),
        metrics: ServerMetrics = .discarding, traces: TraceRegistry? = nil
    ) {
        self.registry = registry
        self.metrics = metrics
        self.traces = traces
        self.socket = socket
        self.settings = settings
        self.certificates = certificates
        self.policy = policy
        self.sink = sink
        self.logger = logger
        self.mailLog = mailLog
    }

    typealias Child = NIOAsyncChannel<SMTPInbound, SMTPOutbound>

    /// An accepted connection with its peer, read while the channel is
    /// surely open: a client that hangs up at once still has an address.
    struct Accepted: Sendable {
        var channel: Child
        var remote: SocketAddress?
        /// With `expectsProxyHeader`: the PROXY header, once read.
        var proxyHeader: EventLoopFuture<ProxyHeader>?
    }

    /// Binds. The returned server channel is then given to `serve`.
    public func bind(group: any EventLoopGroup) async throws -> BoundListener {
        let implicitTLS = settings.mode == .submissionTLS
        let expectsProxyHeader = settings.expectsProxyHeader
        let certificates = self.certificates
        let prepare = self.prepareConnection
        let logger = self.logger
        let initializer: @Sendable (any Channel) -> EventLoopFuture<Accepted> = { channel in
            // Child options are not set on the bootstrap: NIO reports their
            // failure on the server channel, which ends the accept stream
            // and with it the listener. A failure here closes this socket
            // alone (NIO drops a failed initializer's result unclosed).
            let setup = channel.eventLoop.makeCompletedFuture {
                try prepare(channel)
                let handler = SMTPChannelHandler(certificates: certificates)
                try channel.pipeline.syncOperations.addHandler(
                    IdleStateHandler(readTimeout: .seconds(Int64(SMTPDefaults.commandTimeout.components.seconds))))
                try channel.pipeline.syncOperations.addHandler(handler)
                if implicitTLS {
                    try SMTPChannelHandler.addTLS(to: channel.pipeline, certificates: certificates) { name in
                        handler.setServerName(name)
                    }
                }
                // The PROXY header comes first on the wire, before any TLS.
                var proxyHeader: EventLoopFuture<ProxyHeader>?
                if expectsProxyHeader {
                    let promise = channel.eventLoop.makePromise(of: ProxyHeader.self)
                    try channel.pipeline.syncOperations.addHandler(ProxyHeaderHandler(header: promise), position: .first)
                    proxyHeader = promise.futureResult
                }
                // The whole connection, DATA included, gets 20 minutes. The
                // timer is cancelled at close: it holds the channel, and with
                // it the buffers, for as long as it is pending.
                let seconds = SMTPDefaults.connectionTimeout.components.seconds
                let deadline = channel.eventLoop.scheduleTask(in: .seconds(seconds)) { [weak channel] in
                    channel?.close(promise: nil)
                }
                channel.closeFuture.whenComplete { _ in deadline.cancel() }
                return Accepted(
                    channel: try Child(wrappingChannelSynchronously: channel), remote: channel.remoteAddress,
                    proxyHeader: proxyHeader)
            }
            setup.whenFailure { error in
                let peer = channel.remoteAddress.map(BoundListener.format) ?? "unknown"
                logger.error("\(peer): closing, setting up the connection failed: \(error)")
                channel.close(promise: nil)
            }
            return setup
        }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        let server: NIOAsyncChannel<Accepted, Never>
        switch socket {
        case .address(let host, let port):
            server = try await bootstrap.bind(host: host, port: port, childChannelInitializer: initializer)
        case .systemd(let descriptor):
            server = try await bootstrap.bind(descriptor, cleanupExistingSocketFile: false, childChannelInitializer: initializer)
        }
        return BoundListener(listener: self, server: server)
    }
}

/// A listener with its socket bound.
public struct BoundListener: Sendable {
    let listener: Listener
    let server: NIOAsyncChannel<Listener.Accepted, Never>

    /// The address actually bound (port 0 picks one).
    public var localAddress: String {
        guard let address = server.channel.localAddress else { return "?" }
        return Self.format(address)
    }

    public var port: Int { server.channel.localAddress?.port ?? 0 }

    /// Stops accepting new connections (shutdown).
    public func stopAccepting() async {
        try? await server.channel.close()
    }

    /// Accepts connections until the task is cancelled.
    public func serve() async throws {
        let implicitTLS = listener.settings.mode == .submissionTLS
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await accepted in inbound {
                    group.addTask {
                        let child = accepted.channel
                        let peer = accepted.remote.map(Self.format) ?? "unknown"
                        var facts = ConnectionFacts(remoteAddress: peer, remoteIP: accepted.remote?.ipAddress ?? "unknown")
                        if let proxyHeader = accepted.proxyHeader {
                            do {
                                facts = Self.facts(from: try await proxyHeader.get(), proxy: facts)
                            } catch {
                                // Not in the fail2ban form (no "error:"): the
                                // proxy's address must not be banned for it.
                                listener.logger.info("SMTP.Conn \(peer): haproxy handshake failed: \(error)")
                                try? await child.channel.close()
                                return
                            }
                        }
                        // After the PROXY header: the real client counts.
                        var release: (@Sendable () -> Void)?
                        if let limits = listener.limits {
                            switch limits.admit(ip: facts.remoteIP) {
                            case .admitted(let done):
                                release = done
                            case .refused(let reply, let log):
                                if let log { listener.logger.info("SMTP.Conn \(facts.remoteAddress): \(log)") }
                                // On 465 nothing may go out before the TLS
                                // handshake: closed without a reply there.
                                if !implicitTLS {
                                    let bytes = ByteBuffer(string: "421 " + reply + "\r\n")
                                    try? await child.channel.writeAndFlush(SMTPOutbound.bytes(bytes))
                                }
                                try? await child.channel.close()
                                return
                            }
                        }
                        defer { release?() }
                        let trace =
                            listener.traces?.start(family: "SMTP.Conn", title: facts.remoteAddress)
                            ?? .disabled
                        let connection = Connection(
                            settings: listener.settings, policy: listener.policy, sink: listener.sink, facts: facts,
                            logger: listener.logger, mailLog: listener.mailLog, registry: listener.registry,
                            metrics: listener.metrics, trace: trace, clock: ContinuousClock(),
                            logBudget: listener.logBudget)
                        await connection.run(child, implicitTLS: implicitTLS)
                    }
                }
            }
        }
    }

    /// The client HAProxy speaks for; LOCAL (a health check) keeps the
    /// proxy's own address.
    static func facts(from header: ProxyHeader, proxy: ConnectionFacts) -> ConnectionFacts {
        guard case .tcp(let source, _) = header.addresses else { return proxy }
        return ConnectionFacts(remoteAddress: hostPort(source.ip, source.port), remoteIP: source.ip)
    }

    static func format(_ address: SocketAddress) -> String {
        hostPort(address.ipAddress ?? "?", address.port ?? 0)
    }

    /// `ip:port`, IPv6 as `[ip]:port`.
    static func hostPort(_ ip: String, _ port: Int) -> String {
        ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}
