import Foundation
import Synchronization
import Testing

@testable import SMTPCore

/// Records what a policy was asked, so tests can check it was (or was not) consulted.
final class CallLog: Sendable {
    private let calls = Mutex<[String]>([])

    func record(_ call: String) { calls.withLock { $0.append(call) } }
    var all: [String] { calls.withLock { $0 } }
    func contains(prefix: String) -> Bool { all.contains { $0.hasPrefix(prefix) } }
}

/// A policy made of plain values.
struct FakePolicy: SessionPolicy {
    /// Normalised local domains.
    var localDomains: Set<String> = ["example.com", "pingüino.example"]
    /// Normalised existing local addresses.
    var users: Set<String> = ["juan@example.com", "ana@example.com", "ñandú@pingüino.example"]
    /// Addresses whose lookup fails.
    var brokenLookups: Set<String> = ["broken@example.com"]
    /// "user@domain" (normalised; domain may be empty) to password.
    var passwords: [String: String] = ["juan@example.com": "secret", "solo@": "pw"]
    var authBackendFails = false
    /// Returned by checkSender (SPF / security level refusal).
    var senderRefusal: Reply?
    /// The SPF verdict checkSender reports.
    var senderSPF: SPFVerdict?
    let log = CallLog()

    func isLocal(domain: String) -> Bool {
        log.record("isLocal \(domain)")
        return localDomains.contains(domain)
    }

    func recipientExists(_ address: String) async -> RecipientCheck {
        log.record("exists \(address)")
        if brokenLookups.contains(address) { return .lookupFailed("disk on fire") }
        return users.contains(address) ? .exists : .unknown
    }

    func authenticate(user: String, domain: String, password: String, session: SessionInfo) async -> AuthCheck {
        log.record("auth \(user)|\(domain)|\(password)")
        if authBackendFails { return .backendFailed("dovecot unreachable") }
        return passwords["\(user)@\(domain)"] == password ? .accepted : .rejected
    }

    func checkSender(_ address: String, session: SessionInfo) async -> SenderCheck {
        log.record("sender \(address)")
        let logReason = senderRefusal.map { _ in "failed SPF: \(senderSPF?.reason ?? "test")" }
        return SenderCheck(refusal: senderRefusal, logReason: logReason, spf: senderSPF)
    }
}

/// What one client line led to, derived from the session's actions the way
/// the old step API named it: the last reply sent, and what came with it.
enum SessionStep: Equatable, CustomStringConvertible {
    case reply(Reply)
    case close(Reply)
    case startTLS(Reply)
    case readData(Reply)
    case authChallenge(Reply)

    init(actions: [SessionAction], state: Session.State) {
        var last: Reply?
        var kind = Kind.reply
        for action in actions {
            switch action {
            case .send(let replies): last = replies.last ?? last
            case .sendUncounted(let reply): last = reply
            case .startTLS(let reply):
                last = reply
                kind = .startTLS
            case .close: kind = .close
            default: break
            }
        }
        if kind == .reply {
            if case .data = state { kind = .readData }
            if case .auth = state { kind = .authChallenge }
        }
        let reply = last ?? Reply(0, "(no reply)")
        switch kind {
        case .reply: self = .reply(reply)
        case .close: self = .close(reply)
        case .startTLS: self = .startTLS(reply)
        case .readData: self = .readData(reply)
        case .authChallenge: self = .authChallenge(reply)
        }
    }

    var reply: Reply {
        switch self {
        case .reply(let r), .close(let r), .startTLS(let r), .readData(let r), .authChallenge(let r): r
        }
    }

    enum Kind: String { case reply, close, startTLS, readData, authChallenge }

    var kind: Kind {
        switch self {
        case .reply: .reply
        case .close: .close
        case .startTLS: .startTLS
        case .readData: .readData
        case .authChallenge: .authChallenge
        }
    }

    var description: String { "\(kind)(\(reply.code) \(reply.text))" }
}

extension [SessionAction] {
    /// Every reply the actions write, in order.
    var replies: [Reply] {
        flatMap { action -> [Reply] in
            switch action {
            case .send(let replies): replies
            case .sendUncounted(let reply), .startTLS(let reply): [reply]
            default: []
            }
        }
    }

