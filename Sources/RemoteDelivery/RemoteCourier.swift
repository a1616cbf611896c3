import DNS
import DomainInfo
import Foundation
import GoCompat
import IDNA
import Instrumentation
import Courier
import MTASTS
import NIOCore
import NIOPosix
import NIOSSL
import Normalization
import SMTPClient
import SMTPCore

/// Delivers to other domains' servers over SMTP (COMPAT.md §12.5): MX
/// lookup, STARTTLS whenever offered with the certificate checked against
/// the MX name, downgrade protection from the per-domain levels, and
/// FORWARD recipients through their `via` servers.
public struct RemoteCourier: BatchCourier {
    public struct Settings: Sendable {
        /// Our name, for EHLO.
        public var hostname: String
        /// Port 25, or `-testing__outgoing_smtp_port`.
        public var port: Int
        public var connectTimeout: Duration = .seconds(60)
        /// For each reply; the whole session is bounded by `sessionTimeout`.
        public var replyTimeout: Duration = .seconds(300)
        public var sessionTimeout: Duration = .seconds(600)

        public init(hostname: String, port: Int) {
            self.hostname = hostname
            self.port = port
        }
    }

    /// Recipients per SMTP transaction (RFC 5321 §4.5.3.1.8).
    public static let maximumRecipientsPerTransaction = 100

    let settings: Settings
    let dns: any DNSLookup
    let levels: DomainInfoStore
    let verifyingContext: NIOSSLContext
    let nonVerifyingContext: NIOSSLContext
    let metrics: ServerMetrics

    /// MTA-STS policies (nil: none are looked at).
    let sts: STSPolicyCache?

    public init(
        settings: Settings, dns: any DNSLookup, levels: DomainInfoStore, metrics: ServerMetrics = .discarding,
        sts: STSPolicyCache? = nil
    ) throws {
        self.settings = settings
        self.metrics = metrics
        self.sts = sts
        self.dns = dns
        self.levels = levels
        verifyingContext = try Self.makeVerifyingContext()
        var lenient = TLSConfiguration.makeClientConfiguration()
        lenient.certificateVerification = .none
        nonVerifyingContext = try NIOSSLContext(configuration: lenient)
    }

    /// The system trust store, or what `SSL_CERT_FILE` / `SSL_CERT_DIR` name,
    /// read as Go reads them (TrustStore).
    static func trustRoots() -> NIOSSLTrustRoots {
        TrustStore.roots(environment: ProcessInfo.processInfo.environment)
    }

    /// A client context that verifies against those roots (for the MTA-STS
    /// policy hosts, which are checked as strictly as an enforced MX).
    public static func makeVerifyingContext() throws -> NIOSSLContext {
        var verifying = TLSConfiguration.makeClientConfiguration()
        verifying.certificateVerification = .fullVerification
        verifying.trustRoots = trustRoots()
        return try NIOSSLContext(configuration: verifying)
    }

    public func deliver(from: String, to: String, data: MessageData) async -> DeliveryResult {
        await deliver(from: from, to: [to], data: data, via: []).first ?? .temporary("no result")
    }

    public func deliver(from: String, to: String, data: MessageData, via: [String]) async -> DeliveryResult {
        await deliver(from: from, to: [to], data: data, via: via).first ?? .temporary("no result")
    }

