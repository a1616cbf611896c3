import DNS
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Fetches a domain's MTA-STS policy (RFC 8461 §3.3): the TXT record, then
/// `https://mta-sts.<domain>/.well-known/mta-sts.txt` over verified TLS.
///
/// The policy host is resolved with our own DNS resolver, as MX hosts are,
/// so the daemon's and smtp-check's view of a domain come from one place
/// (and tests can serve the zone on loopback); the HTTP framing is
/// NIOHTTP1's. Redirects are not followed (§3.3), the media type must be
/// `text/plain` (§3.2), and the body is limited in size and time.
public struct STSPolicyFetcher: Sendable {
    public var dns: any DNSLookup
    /// Verifies the policy host's certificate (the caller's trust roots).
    public var tlsContext: NIOSSLContext
    /// 443, except in tests.
    public var port: Int
    public var group: any EventLoopGroup

    /// Policies are small; RFC 8461 §3.3 suggests refusing more than 64 KiB.
    public static let maximumBodyBytes = 64 * 1024

    public init(
        dns: any DNSLookup, tlsContext: NIOSSLContext, port: Int = 443,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.dns = dns
        self.tlsContext = tlsContext
        self.port = port
        self.group = group
    }

    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// The policy host of an ASCII domain.
    public static func policyHost(_ domain: String) -> String { "mta-sts." + domain }

    /// The TXT record and the parsed (not yet checked) policy.
    public func fetch(domain: String, timeout: Duration) async throws -> (STSRecord, STSPolicy) {
        let record: STSRecord
        do {
            record = try STSRecord.find(in: try await dns.txt("_mta-sts." + domain))
        } catch let error as DNSError where error.isNameNotFound {
            throw Failure(STSRecord.Problem.missing.description)
        }
        let body = try await get(host: Self.policyHost(domain), path: "/.well-known/mta-sts.txt", timeout: timeout)
        return (record, STSPolicy(parsing: String(decoding: body, as: UTF8.self)))
    }

    /// One HTTPS GET, trying the host's addresses in turn (IPv4 first).
    func get(host: String, path: String, timeout: Duration) async throws -> [UInt8] {
        var addresses: [IPAddress] = []
        var lookupError: DNSError?
        for ipv6 in [false, true] {
            do { addresses += try await dns.addresses(host, ipv6: ipv6) } catch { lookupError = error }
        }
        guard !addresses.isEmpty else {
            throw Failure("looking up \(host): \(lookupError.map { "\($0)" } ?? "no addresses")")
        }
        var lastError: any Error = Failure("no address of \(host) answered")
        for ip in addresses {
            do {
                let address = try SocketAddress(ipAddress: ip.description, port: port)
                return try await get(from: address, host: host, path: path, timeout: timeout)
            } catch let failure as Failure {
                throw failure  // the server answered: another address would not help
            } catch {
                lastError = error
            }
        }
        throw Failure("\(lastError)")
    }

    func get(from address: SocketAddress, host: String, path: String, timeout: Duration) async throws -> [UInt8] {
        let context = tlsContext
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(TimeAmount(timeout))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let tls = try NIOSSLClientHandler(context: context, serverHostname: host)
                    try channel.pipeline.syncOperations.addHandler(tls)
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector(limit: Self.maximumBodyBytes))
                }
            }
            .connect(to: address).get()
        let promise = channel.eventLoop.makePromise(of: (HTTPResponseHead, [UInt8]).self)
        let deadline = channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            promise.fail(Failure("timed out after \(timeout)"))
            channel.close(promise: nil)
        }
        defer {
            deadline.cancel()
            channel.close(promise: nil)
        }
        try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.handler(type: ResponseCollector.self).promise = promise
        }.get()
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
        head.headers.add(name: "Host", value: host)
        head.headers.add(name: "User-Agent", value: "chasquid")
        head.headers.add(name: "Connection", value: "close")
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        try await channel.writeAndFlush(HTTPClientRequestPart.end(nil))
        let (response, body) = try await promise.futureResult.get()
        guard response.status == .ok else {
            if (300..<400).contains(response.status.code) {
                throw Failure("HTTP response status code: \(response.status.code) (redirects not allowed in MTA-STS)")
            }
            throw Failure("HTTP response status code: \(response.status.code)")
        }
        let mediaType = response.headers.first(name: "Content-Type")?
            .split(separator: ";", maxSplits: 1).first?.trimmingWhitespace().lowercased() ?? ""
        guard mediaType == "text/plain" else {
            throw Failure("invalid HTTP media type \(mediaType.isEmpty ? "(none)" : mediaType)")
        }
        return body
    }
}

/// Gathers one response: its head and up to `limit` body bytes.
final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    let limit: Int
    var promise: EventLoopPromise<(HTTPResponseHead, [UInt8])>?
    private var head: HTTPResponseHead?
    private var body: [UInt8] = []

    init(limit: Int) { self.limit = limit }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body(let bytes):
            body.append(contentsOf: bytes.readableBytesView)
            if body.count > limit {
                finish(.failure(STSPolicyFetcher.Failure("policy larger than \(limit) bytes")))
                context.close(promise: nil)
            }
        case .end:
            if let head { finish(.success((head, body))) }
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(error))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(STSPolicyFetcher.Failure("connection closed before the whole response")))
        context.fireChannelInactive()
    }

    private func finish(_ result: Result<(HTTPResponseHead, [UInt8]), any Error>) {
        let promise = self.promise
        self.promise = nil
        promise?.completeWith(result)
    }
}

@available(*, unavailable)
extension ResponseCollector: Sendable {}