    var notes: [SessionNote] {
        compactMap { if case .note(let note) = $0 { note } else { nil } }
    }

    /// The actions without their notes.
    var withoutNotes: [SessionAction] {
        filter { if case .note = $0 { false } else { true } }
    }
}

/// Checks a step's kind, code and (when given) the enhanced status code that
/// opens its text; reply texts are otherwise free-form (COMPAT.md §0).
func expectStep(
    _ step: SessionStep, _ kind: SessionStep.Kind, _ code: Int, _ enhanced: String? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(step.kind == kind, "\(step)", sourceLocation: sourceLocation)
    #expect(step.reply.code == code, "\(step)", sourceLocation: sourceLocation)
    if let enhanced {
        #expect(step.reply.text.hasPrefix(enhanced + " "), "\(step)", sourceLocation: sourceLocation)
    }
}

func base64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }

/// PLAIN response: authz NUL authc NUL password.
func plain(_ authz: String, _ authc: String, _ password: String) -> String {
    base64(authz + "\u{0}" + authc + "\u{0}" + password)
}

/// A session plus a policy, driven by bytes the way the connection drives
/// it. The error budget is off unless a test asks for it, so a test can send
/// any number of refused commands.
struct Harness {
    var session: Session
    var policy: FakePolicy
    /// The actions of the last event.
    var actions: [SessionAction] = []

    static let hostname = "mx.example.org"
    static let maxDataSize = 50 * 1_048_576

    init(
        mode: ListenerMode = .smtp, onTLS: Bool = false, policy: FakePolicy = FakePolicy(), maxErrors: Int = .max,
        maxDataSize: Int = Harness.maxDataSize
    ) {
        session = Session(
            mode: mode, hostname: Harness.hostname, maxDataSize: maxDataSize, onTLS: onTLS, maxErrors: maxErrors,
            now: { Date(timeIntervalSince1970: 1_136_214_245) })
        self.policy = policy
        actions = session.start()
    }

    /// One line from the client: a command, or the answer to a 334 challenge.
    mutating func send(_ line: String) async -> SessionStep {
        await sendBytes(Array((line + "\r\n").utf8))
    }

    /// Raw bytes from the client (several lines, part of one, DATA).
    mutating func sendBytes(_ bytes: [UInt8]) async -> SessionStep {
        actions = await session.received(bytes, policy: policy)
        return SessionStep(actions: actions, state: session.state)
    }

    /// Sends each line and requires every reply to be a success (< 400).
    mutating func ok(_ lines: String..., sourceLocation: SourceLocation = #_sourceLocation) async {
        for line in lines {
            let step = await send(line)
            #expect(step.reply.code < 400, "\(line) -> \(step)", sourceLocation: sourceLocation)
        }
    }

    /// The TLS handshake after a STARTTLS already sent.
    mutating func handshake(serverName: String? = nil) {
        actions = session.tlsEstablished(serverName: serverName, version: "TLS-1.3")
    }

    /// STARTTLS and a completed handshake.
    mutating func startTLS(serverName: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) async {
        let step = await send("STARTTLS")
        #expect(step.kind == .startTLS, "\(step)", sourceLocation: sourceLocation)
        actions = session.tlsEstablished(serverName: serverName, version: "TLS-1.3")
    }

    /// TLS, then a successful AUTH PLAIN as juan@example.com.
    mutating func authenticate(sourceLocation: SourceLocation = #_sourceLocation) async {
        if !session.info.onTLS { await startTLS(sourceLocation: sourceLocation) }
        await ok("EHLO client.example", "AUTH PLAIN " + plain("", "juan@example.com", "secret"), sourceLocation: sourceLocation)
        #expect(session.info.isAuthenticated, sourceLocation: sourceLocation)
    }

    /// EHLO, MAIL, RCPT and DATA accepted: the session is reading the DATA block.
    mutating func enterData(sourceLocation: SourceLocation = #_sourceLocation) async {
        await ok("EHLO client.example", "MAIL FROM:<a@remote.example>", "RCPT TO:<juan@example.com>", sourceLocation: sourceLocation)
        let step = await send("DATA")
        #expect(step.kind == .readData, "\(step)", sourceLocation: sourceLocation)
    }

    var isAwaitingAuthResponse: Bool {
        if case .auth = session.state { true } else { false }
    }
}
