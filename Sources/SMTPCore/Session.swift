import Foundation
import Normalization

/// Which listener a connection came in on (COMPAT.md §3, mode names).
public enum ListenerMode: String, Sendable, CaseIterable {
    case smtp = "SMTP"
    case submission = "submission"
    case submissionTLS = "submission+TLS"

    /// Submission ports require AUTH before MAIL [SEC].
    public var requiresAuth: Bool { self != .smtp }
}

/// The questions a session asks the rest of the server. The SMTP logic stays
/// free of I/O; the server implements these with the domains, the users
/// databases, SPF and the queue, and tests with plain values.
public protocol SessionPolicy: Sendable {
    /// Is `domain` (normalised, Unicode) one of ours?
    func isLocal(domain: String) -> Bool
    /// Does the local `address` exist (aliases, users, catch-all)?
    func recipientExists(_ address: String) async -> RecipientCheck
    /// Checks credentials; `domain` may be empty.
    func authenticate(user: String, domain: String, password: String) async -> AuthCheck
    /// SPF and security-level checks on the sender (COMPAT.md §12.2 steps 6
    /// and 7).
    func checkSender(_ address: String, session: SessionInfo) async -> SenderCheck
}

public enum RecipientCheck: Equatable, Sendable {
    case exists
    case unknown
    case lookupFailed(String)
}

public enum AuthCheck: Equatable, Sendable {
    case accepted
    case rejected
    case backendFailed(String)
}

/// The verdict of the sender checks at MAIL FROM.
public struct SenderCheck: Equatable, Sendable {
    /// The reply refusing the sender; nil accepts.
    public var refusal: Reply?
    /// The mail-log reason for a refusal, in chasquid's words (§18).
    public var logReason: String?
    /// The SPF outcome, when SPF ran.
    public var spf: SPFVerdict?

    public init(refusal: Reply? = nil, logReason: String? = nil, spf: SPFVerdict? = nil) {
        self.refusal = refusal
        self.logReason = logReason
        self.spf = spf
    }

    public static let accepted = SenderCheck()
}

/// An SPF outcome as the session keeps it, for the `Received-SPF` and
/// `Authentication-Results` headers and the post-data hook.
public struct SPFVerdict: Equatable, Sendable {
    /// `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror` or `permerror`.
    public var result: String
    /// Why; nil prints as `<nil>`, as chasquid does.
    public var reason: String?

    public init(result: String, reason: String?) {
        self.result = result
        self.reason = reason
    }

    public var passed: Bool { result == "pass" }
}

/// What is known about the session, for policies and headers.
public struct SessionInfo: Equatable, Sendable {
    public var mode: ListenerMode
    /// The name we answer as: the hostname, or the TLS SNI name once known.
    public var serverName: String
    public var onTLS: Bool
    /// The first word of HELO/EHLO, unvalidated.
    public var ehloDomain: String?
    public var usedEHLO: Bool
    /// `user@domain` (or `user@`) once authenticated.
    public var authenticatedAs: String?
    public var authenticatedUser: String?
    public var authenticatedDomain: String?
    /// The client's IP address as text; nil when not known.
    public var remoteIP: String? = nil

    public var isAuthenticated: Bool { authenticatedAs != nil }
}

/// The envelope of the transaction in progress.
public struct Envelope: Equatable, Sendable {
    /// The sender as stored: domain normalised, or "<>".
    public var from: String
    /// Accepted recipients, before alias expansion.
    public var recipients: [String] = []
    /// The SPF outcome at MAIL FROM, when SPF ran.
    public var spf: SPFVerdict? = nil
}

/// A policy refusal worth a mail-log line (COMPAT.md §18): who, and why, in
/// chasquid's words.
public struct Rejection: Equatable, Sendable {
    public var from: String?
    public var to: [String]
    public var reason: String
}

/// What the connection must do next.
public enum SessionStep: Equatable, Sendable {
    case reply(Reply)
    /// Send the reply, then close.
    case close(Reply)
    /// Send the 220, then start the TLS handshake; anything the client sent
    /// after STARTTLS must be discarded, not read as commands [SEC].
    case startTLS(Reply)
    /// Send the 354, then read the DATA block and report it with `dataReceived`.
    case readData(Reply)
    /// Send the 334 challenge; the next line is the AUTH response.
    case authChallenge(Reply)
}