    /// Several recipients at one domain, over one connection per server
    /// (COMPAT.md §22.15): one MAIL, one RCPT each, one DATA. Each recipient
    /// gets its own result; those still temporary after one server are
    /// tried at the next.
    public func deliver(from: String, to recipients: [String], data message: MessageData, via: [String]) async -> [DeliveryResult] {
        guard let first = recipients.first else { return [] }
        // SMTP sends the message whole (it is dot-stuffed as it goes).
        let data: [UInt8]
        do {
            data = try await message.bytes()
        } catch {
            return recipients.map { _ in .temporary("reading message data: \(error)") }
        }
        let domain = Address.domain(of: first)
        let asciiDomain = (try? UTS46.toASCII(domain)) ?? domain
        let hosts: [String]
        if !via.isEmpty {
            // FORWARD: the named servers, in order; no MX (§12.4).
            hosts = via
        } else {
            switch await MXList.lookup(asciiDomain, dns: dns) {
            case .hosts(let list): hosts = list
            case .temporaryFailure(let reason):
                Trace.current?.error("MX lookup for \(asciiDomain): \(reason)")
                return recipients.map { _ in .temporary(reason) }
            case .permanentFailure(let reason):
                Trace.current?.error("MX lookup for \(asciiDomain): \(reason)")
                return recipients.map { _ in .permanent(reason) }
            }
        }
        Trace.current?.log("servers for \(asciiDomain): \(hosts.joined(separator: ", "))")
        // MTA-STS (RFC 8461), never for FORWARD: an enforce policy skips the
        // MX hosts it does not list and needs verified TLS to the others.
        var policy: STSPolicy?
        if via.isEmpty, let sts {
            policy = await sts.policy(for: domain, timeout: .seconds(60))
            if let policy {
                metrics.count(MetricCatalog.stsModes, policy.modeText)
                Trace.current?.log("MTA-STS policy for \(domain): \(policy.goDescription)")
            }
        }
        let enforce = policy?.mode == .enforce
        var results = [DeliveryResult?](repeating: nil, count: recipients.count)
        var lastErrors = [String](repeating: "no servers to try", count: recipients.count)
        var tried = [Bool](repeating: false, count: recipients.count)
        for host in hosts {
            let pending = recipients.indices.filter { results[$0] == nil }
            if pending.isEmpty { break }
            if let policy, !policy.allows(mx: host) {
                Trace.current?.log("\(goQuoted(host)) skipped as per MTA-STS policy")
                // A skip never hides why an earlier server failed.
                for index in pending where !tried[index] { lastErrors[index] = "\(host) skipped as per MTA-STS policy" }
                continue
            }
            if let policy, policy.mode == .testing, !policy.lists(host) {
                Trace.current?.log("\(goQuoted(host)) not in the MTA-STS policy (testing mode: tried anyway)")
            }
            // RFC 5321 §4.5.3.1.8: servers need take no more than 100
            // recipients per transaction; larger batches go in several.
            for start in stride(from: 0, to: pending.count, by: Self.maximumRecipientsPerTransaction) {
                let chunk = Array(pending[start..<min(start + Self.maximumRecipientsPerTransaction, pending.count)])
                let attempt = Attempt(
                    courier: self, host: host, levelKey: domain, isImplicitMX: via.isEmpty && host == asciiDomain,
                    stsEnforce: enforce, from: from, recipients: chunk.map { recipients[$0] }, data: data)
                for (index, result) in zip(chunk, await attempt.run()) {
                    switch result {
                    case .sent, .permanent: results[index] = result
                    case .temporary(let reason):
                        lastErrors[index] = reason
                        tried[index] = true
                    }
                }
            }
        }
        return recipients.indices.map { index in
            if let result = results[index] { return result }
            // chasquid wraps it even when there was one server to try.
            return .temporary("all MXs returned transient failures (last: \(lastErrors[index]))")
        }
    }
}

/// One try at one server, through every fallback: TLS with a verified
/// certificate, TLS without, then plaintext.
struct Attempt {
    let courier: RemoteCourier
    let host: String
    /// The domain whose security level applies (the recipient's).
    let levelKey: String
    /// The host is the recipient domain itself, for want of MX records.
    let isImplicitMX: Bool
    /// An MTA-STS enforce policy applies: only verified TLS will do.
    var stsEnforce = false
    let from: String
    let recipients: [String]
    let data: [UInt8]

    var settings: RemoteCourier.Settings { courier.settings }

    /// The same result for every recipient.
    func all(_ result: DeliveryResult) -> [DeliveryResult] { recipients.map { _ in result } }

    enum TLSMode {
        case verified
        case unverified
        case none
    }

    func run() async -> [DeliveryResult] {
        let addresses: [SocketAddress]
        switch await resolve() {
        case .success(let list): addresses = list
        case .failure(let error): return all(error.result)
        }
        // A server that offers STARTTLS gets it; a handshake that fails is
        // tried without the certificate check, then in plaintext (≥1.12).
        var mode = TLSMode.verified
        while true {
            let outcome = await session(addresses: addresses, mode: mode)
            switch outcome {
            case .done(let result): return result
            case .tlsFailed(let reason):
                switch mode {
                case .verified: mode = .unverified
                case .unverified: mode = .none
                case .none: return all(.temporary(reason))
                }
            case .startTLSRefused(let reason):
                if mode == .none { return all(.temporary(reason)) }
                mode = .none
            }
        }
    }

    struct Failure: Error {
        var result: DeliveryResult
    }

