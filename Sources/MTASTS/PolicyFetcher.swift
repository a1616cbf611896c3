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

    /// chasquid reads at most 10 KiB of a policy and ignores the rest
    /// (COMPAT.md §13); real policies are a few hundred bytes.
    public static let maximumBodyBytes = 10 * 1024

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

    /// The TXT record and the parsed (not yet checked) policy, all within
    /// `timeout`: the lookups are cancelled and the connection closed at it.
    public func fetch(domain: String, timeout: Duration) async throws -> (STSRecord, STSPolicy) {
        try await withThrowingTaskGroup(of: (STSRecord, STSPolicy)?.self) { group in
            let deadline = Deadline(at: .now() + TimeAmount(timeout), failure: Failure("timed out after \(timeout)"))
            group.addTask { try await fetchWithoutDeadline(domain: domain, deadline: deadline) }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw deadline.failure
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let result { return result }
            }
            throw Failure("timed out after \(timeout)")
        }
    }

    /// When the whole fetch must be over, and what it says then.
    struct Deadline: Sendable {
        var at: NIODeadline
        var failure: Failure
    }

    func fetchWithoutDeadline(domain: String, deadline: Deadline) async throws -> (STSRecord, STSPolicy) {
        let record: STSRecord
        do {
            record = try STSRecord.find(in: try await dns.txt("_mta-sts." + domain))
        } catch let error as DNSError where error.isNameNotFound {
            throw Failure(STSRecord.Problem.missing.description)
        }
        let body = try await get(host: Self.policyHost(domain), path: "/.well-known/mta-sts.txt", deadline: deadline)
        return (record, STSPolicy(parsing: String(decoding: body, as: UTF8.self)))
    }

    /// One HTTPS GET, trying the host's addresses in turn (IPv4 first)
    /// until one connects.
    func get(host: String, path: String, deadline: Deadline) async throws -> [UInt8] {
        let (addresses, errors) = await dns.allAddresses(host)
        guard !addresses.isEmpty else {
            throw Failure("looking up \(host): \(errors.last.map { "\($0)" } ?? "no addresses")")
        }
        var lastError: any Error = Failure("no address of \(host) answered")
        for ip in addresses {
            let channel: any Channel
            let response: EventLoopFuture<(HTTPResponseHead, [UInt8])>
            do {
                (channel, response) = try await connect(
                    to: try SocketAddress(ipAddress: ip.description, port: port), host: host, deadline: deadline)
            } catch {
                lastError = error
                continue
            }
            // Connected: whatever happens now is this server's answer.
            return try await exchange(channel: channel, response: response, host: host, path: path)
        }
        throw Failure("\(lastError)")
    }

    /// A TLS connection with the response collector in place, its promise
    /// made before any byte can arrive; the channel is closed at `deadline`.
    func connect(
        to address: SocketAddress, host: String, deadline: Deadline
    ) async throws -> (any Channel, EventLoopFuture<(HTTPResponseHead, [UInt8])>) {
        let context = tlsContext
        let eventLoop = group.next()
        let promise = eventLoop.makePromise(of: (HTTPResponseHead, [UInt8]).self)
        do {
            let channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(max(.nanoseconds(0), deadline.at - .now()))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let tls = try NIOSSLClientHandler(context: context, serverHostname: host)
                        try channel.pipeline.syncOperations.addHandler(tls)
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(
                            ResponseCollector(limit: Self.maximumBodyBytes, promise: promise))
                    }
                }
                .connect(to: address).get()
            let timer = eventLoop.scheduleTask(deadline: deadline.at) {
                promise.fail(deadline.failure)
                channel.close(promise: nil)
            }
            promise.futureResult.whenComplete { _ in timer.cancel() }
            return (channel, promise.futureResult)
        } catch {
            promise.fail(error)
            throw error
        }
    }

    func exchange(
        channel: any Channel, response: EventLoopFuture<(HTTPResponseHead, [UInt8])>, host: String, path: String
    ) async throws -> [UInt8] {
        defer { channel.close(promise: nil) }
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
        head.headers.add(name: "Host", value: host)
        head.headers.add(name: "User-Agent", value: "chasquid")
        head.headers.add(name: "Connection", value: "close")
        // A failed write shows up as the response's failure.
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let (answer, body) = try await response.get()
        guard answer.status == .ok else {
            if (300..<400).contains(answer.status.code) {
                throw Failure("HTTP response status code: \(answer.status.code) (redirects not allowed in MTA-STS)")
            }
            throw Failure("HTTP response status code: \(answer.status.code)")
        }
        // chasquid's words: Go's mime.ParseMediaType, then the type check.
        guard let contentType = answer.headers.first(name: "Content-Type"),
            let mediaType = contentType.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first?
                .trimmingWhitespace().lowercased(),
            !mediaType.isEmpty
        else {
            throw Failure("HTTP media type error: mime: no media type")
        }
        guard mediaType == "text/plain" else { throw Failure("invalid HTTP media type") }
        return body
    }
}

/// Gathers one response: its head and up to `limit` body bytes. The
/// promise is completed once; anything after is ignored.
final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    let limit: Int
    private var promise: EventLoopPromise<(HTTPResponseHead, [UInt8])>?
    private var head: HTTPResponseHead?
    private var body: [UInt8] = []

    init(limit: Int, promise: EventLoopPromise<(HTTPResponseHead, [UInt8])>) {
        self.limit = limit
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard promise != nil else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body(let bytes):
            body.append(contentsOf: bytes.readableBytesView.prefix(limit - body.count))
            if body.count >= limit, let head {
                // Enough: what follows is not read (chasquid's LimitReader).
                finish(.success((head, body)))
                context.close(promise: nil)
            }
        case .end:
            if let head { finish(.success((head, body))) }
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A server that closes without close_notify, with a body read until
        // the close: the decoder ends the body when the channel goes
        // inactive, so wait for that.
        if let tlsError = error as? NIOSSLError, case .uncleanShutdown = tlsError, head != nil { return }
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