/// One SMTP session, command by command (RFC 5321 §4.1, COMPAT.md §12).
///
/// It owns the protocol state (greeting, envelope, AUTH, error budget) and
/// decides every reply; the connection handler only moves bytes.
public struct Session: Sendable {
    public private(set) var info: SessionInfo
    public private(set) var envelope: Envelope?
    /// Set when the last command was refused for a reason the mail log
    /// records; cleared by the next command.
    public private(set) var rejection: Rejection?
    /// The identity of the last AUTH attempt, for the mail log.
    public private(set) var lastAuthIdentity: String?
    public let maxDataSize: Int
    private var errors = 0
    /// The last step closes for a cross-protocol request: chasquid closes
    /// at once, outside the error budget.
    private var closingForHTTP = false
    private var awaitingAuthResponse = false

    public init(mode: ListenerMode, hostname: String, maxDataSize: Int, onTLS: Bool, remoteIP: String? = nil) {
        self.info = SessionInfo(
            mode: mode, serverName: hostname, onTLS: onTLS, ehloDomain: nil, usedEHLO: false,
            authenticatedAs: nil, authenticatedUser: nil, authenticatedDomain: nil, remoteIP: remoteIP)
        self.maxDataSize = maxDataSize
    }

    public var greeting: Reply { Reply(220, "\(info.serverName) ESMTP chasquid") }

    /// TLS is up (after STARTTLS or on an implicit-TLS port). The SNI name,
    /// if any, becomes the name we answer as. After STARTTLS the client must
    /// say EHLO again (RFC 3207 §4.2).
    public mutating func tlsEstablished(serverName: String?) {
        info.onTLS = true
        if let serverName, !serverName.isEmpty { info.serverName = serverName }
        info.ehloDomain = nil
        envelope = nil
    }

    /// Every reply goes through here before it is sent: errors count, and
    /// the last allowed one is replaced by 421 and closes [SEC].
    public mutating func account(_ step: SessionStep) -> SessionStep {
        let reply: Reply
        switch step {
        case .reply(let r), .close(let r), .startTLS(let r), .readData(let r), .authChallenge(let r): reply = r
        }
        guard reply.isError, !closingForHTTP else { return step }
        errors += 1
        if errors >= SMTPDefaults.maxErrors {
            return .close(Reply(421, "4.5.0 Too many errors, bye"))
        }
        return step
    }

    public var isAwaitingAuthResponse: Bool { awaitingAuthResponse }

    /// Handles one command line and returns what to do. Replies are not yet
    /// accounted: pass the result through `account`.
    public mutating func handle(_ command: Command, policy: some SessionPolicy) async -> SessionStep {
        rejection = nil
        closingForHTTP = false
        switch command.verb {
        case "HELO": return hello(command, extended: false)
        case "EHLO": return hello(command, extended: true)
        case "MAIL": return await mail(command, policy: policy)
        case "RCPT": return await rcpt(command, policy: policy)
        case "DATA": return data()
        case "RSET":
            envelope = nil
            return .reply(Reply(250, "2.0.0 OK"))
        case "NOOP": return .reply(Reply(250, "2.0.0 OK"))
        case "HELP": return .reply(Reply(214, "2.0.0 Hoy por ti, mañana por mi"))
        case "QUIT": return .close(Reply(221, "2.0.0 Be seeing you..."))
        case "VRFY", "EXPN": return .reply(Reply(502, "5.5.1 You have a strange feeling for a moment, then it passes."))
        case "STARTTLS": return startTLS()
        case "AUTH": return await auth(command, policy: policy)
        case _ where Command.httpVerbs.contains(command.verb):
            closingForHTTP = true
            return .close(Reply(502, "5.7.0 You hear someone cursing shoplifters"))
        default:
            return .reply(Reply(500, "5.5.1 Unknown command"))
        }
    }

