import Foundation
import Normalization

/// What a command handler decided, before the error budget has its say.
enum CommandResult: Equatable, Sendable {
    case reply(Reply)
    /// Send the reply, then close.
    case close(Reply)
    /// Send the 220, then start the TLS handshake.
    case startTLS(Reply)
    /// Send the 354; the DATA block follows.
    case readData(Reply)
    /// Send the 334 challenge; the next line is the AUTH response.
    case authChallenge(Reply)

    var reply: Reply {
        switch self {
        case .reply(let r), .close(let r), .startTLS(let r), .readData(let r), .authChallenge(let r): r
        }
    }
}

/// The command handlers (RFC 5321 §4.1, COMPAT.md §12.1–12.2): each checks
/// its command against the state, asks the policy what it must, moves the
/// transaction on, and returns the reply.
extension Session {
    mutating func handle(_ command: Command, policy: some SessionPolicy) async -> CommandResult {
        switch command.verb {
        case "HELO": return hello(command, extended: false)
        case "EHLO": return hello(command, extended: true)
        case "MAIL": return await mail(command, policy: policy)
        case "RCPT": return await rcpt(command, policy: policy)
        case "DATA": return data()
        case "RSET":
            setTransaction(nil)
            return .reply(Reply(250, "2.0.0 OK"))
        case "NOOP": return .reply(Reply(250, "2.0.0 OK"))
        case "HELP": return .reply(Reply(214, "2.0.0 Hoy por ti, mañana por mi"))
        case "QUIT": return .close(Reply(221, "2.0.0 Be seeing you..."))
        case "VRFY", "EXPN": return .reply(Reply(502, "5.5.1 You have a strange feeling for a moment, then it passes."))
        case "STARTTLS": return startTLS()
        case "AUTH": return await auth(command, policy: policy)
        case _ where Command.httpVerbs.contains(command.verb):
            // A cross-protocol request: closed at once, outside the error budget.
            return .close(Reply(502, "5.7.0 You hear someone cursing shoplifters"))
        case _ where command.isTLSHandshake:
            // Implicit TLS to a plain-text port: the rest of its handshake
            // would be answered line by line until the error budget ran out.
            return .close(Reply(500, "5.5.1 TLS handshake on a plain-text port, use port 465 or STARTTLS"))
        default:
            return .reply(Reply(500, "5.5.1 Unknown command"))
        }
    }