    /// The host's addresses, A before AAAA; an IP literal (or `host:port`
    /// from a `via` list) as it is.
    func resolve() async -> Result<[SocketAddress], Failure> {
        let endpoint = HostPort(host) ?? HostPort(host: host, port: nil)
        let name = endpoint.host
        let port = endpoint.port ?? settings.port
        if let literal = IPAddress(name), let address = try? SocketAddress(ipAddress: literal.description, port: port) {
            return .success([address])
        }
        var addresses: [SocketAddress] = []
        var lastError: DNSError?
        var notFound = 0
        for ipv6 in [false, true] {
            do {
                for ip in try await courier.dns.addresses(name, ipv6: ipv6) {
                    if let address = try? SocketAddress(ipAddress: ip.description, port: port) {
                        addresses.append(address)
                    }
                }
            } catch {
                lastError = error
                if error.isNameNotFound { notFound += 1 }
            }
        }
        // No such domain: a transient failure, as chasquid does (COMPAT.md
        // §12.5: a dial error is transient), so a resolver's passing
        // NXDOMAIN for a new domain does not bounce mail.
        if addresses.isEmpty, isImplicitMX, notFound == 2 {
            // Go's dial error for it, as chasquid records it.
            return .failure(Failure(result: .temporary("Could not dial: dial tcp: lookup \(name): no such host")))
        }
        if addresses.isEmpty {
            if let lastError, lastError.isTemporary {
                return .failure(Failure(result: .temporary("Could not dial: dial tcp: lookup \(name): \(lastError)")))
            }
            return .failure(Failure(result: .temporary("Could not dial: dial tcp: lookup \(name): no such host")))
        }
        return .success(addresses)
    }

    enum SessionOutcome {
        case done([DeliveryResult])
        case tlsFailed(String)
        /// The server refused the STARTTLS command itself: only plaintext is left.
        case startTLSRefused(String)
    }

    /// The hostname to send as SNI and to check the certificate against:
    /// not an IP literal, without a port.
    var serverName: String? {
        let name = (HostPort(host) ?? HostPort(host: host, port: nil)).host
        return name.isEmpty || IPAddress(name) != nil ? nil : name
    }

    func session(addresses: [SocketAddress], mode: TLSMode) async -> SessionOutcome {
        var connection: ClientConnection?
        var greeting = Reply(0, "")
        var dialErrors: [String] = []
        for address in addresses {
            Trace.current?.log("connecting to \(host) at \(address) (\(mode == .verified ? "TLS, verified" : mode == .unverified ? "TLS, not verified" : "plain text"))")
            do {
                (connection, greeting) = try await ClientConnection.connect(
                    to: address, connectTimeout: settings.connectTimeout, greetingTimeout: settings.replyTimeout,
                    sessionTimeout: settings.sessionTimeout)
                break
            } catch {
                Trace.current?.log("could not connect: \(error)")
                dialErrors.append("\(error)")
            }
        }
        guard let connection else {
            return .done(all(.temporary("Could not dial: \(dialErrors.last ?? host)")))
        }
        defer { connection.close() }
        do {
            return try await converse(connection, greeting: greeting, mode: mode)
        } catch let failure as Failure {
            return .done(all(failure.result))
        } catch {
            return .done(all(.temporary("\(error)")))
        }
    }