    private mutating func hello(_ command: Command, extended: Bool) -> SessionStep {
        // Like Go's strings.Fields: blank arguments count as none.
        guard let first = command.argument.split(whereScalarSeparator: \.properties.isWhitespace).first, !first.isEmpty
        else {
            return .reply(Reply(501, "Invisible customers are not welcome!"))
        }
        info.ehloDomain = String(first)
        info.usedEHLO = extended
        guard extended else { return .reply(Reply(250, "\(info.serverName)")) }
        var lines = [
            "\(info.serverName) - Your hour of destiny has come.", "8BITMIME", "PIPELINING", "SMTPUTF8",
            "ENHANCEDSTATUSCODES", "SIZE \(maxDataSize)",
        ]
        // AUTH is never offered in plain text [SEC].
        lines.append(info.onTLS ? "AUTH PLAIN LOGIN" : "STARTTLS")
        lines.append("HELP")
        return .reply(Reply(250, lines: lines))
    }

    private mutating func mail(_ command: Command, policy: some SessionPolicy) async -> SessionStep {
        // COMPAT.md §12.2 order: the prefix, then AUTH on submission, then the token.
        let token: String?
        do {
            token = try PathArgument.extract(command.argument, prefix: "FROM:")
        } catch .missingPrefix {
            return .reply(Reply(500, "5.5.2 Unknown command"))
        } catch {
            token = nil
        }
        if info.mode.requiresAuth && !info.isAuthenticated {
            return .reply(Reply(550, "5.7.9 Mail to submission requires authentication"))
        }
        guard let token else { return .reply(Reply(500, "5.5.4 Malformed command")) }
        // MAIL starts a new transaction even if the address is then refused (§12.1).
        envelope = nil
        let parsed: Mailbox.ParseResult
        do {
            parsed = try Mailbox.parse(token)
        } catch {
            rejection = Rejection(from: token, to: [], reason: "malformed address: \(error.reason)")
            return .reply(Reply(501, "5.1.7 Sender address malformed"))
        }
        guard case .address(let address) = parsed else {
            // The null sender skips the remaining checks.
            envelope = Envelope(from: "<>")
            return .reply(Reply(250, "2.1.5 You feel like you are being watched"))
        }
        guard address.contains(scalar: "@") else {
            return .reply(Reply(501, "5.1.8 Sender address must contain a domain"))
        }
        guard address.utf8.count <= SMTPDefaults.maxAddressLength else {
            return .reply(Reply(501, "5.1.7 Sender address too long"))
        }
        // chasquid's order: SPF and the security level first, then IDNA
        // (an SPF failure outranks a malformed domain).
        let check = await policy.checkSender(address, session: info)
        if let refusal = check.refusal {
            rejection = Rejection(from: address, to: [], reason: check.logReason ?? refusal.text)
            return .reply(refusal)
        }
        let from: String
        do {
            from = try Normalize.domainToUnicode(address)
        } catch {
            rejection = Rejection(from: address, to: [], reason: "malformed address: \(error)")
            return .reply(Reply(501, "5.1.8 Malformed sender domain (IDNA conversion failed)"))
        }
        envelope = Envelope(from: from, spf: check.spf)
        return .reply(Reply(250, "2.1.5 You feel like you are being watched"))
    }

