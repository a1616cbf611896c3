import NIOCore
import NIOHTTP1
import NIOPosix

/// The monitoring HTTP server (NIOHTTP1). Requests are answered one at a
/// time per connection; bodies are ignored.
public struct MonitoringServer: Sendable {
    typealias Child = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

    let site: MonitoringSite
    let server: NIOAsyncChannel<Child, Never>

    /// Binds `host:port` (port 0 picks one).
    public static func bind(host: String, port: Int, site: MonitoringSite, group: any EventLoopGroup) async throws
        -> MonitoringServer
    {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    // A client that sends nothing for a minute is dropped.
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: .seconds(60)))
                    try channel.pipeline.syncOperations.addHandler(CloseOnIdle())
                    return try Child(wrappingChannelSynchronously: channel)
                }
            }
        return MonitoringServer(site: site, server: server)
    }

    public var port: Int { server.channel.localAddress?.port ?? 0 }

    /// Stops accepting; `serve` then returns.
    public func close() async {
        try? await server.channel.close()
    }

    /// Serves until the task is cancelled or the socket closes.
    public func serve() async throws {
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await child in inbound {
                    group.addTask { await handle(child) }
                }
            }
        }
    }

    private func handle(_ child: Child) async {
        var afterClose: (@Sendable () -> Void)?
        try? await child.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            for try await part in inbound {
                switch part {
                case .head(let h): head = h
                case .body: continue
                case .end:
                    guard let request = head else { continue }
                    let response = await site.respond(
                        method: request.method.rawValue, target: request.uri,
                        headers: request.headers.map { ($0.name, $0.value) })
                    try await write(response, for: request, to: outbound)
                    // `/exit` acts once the reply is flushed and the connection
                    // closed, which executeThenClose does when this returns.
                    if let action = response.afterSending {
                        afterClose = action
                        return
                    }
                    if !request.isKeepAlive { return }
                }
            }
        }
        afterClose?()
    }

    private func write(
        _ response: MonitoringResponse, for request: HTTPRequestHead,
        to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    ) async throws {
        let body = ByteBuffer(string: response.body)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        for (name, value) in response.extraHeaders { headers.add(name: name, value: value) }
        if !request.isKeepAlive || response.afterSending != nil { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(
            version: request.version, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        try await outbound.write(.head(head))
        if request.method != .HEAD { try await outbound.write(.body(.byteBuffer(body))) }
        try await outbound.write(.end(nil))
    }
}

/// Closes the connection when the idle handler says it is idle.
private final class CloseOnIdle: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}