    func converse(_ connection: ClientConnection, greeting: Reply, mode: TLSMode) async throws -> SessionOutcome {
        let timeout = settings.replyTimeout
        // A refusal at the greeting or at HELO is about this server, not
        // the message: try the next MX (COMPAT.md §12.5 step 6).
        let trace = Trace.current
        trace?.log("< \(greeting.summary)")
        guard greeting.code == 220 else {
            throw Failure(result: .temporary("Error creating client: \(greeting.goText)"))
        }
        var capabilities = try await hello(connection)
        var level = SecurityLevel.plain
        if capabilities.has("STARTTLS") && mode != .none {
            let reply = try await connection.command("STARTTLS", timeout: timeout)
            trace?.log("> STARTTLS, < \(reply.summary)")
            guard reply.code == 220 else {
                courier.metrics.count(MetricCatalog.outgoingTLSCount, "tls:failed")
                return .startTLSRefused("TLS error: \(reply.goText)")
            }
            let context = mode == .verified ? courier.verifyingContext : courier.nonVerifyingContext
            do {
                try await connection.startTLS(
                    context: context, serverName: serverName, timeout: settings.connectTimeout)
                capabilities = try await hello(connection)
            } catch {
                // chasquid makes one handshake and checks the certificate
                // after; we make a verified one first, so only the failure
                // of the unverified one is chasquid's `tls:failed`.
                if mode == .verified {
                    trace?.log("TLS handshake with certificate verification failed: \(error)")
                } else {
                    courier.metrics.count(MetricCatalog.outgoingTLSCount, "tls:failed")
                    trace?.error("TLS handshake failed: \(error)")
                }
                return .tlsFailed("TLS error: \(error)")
            }
            level = mode == .verified ? .tlsSecure : .tlsInsecure
            courier.metrics.count(MetricCatalog.outgoingTLSCount, mode == .verified ? "tls:secure" : "tls:insecure")
            trace?.log("TLS established (\(mode == .verified ? "certificate verified" : "certificate not verified"))")
        } else {
            courier.metrics.count(MetricCatalog.outgoingTLSCount, "plain")
        }
        // Downgrade protection [SEC]: a level below what this domain has
        // shown before is a transient failure; the next MX may do better.
        let allowed = await courier.levels.outgoingAllowed(domain: levelKey, level: level)
        courier.metrics.count(MetricCatalog.outgoingSecurityLevelChecks, allowed ? "pass" : "fail")
        trace?.log("security level \(level.name) for \(levelKey): \(allowed ? "allowed" : "refused")")
        guard allowed else {
            throw Failure(result: .temporary("Security level check failed (level:\(level.name))"))
        }
        if stsEnforce {
            // RFC 8461 §4.2: the connection must be validated by TLS.
            guard level == .tlsSecure else {
                courier.metrics.count(MetricCatalog.stsSecurity, "fail")
                trace?.error("invalid security level (\(level.name)) for STS policy")
                throw Failure(result: .temporary("invalid security level (\(level.name)) for STS policy"))
            }
            courier.metrics.count(MetricCatalog.stsSecurity, "pass")
            trace?.log("STS policy: connection is using valid TLS")
        }
        let results = try await transaction(connection, capabilities: capabilities)
        _ = try? await connection.command("QUIT", timeout: .seconds(10))
        return .done(results)
    }

    /// EHLO, or HELO if the server does not know EHLO.
    func hello(_ connection: ClientConnection) async throws -> ServerCapabilities {
        let reply = try await connection.command("EHLO \(settings.hostname)", timeout: settings.replyTimeout)
        if reply.code == 250 { return ServerCapabilities(ehloReply: reply) }
        let helo = try await connection.command("HELO \(settings.hostname)", timeout: settings.replyTimeout)
        guard helo.code == 250 else { throw Failure(result: .temporary("Error saying hello: \(helo.goText)")) }
        return .none
    }

