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

    func authenticate(user: String, domain: String, password: String) async -> AuthCheck {
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

extension SessionStep {
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

/// A session plus a policy, driven by command lines the way the connection
/// handler drives it.
struct Harness {
    var session: Session
    var policy: FakePolicy

    static let hostname = "mx.example.org"
    static let maxDataSize = 50 * 1_048_576

    init(mode: ListenerMode = .smtp, onTLS: Bool = false, policy: FakePolicy = FakePolicy()) {
        session = Session(mode: mode, hostname: Harness.hostname, maxDataSize: Harness.maxDataSize, onTLS: onTLS)
        self.policy = policy
    }

    /// One line from the client: a command, or the answer to a 334 challenge.
    mutating func send(_ line: String) async -> SessionStep {
        if session.isAwaitingAuthResponse {
            return await session.handleAuthResponse(bytes(line), policy: policy)
        }
        return await session.handle(Command(line: bytes(line)), policy: policy)
    }

    /// Sends each line and requires every reply to be a success (< 400).
    mutating func ok(_ lines: String..., sourceLocation: SourceLocation = #_sourceLocation) async {
        for line in lines {
            let step = await send(line)
            #expect(step.reply.code < 400, "\(line) -> \(step)", sourceLocation: sourceLocation)
        }
    }

    /// TLS, then a successful AUTH PLAIN as juan@example.com.
    mutating func authenticate(sourceLocation: SourceLocation = #_sourceLocation) async {
        if !session.info.onTLS { session.tlsEstablished(serverName: nil) }
        await ok("EHLO client.example", "AUTH PLAIN " + plain("", "juan@example.com", "secret"), sourceLocation: sourceLocation)
        #expect(session.info.isAuthenticated, sourceLocation: sourceLocation)
    }
}