    private mutating func rcpt(_ command: Command, policy: some SessionPolicy) async -> SessionStep {
        // COMPAT.md §12.2 order: the prefix, then a sender, then the token.
        let token: String?
        do {
            token = try PathArgument.extract(command.argument, prefix: "TO:")
        } catch .missingPrefix {
            return .reply(Reply(500, "5.5.2 Unknown command"))
        } catch {
            token = nil
        }
        guard var current = envelope else { return .reply(Reply(503, "5.5.1 Sender not yet given")) }
        guard let token else { return .reply(Reply(500, "5.5.4 Malformed command")) }
        guard current.recipients.count < SMTPDefaults.maxRecipients else {
            return .reply(Reply(452, "4.5.3 Too many recipients"))
        }
        guard case .address(let raw) = try? Mailbox.parse(token), raw.contains(scalar: "@") else {
            rejection = Rejection(from: current.from, to: [token], reason: "malformed address: \(token)")
            return .reply(Reply(501, "5.1.3 Malformed destination address"))
        }
        let address: String
        do {
            address = try Normalize.domainToUnicode(raw)
        } catch {
            return .reply(Reply(501, "5.1.2 Malformed destination domain (IDNA conversion failed)"))
        }
        guard address.utf8.count <= SMTPDefaults.maxAddressLength else {
            return .reply(Reply(501, "5.1.3 Destination address too long"))
        }
        let domain = Address.domain(of: address)
        var recipient = address
        if !policy.isLocal(domain: domain) {
            // Never an open relay: only authenticated users send elsewhere [SEC].
            guard info.isAuthenticated else {
                rejection = Rejection(from: current.from, to: [address], reason: "relay not allowed")
                return .reply(Reply(503, "5.7.1 Relay not allowed"))
            }
        } else {
            let normalized: String
            do {
                normalized = try Normalize.address(address)
            } catch {
                rejection = Rejection(from: current.from, to: [address], reason: "invalid address: \(error)")
                return .reply(Reply(550, "5.1.3 Destination address is invalid"))
            }
            switch await policy.recipientExists(normalized) {
            case .exists: break
            case .unknown:
                rejection = Rejection(from: current.from, to: [address], reason: "local user does not exist")
                return .reply(Reply(550, "5.1.1 Destination address is unknown (user does not exist)"))
            case .lookupFailed(let reason):
                rejection = Rejection(
                    from: current.from, to: [address], reason: "error checking if user exists: \(reason)")
                return .reply(Reply(451, "4.4.3 Temporary error checking address"))
            }
            // Local recipients are kept Addr-normalised (COMPAT.md §8), as chasquid does.
            recipient = normalized
        }
        current.recipients.append(recipient)
        envelope = current
        return .reply(Reply(250, "2.1.5 You have an eerie feeling..."))
    }

    private mutating func data() -> SessionStep {
        guard info.ehloDomain != nil else { return .reply(Reply(503, "5.5.1 Invisible customers are not welcome!")) }
        guard let current = envelope else { return .reply(Reply(503, "5.5.1 Sender not yet given")) }
        guard !current.recipients.isEmpty else { return .reply(Reply(503, "5.5.1 Need an address to send to")) }
        return .readData(Reply(354, "You suddenly realize it is unnaturally quiet"))
    }

    /// How the DATA block ended, as the connection saw it.
    public enum DataOutcome: Equatable, Sendable {
        /// Read whole; the message was more than `maxDataSize` bytes.
        case tooBig
        /// A lone CR or LF: the connection must close [SEC].
        case bareLineEnding
        /// The connection failed while reading.
        case readError(String)
        /// Read whole; the server stored or refused it, with this reply.
        case processed(Reply)
    }

    /// Ends the DATA transaction. A successful one resets the envelope.
    public mutating func dataReceived(_ outcome: DataOutcome) -> SessionStep {
        rejection = nil
        if let envelope {
            switch outcome {
            case .tooBig:
                rejection = Rejection(from: envelope.from, to: envelope.recipients, reason: "message too big")
            case .processed(let reply) where reply.code == 554 && reply.text.hasPrefix("5."):
                // The DATA checks (header block, loops). Hook refusals are logged by the server.
                rejection = Rejection(from: envelope.from, to: envelope.recipients, reason: reply.text)
            default:
                break
            }
        }
        switch outcome {
        case .tooBig:
            envelope = nil
            return .reply(Reply(552, "5.3.4 Message too big"))
        case .bareLineEnding:
            return .close(Reply(521, "5.5.2 Error reading DATA: invalid line ending"))
        case .readError(let reason):
            return .close(Reply(554, "5.4.0 Error reading DATA: \(reason)"))
        case .processed(let reply):
            if reply.code == 250 { envelope = nil }
            return .reply(reply)
        }
    }

    private mutating func startTLS() -> SessionStep {
        if info.onTLS { return .reply(Reply(503, "5.5.1 You are already wearing that!")) }
        envelope = nil
        return .startTLS(Reply(220, "2.0.0 You experience a strange sense of peace"))
    }

    private var pendingAuthMechanism = ""