    /// MAIL, the RCPTs and DATA; pipelined when the server offers it (RFC
    /// 2920): MAIL and every RCPT go in one write, their replies are read in
    /// order, and DATA follows only if a recipient was accepted.
    func transaction(_ connection: ClientConnection, capabilities: ServerCapabilities) async throws -> [DeliveryResult] {
        let timeout = settings.replyTimeout
        var results = [DeliveryResult?](repeating: nil, count: recipients.count)
        let needsUTF8 = WireAddress.needsSMTPUTF8(from) || recipients.contains(where: WireAddress.needsSMTPUTF8)
        var mailFrom = from == "<>" ? "" : from
        var rcptTo: [String?] = recipients
        var parameters = ""
        if capabilities.has("8BITMIME") { parameters += " BODY=8BITMIME" }
        if needsUTF8 {
            if capabilities.has("SMTPUTF8") {
                parameters += " SMTPUTF8"
            } else {
                // Without SMTPUTF8, domains go as A-labels; a UTF-8 local
                // part cannot be sent at all (§12.5 step 5). Each recipient
                // on its own: one that cannot be sent does not hold back the
                // others.
                do {
                    mailFrom = try WireAddress.ascii(mailFrom)
                } catch {
                    throw Failure(result: .permanent(Self.wireFailure(error)))
                }
                for index in recipients.indices {
                    do {
                        rcptTo[index] = try WireAddress.ascii(recipients[index])
                    } catch {
                        rcptTo[index] = nil
                        results[index] = .permanent(Self.wireFailure(error))
                    }
                }
            }
        }
        if let limit = capabilities.sizeLimit, data.count > limit {
            throw Failure(result: .permanent("MAIL+RCPT 552 \"message of \(data.count) bytes is over the server's SIZE \(limit)\""))
        }
        let sendable = recipients.indices.filter { rcptTo[$0] != nil }
        guard !sendable.isEmpty else { return results.map { $0 ?? .temporary("no result") } }
        let mailCommand = "MAIL FROM:<\(mailFrom)>\(parameters)"
        let rcptCommands = sendable.map { "RCPT TO:<\(rcptTo[$0]!)>" }
        var rcptReplies: [Reply] = []
        if capabilities.has("PIPELINING") {
            try await connection.sendCommands([mailCommand] + rcptCommands)
            let mailReply = try await connection.readReply(timeout: timeout)
            do {
                for _ in rcptCommands { rcptReplies.append(try await connection.readReply(timeout: timeout)) }
            } catch {
                // A server may refuse MAIL and hang up: its refusal is the answer.
                try check(mailReply, expect: 250, step: "MAIL+RCPT")
                throw error
            }
            try check(mailReply, expect: 250, step: "MAIL+RCPT")
        } else {
            try check(try await connection.command(mailCommand, timeout: timeout), expect: 250, step: "MAIL+RCPT")
            for command in rcptCommands { rcptReplies.append(try await connection.command(command, timeout: timeout)) }
        }
        let trace = Trace.current
        trace?.log("> \(mailCommand)")
        var accepted: [Int] = []
        for (index, reply) in zip(sendable, rcptReplies) {
            trace?.log("> RCPT TO:<\(rcptTo[index]!)>, < \(reply.summary)")
            if reply.code == 250 || reply.code == 251 {
                accepted.append(index)
            } else {
                results[index] = failure(reply, step: "MAIL+RCPT")
            }
        }
        guard !accepted.isEmpty else {
            _ = try? await connection.command("RSET", timeout: .seconds(10))
            return results.map { $0 ?? .temporary("no result") }
        }
        // From here on, a failure concerns only the accepted recipients: the
        // refused ones keep their own results.
        // chasquid's step names: `DATA` for the command, `DATA writing:`
        // for the body, `DATA closing` for the final reply.
        let dataOutcome: DeliveryResult
        do {
            let go = try await connection.command("DATA", timeout: timeout)
            if go.code == 354 {
                do {
                    try await connection.send(encodeDataBlock(data))
                } catch {
                    throw Failure(result: .temporary("DATA writing: \(error)"))
                }
                let final: Reply
                do {
                    final = try await connection.readReply(timeout: settings.sessionTimeout)
                } catch {
                    throw Failure(result: .temporary("DATA closing \(error)"))
                }
                trace?.log("> DATA (\(data.count) bytes), < \(final.summary)")
                dataOutcome = final.code == 250 ? .sent : failure(final, step: "DATA closing")
            } else {
                dataOutcome = failure(go, step: "DATA")
            }
        } catch let failure as Failure {
            dataOutcome = failure.result
        } catch {
            dataOutcome = .temporary("DATA \(error)")
        }
        for index in accepted { results[index] = dataOutcome }
        return results.map { $0 ?? dataOutcome }
    }

    /// chasquid's texts for an address that cannot go to a server without
    /// SMTPUTF8 (its client's 599 errors, in the MAIL+RCPT step).
    static func wireFailure(_ error: WireAddress.Failure) -> String {
        switch error {
        case .nonASCIILocalPart:
            "MAIL+RCPT 599 \"local part is not ASCII but server does not support SMTPUTF8\""
        case .invalidDomain:
            "MAIL+RCPT 599 \"non-ASCII domain is not IDNA safe\""
        }
    }

    /// A refusal as a result: 5xx permanent, anything else for now.
    func failure(_ reply: Reply, step: String) -> DeliveryResult {
        let text = "\(step) \(reply.goText)"
        return reply.code >= 500 && reply.code < 600 ? .permanent(text) : .temporary(text)
    }

    /// A reply other than the one expected ends the attempt: 5xx
    /// permanently, anything else for now.
    func check(_ reply: Reply, expect code: Int, step: String) throws {
        guard reply.code != code else { return }
        throw Failure(result: failure(reply, step: step))
    }
}

extension Reply {
    var summary: String { "\(code) \(lines.joined(separator: " "))" }

    /// A refusal as chasquid's errors show it: the code, then the text of
    /// every line (joined by line breaks) Go-quoted, e.g.
    /// `550 "5.7.23 SPF check failed: matched all"`.
    var goText: String { "\(code) \(goQuoted(lines.joined(separator: "\n")))" }
}