    private mutating func hello(_ command: Command, extended: Bool) -> CommandResult {
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

    private mutating func mail(_ command: Command, policy: some SessionPolicy) async -> CommandResult {
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
        setTransaction(nil)
        let parsed: Mailbox.ParseResult
        do {
            parsed = try Mailbox.parse(token)
        } catch {
            rejection = Rejection(from: token, to: [], reason: "malformed address: \(error.reason)")
            return .reply(Reply(501, "5.1.7 Sender address malformed"))
        }
        guard case .address(let address) = parsed else {
            // The null sender skips the remaining checks.
            setTransaction(Envelope(from: "<>"))
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
        setTransaction(Envelope(from: from, spf: check.spf))
        return .reply(Reply(250, "2.1.5 You feel like you are being watched"))
    }

    private mutating func rcpt(_ command: Command, policy: some SessionPolicy) async -> CommandResult {
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
        setTransaction(current)
        return .reply(Reply(250, "2.1.5 You have an eerie feeling..."))
    }

    private mutating func data() -> CommandResult {
        guard info.ehloDomain != nil else { return .reply(Reply(503, "5.5.1 Invisible customers are not welcome!")) }
        guard let current = envelope else { return .reply(Reply(503, "5.5.1 Sender not yet given")) }
        guard !current.recipients.isEmpty else { return .reply(Reply(503, "5.5.1 Need an address to send to")) }
        return .readData(Reply(354, "You suddenly realize it is unnaturally quiet"))
    }

    private mutating func startTLS() -> CommandResult {
        if info.onTLS { return .reply(Reply(503, "5.5.1 You are already wearing that!")) }
        setTransaction(nil)
        return .startTLS(Reply(220, "2.0.0 You experience a strange sense of peace"))
    }

    private mutating func auth(_ command: Command, policy: some SessionPolicy) async -> CommandResult {
        guard info.onTLS else { return .reply(Reply(503, "5.7.10 You feel vulnerable")) }
        guard !info.isAuthenticated else { return .reply(Reply(503, "5.5.1 You are already wearing that!")) }
        let parts = command.argument.split(scalar: " ", maxSplits: 1).map(String.init)
        // Mechanism names are case-insensitive (RFC 4954; COMPAT.md §0, §22.4).
        let mechanism = parts.first?.uppercased() ?? ""
        switch mechanism {
        case "PLAIN":
            if parts.count == 2 { return await authPlain(response: parts[1], policy: policy) }
            state = .auth(.plain, envelope)
            return .authChallenge(Reply(334, ""))
        case "LOGIN":
            if parts.count == 2 { return authLoginUser(parts[1]) }
            state = .auth(.loginUser, envelope)
            return .authChallenge(Reply(334, "VXNlcm5hbWU6"))  // "Username:"
        default:
            return .reply(Reply(534, "5.7.9 Unsupported mechanism"))
        }
    }

    /// The client's answer to a 334 challenge. Whatever it is, the session
    /// leaves the AUTH step it was in (LOGIN may enter the next one).
    mutating func handleAuthResponse(
        _ line: [UInt8], step: AuthStep, envelope: Envelope?, policy: some SessionPolicy
    ) async -> CommandResult {
        setTransaction(envelope)
        let text = String(decoding: line, as: UTF8.self)
        if text == "*" { return .reply(Reply(501, "5.7.0 Authentication cancelled")) }
        switch step {
        case .plain:
            return await authPlain(response: text, policy: policy)
        case .loginUser:
            return authLoginUser(text)
        case .loginPassword(let user):
            guard let password = Data(base64Encoded: text).map({ String(decoding: $0, as: UTF8.self) }) else {
                return .reply(Reply(501, "5.5.2 Error decoding AUTH response"))
            }
            return await finishAuth(identity: user, password: password, policy: policy)
        }
    }

    private mutating func authLoginUser(_ response: String) -> CommandResult {
        guard let user = Data(base64Encoded: response) else {
            return .reply(Reply(501, "5.5.2 Error decoding AUTH response"))
        }
        state = .auth(.loginPassword(user: String(decoding: user, as: UTF8.self)), envelope)
        return .authChallenge(Reply(334, "UGFzc3dvcmQ6"))  // "Password:"
    }

    private mutating func authPlain(response: String, policy: some SessionPolicy) async -> CommandResult {
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

    private mutating func finishAuth(identity: String, password: String, policy: some SessionPolicy) async -> CommandResult {
        let (rawUser, rawDomain) = Address.split(identity)
        guard let user = try? Normalize.user(rawUser),
            let domain = try? Normalize.domain(rawDomain)
        else {
            authOutcome = (identity, false)
            return .reply(Reply(535, "5.7.8 Incorrect user or password"))
        }
        switch await policy.authenticate(user: user, domain: domain, password: password, session: info) {
        case .accepted:
            info.authenticatedAs = user + "@" + domain
            info.authenticatedUser = user
            info.authenticatedDomain = domain
            authOutcome = (user + "@" + domain, true)
            return .reply(Reply(235, "2.7.0 Authentication successful"))
        case .rejected:
            authOutcome = (identity, false)
            return .reply(Reply(535, "5.7.8 Incorrect user or password"))
        case .backendFailed:
            // Logged as a failed attempt, as chasquid does.
            authOutcome = (user + "@" + domain, false)
            return .reply(Reply(454, "4.7.0 Temporary authentication failure"))
        case .throttled:
            // Logged as a failed attempt too, so fail2ban counts it.
            authOutcome = (user + "@" + domain, false)
            return .reply(Reply(454, "4.7.0 Too many failed authentication attempts, try again later"))
        }
    }
}