    private mutating func auth(_ command: Command, policy: some SessionPolicy) async -> SessionStep {
        guard info.onTLS else { return .reply(Reply(503, "5.7.10 You feel vulnerable")) }
        guard !info.isAuthenticated else { return .reply(Reply(503, "5.5.1 You are already wearing that!")) }
        let parts = command.argument.split(scalar: " ", maxSplits: 1).map(String.init)
        // Mechanism names are case-insensitive (RFC 4954; COMPAT.md §0, §22.4).
        let mechanism = parts.first?.uppercased() ?? ""
        switch mechanism {
        case "PLAIN":
            if parts.count == 2 { return await authPlain(response: parts[1], policy: policy) }
            pendingAuthMechanism = "PLAIN"
            awaitingAuthResponse = true
            return .authChallenge(Reply(334, ""))
        case "LOGIN":
            pendingAuthMechanism = "LOGIN-USER"
            awaitingAuthResponse = true
            if parts.count == 2 { return authLoginUser(parts[1]) }
            return .authChallenge(Reply(334, "VXNlcm5hbWU6"))  // "Username:"
        default:
            return .reply(Reply(534, "5.7.9 Unsupported mechanism"))
        }
    }

    private var loginUser = ""

    /// The client's answer to a 334 challenge.
    public mutating func handleAuthResponse(_ line: [UInt8], policy: some SessionPolicy) async -> SessionStep {
        let text = String(decoding: line, as: UTF8.self)
        if text == "*" {
            awaitingAuthResponse = false
            return .reply(Reply(501, "5.7.0 Authentication cancelled"))
        }
        switch pendingAuthMechanism {
        case "PLAIN":
            awaitingAuthResponse = false
            return await authPlain(response: text, policy: policy)
        case "LOGIN-USER":
            return authLoginUser(text)
        default:
            awaitingAuthResponse = false
            guard let password = Data(base64Encoded: text).map({ String(decoding: $0, as: UTF8.self) }) else {
                return .reply(Reply(501, "5.5.2 Error decoding AUTH response"))
            }
            return await finishAuth(identity: loginUser, password: password, policy: policy)
        }
    }

    private mutating func authLoginUser(_ response: String) -> SessionStep {
        guard let user = Data(base64Encoded: response) else {
            awaitingAuthResponse = false
            return .reply(Reply(501, "5.5.2 Error decoding AUTH response"))
        }
        loginUser = String(decoding: user, as: UTF8.self)
        pendingAuthMechanism = "LOGIN-PASSWORD"
        awaitingAuthResponse = true
        return .authChallenge(Reply(334, "UGFzc3dvcmQ6"))  // "Password:"
    }

    private mutating func authPlain(response: String, policy: some SessionPolicy) async -> SessionStep {
        // authzid NUL authcid NUL passwd (RFC 4616).
        guard let decoded = Data(base64Encoded: response) else {
            return .reply(Reply(501, "5.5.2 Error decoding AUTH response"))
        }
        let fields = decoded.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count == 3 else { return .reply(Reply(501, "5.5.2 Error decoding AUTH response")) }
        let authz = String(decoding: fields[0], as: UTF8.self)
        let authc = String(decoding: fields[1], as: UTF8.self)
        // Byte for byte, as chasquid compares them.
        if !authz.isEmpty && !authc.isEmpty && !authz.utf8.elementsEqual(authc.utf8) {
            return .reply(Reply(501, "5.5.2 Error decoding AUTH response: authz and authc differ"))
        }
        let identity = authc.isEmpty ? authz : authc
        return await finishAuth(identity: identity, password: String(decoding: fields[2], as: UTF8.self), policy: policy)
    }

    private mutating func finishAuth(identity: String, password: String, policy: some SessionPolicy) async -> SessionStep {
        lastAuthIdentity = identity
        let (rawUser, rawDomain) = Address.split(identity)
        guard let user = try? Normalize.user(rawUser),
            let domain = try? Normalize.domain(rawDomain)
        else {
            return .reply(Reply(535, "5.7.8 Incorrect user or password"))
        }
        switch await policy.authenticate(user: user, domain: domain, password: password) {
        case .accepted:
            info.authenticatedAs = user + "@" + domain
            info.authenticatedUser = user
            info.authenticatedDomain = domain
            return .reply(Reply(235, "2.7.0 Authentication successful"))
        case .rejected:
            return .reply(Reply(535, "5.7.8 Incorrect user or password"))
        case .backendFailed:
            return .reply(Reply(454, "4.7.0 Temporary authentication failure"))
        }
    }
}
