import Aliases
import DNS
import Dispatch
import DomainInfo
import DovecotAuth
import Foundation
import IDNA
import Instrumentation
import LocalDomains
import MailLog
import Normalization
import SMTPCore
import SPF
import Synchronization

/// The server's answers to the session's questions, from the live domains.
public struct ServerPolicy: SessionPolicy {
    let domains: LocalDomainStore
    let aliasHook: ResolveHook?
    /// The fallback users database, when `dovecot_auth` is on.
    let dovecot: DovecotAuth?
    let mailLog: MailLog
    /// SPF for unauthenticated senders; nil turns the check off (tests).
    let spf: SPFChecker?
    /// Per-domain TLS levels, for the incoming downgrade check.
    let securityLevels: DomainInfoStore?
    let metrics: ServerMetrics
    /// Failed AUTH attempts per client network and account; nil: no limit.
    let authThrottle: AuthThrottle?
    /// `require_sender_match`: authenticated users send only as themselves.
    let requireSenderMatch: Bool

    /// How long one SPF check may take in all; RFC 7208 §4.6.4 asks for at
    /// least 20 seconds. Past it the result is temperror, which accepts.
    public static let spfDeadline: Duration = .seconds(20)

    public init(
        domains: LocalDomainStore, aliasHook: ResolveHook?, dovecot: DovecotAuth? = nil, mailLog: MailLog, spf: SPFChecker?,
        securityLevels: DomainInfoStore?, metrics: ServerMetrics = .discarding, authThrottle: AuthThrottle? = nil,
        requireSenderMatch: Bool = false
    ) {
        self.requireSenderMatch = requireSenderMatch
        self.metrics = metrics
        self.authThrottle = authThrottle
        self.domains = domains
        self.aliasHook = aliasHook
        self.dovecot = dovecot
        self.mailLog = mailLog
        self.spf = spf
        self.securityLevels = securityLevels
    }

    /// A resolver over the current snapshot.
    public func resolver() -> Resolver {
        // A user our database does not know may be Dovecot's; Dovecot down
        // is an error (a 451 at RCPT), never "no such user".
        var dovecotExists: Resolver.UserExists?
        if let dovecot {
            dovecotExists = { user, domain in try await dovecot.exists(Self.dovecotName(user: user, domain: domain)) }
        }
        return domains.snapshot.resolver(
            rules: domains.rules, hook: aliasHook?.asResolverHook, extraUserExists: dovecotExists)
    }

    /// The name Dovecot is asked about: `user@domain`, or `user` alone.
    static func dovecotName(user: String, domain: String) -> String {
        domain.isEmpty ? user : user + "@" + domain
    }

    public func isLocal(domain: String) -> Bool { domains.snapshot.isLocal(domain) }

    public func recipientExists(_ address: String) async -> RecipientCheck {
        do {
            return try await resolver().exists(address) ? .exists : .unknown
        } catch {
            return .lookupFailed("\(error)")
        }
    }

    public func authenticate(user: String, domain: String, password: String, session: SessionInfo) async -> AuthCheck {
        let account = domain.isEmpty ? user : user + "@" + domain
        let ip = session.remoteIP ?? ""
        guard let authThrottle else {
            return await checkCredentials(user: user, domain: domain, password: password)
        }
        var verdict = authThrottle.attempt(ip: ip, account: account)
        // Attempts in flight would reach the limit: wait for their outcome
        // (checks take about 100 ms), at most as long as a slow check.
        let waitUntil = ContinuousClock.now + .seconds(30)
        while verdict == .wait && ContinuousClock.now < waitUntil && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
            verdict = authThrottle.attempt(ip: ip, account: account)
        }
        switch verdict {
        case .refuse, .wait:
            return await refuseThrottled(ip: ip)
        case .proceed(let delay):
            if delay > .zero {
                try? await Task.sleep(for: delay)
                // The guesses this one waited behind may have locked the network.
                if authThrottle.isRefused(ip: ip) {
                    authThrottle.finished(ip: ip, account: account, outcome: .undecided)
                    return await refuseThrottled(ip: ip)
                }
            }
        }
        let checked = await checkCredentials(user: user, domain: domain, password: password)
        switch checked {
        case .accepted: authThrottle.finished(ip: ip, account: account, outcome: .succeeded)
        case .rejected: authThrottle.finished(ip: ip, account: account, outcome: .failed)
        case .backendFailed, .throttled: authThrottle.finished(ip: ip, account: account, outcome: .undecided)
        }
        return checked
    }

    /// Not counted: the lockout ends 15 minutes after the last real failure,
    /// whatever is tried meanwhile (a NAT's other users), and made-up names
    /// add no records. As slow as a check.
    private func refuseThrottled(ip: String) async -> AuthCheck {
        Trace.current?.error("AUTH refused: too many failed attempts from \(ClientNetwork.of(ip))")
        try? await Task.sleep(for: SMTPDefaults.authMinimumDuration)
        return .throttled
    }

    private func checkCredentials(user: String, domain: String, password: String) async -> AuthCheck {
        // Every attempt takes about the same time, whatever its outcome, so
        // timing tells nothing about which users exist [SEC].
        let start = ContinuousClock.now
        let users = domains.snapshot.domains[domain]?.users
        // scrypt takes tens of milliseconds of CPU: off the concurrency pool.
        var verdict: AuthCheck = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: users?.authenticate(user: user, password: password) ?? false)
            }
        } ? .accepted : .rejected
        // Our database first; Dovecot only for what it did not accept (§14).
        if verdict == .rejected, let dovecot {
            do {
                let name = Self.dovecotName(user: user, domain: domain)
                verdict = try await dovecot.authenticate(user: name, password: password) ? .accepted : .rejected
            } catch {
                Trace.current?.log("Dovecot: \(error)")
                verdict = .backendFailed("\(error)")
            }
        }
        let minimum = SMTPDefaults.authMinimumDuration
        let jitter = Duration.milliseconds(Int.random(in: 0...20))
        let elapsed = ContinuousClock.now - start
        if elapsed < minimum + jitter { try? await Task.sleep(for: minimum + jitter - elapsed) }
        return verdict
    }

    public func checkSender(_ address: String, session: SessionInfo) async -> SenderCheck {
        if requireSenderMatch, let user = session.authenticatedAs {
            switch await senderBelongs(address, to: user) {
            case .success(true): break
            case .success(false):
                return SenderCheck(
                    refusal: Reply(553, "5.7.1 Sender address not owned by \(user)"),
                    logReason: "sender not owned by authenticated user \(user)")
            case .failure(let error):
                return SenderCheck(
                    refusal: Reply(451, "4.3.0 Error checking the sender address, try again later"),
                    logReason: "error checking the sender against \(user): \(error)")
            }
        }
        // SPF only for strangers: an authenticated user may send as anyone (§12.2).
        guard !session.isAuthenticated, let spf, let ip = session.remoteIP.flatMap({ IPAddress($0) }) else {
            // chasquid counts the level check as skipped whenever SPF did not pass.
            metrics.count(MetricCatalog.incomingSecurityLevelChecks, "skip")
            return .accepted
        }
        let outcome = await Self.boundedCheck(slots: Self.spfSlots, deadline: Self.spfDeadline) {
            await spf.check(ip: ip.unmapped, helo: session.ehloDomain ?? "", sender: Self.asciiDomain(address))
        }
        let verdict = SPFVerdict(result: outcome.result.rawValue, reason: outcome.reason)
        metrics.count(MetricCatalog.spfResultCount, outcome.result.rawValue)
        Trace.current?.log("SPF \(outcome.result.rawValue) (\(outcome.reason ?? "no reason"))")
        if outcome.result == .fail {
            // Only a fail refuses; errors are tolerated (§12.2 step 6).
            let reason = outcome.reason ?? "<nil>"
            return SenderCheck(
                refusal: Reply(550, "5.7.23 SPF check failed: \(reason)"), logReason: "failed SPF: \(reason)",
                spf: verdict)
        }
        // The incoming security level, only after a pass, so that strangers
        // cannot raise another domain's level (COMPAT.md §13) [SEC]. It is
        // keyed on the normalised sender domain (§22.7).
        if outcome.result == .pass, let securityLevels {
            let domain = (try? Normalize.domain(Address.domain(of: address))) ?? Address.domain(of: address)
            let level: SecurityLevel = session.onTLS ? .tlsClient : .plain
            let allowed = await securityLevels.incomingAllowed(domain: domain, level: level)
            metrics.count(MetricCatalog.incomingSecurityLevelChecks, allowed ? "pass" : "fail")
            Trace.current?.log("incoming security level \(level) for \(domain): \(allowed ? "allowed" : "refused")")
            if !allowed {
                return SenderCheck(
                    refusal: Reply(550, "5.7.3 Security level check failed"),
                    logReason: "security level check failed", spf: verdict)
            }
        } else {
            metrics.count(MetricCatalog.incomingSecurityLevelChecks, "skip")
        }
        return SenderCheck(spf: verdict)
    }

    /// Whether `address` is `user`'s (`require_sender_match`): the user's
    /// own address, with any suffix or drop characters, or one whose
    /// aliases deliver (as email) to the user; nothing in a domain not ours.
    /// Resolved as RCPT would resolve it, so the answer matches where mail
    /// to the address goes.
    func senderBelongs(_ address: String, to user: String) async -> Result<Bool, ResolveError> {
        guard let normalized = try? Normalize.address(address), let owner = try? Normalize.address(user) else {
            return .success(false)
        }
        if normalized == owner { return .success(true) }
        guard isLocal(domain: Address.domain(of: normalized)) else { return .success(false) }
        do {
            let recipients = try await resolver().resolve(normalized)
            return .success(recipients.contains { $0.kind == .email && $0.address == owner })
        } catch {
            return .failure(error)
        }
    }

    /// The address with its domain in A-labels, which is what DNS holds.
    /// An address whose domain does not convert is left as it is; its SPF
    /// lookups then fail as an invalid domain.
    static func asciiDomain(_ address: String) -> String {
        guard let at = address.lastIndex(ofScalar: "@") else { return address }
        let domain = String(address.suffix(afterScalarAt: at))
        guard domain.utf8.contains(where: { $0 >= 0x80 }), let ascii = try? UTS46.toASCII(domain) else {
            return address
        }
        return address[..<at] + "@" + ascii
    }

    /// Runs `operation`, or gives nil once `deadline` has passed, whichever
    /// comes first; either way the other is cancelled and has ended when
    /// this returns, so no timer sleeps on and no lookup goes on after the
    /// reply (issue 13 §11). DNS lookups end when cancelled.
    static func withDeadline<T: Sendable>(
        _ deadline: Duration, _ operation: @escaping @Sendable () async -> T
    ) async -> T? {
        await withTaskGroup(of: T?.self) { group in
            group.addTask { await operation() }
            group.addTask {
                try? await Task.sleep(for: deadline)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// `check` once it holds one of `slots`, all within `deadline`; past
    /// it, waiting or checking, the result is temperror.
    static func boundedCheck(
        slots: AsyncLimiter, deadline: Duration, _ check: @escaping @Sendable () async -> SPFOutcome
    ) async -> SPFOutcome {
        let timedOut = SPFOutcome(result: .temperror, reason: "SPF check timed out")
        return await withDeadline(deadline) {
            guard await slots.acquire() else { return timedOut }
            defer { slots.release() }
            return await check()
        } ?? timedOut
    }

    /// SPF checks in flight at once, over all sessions. A check waits for a
    /// slot within its deadline; one that gets none is a temperror, as a
    /// slow DNS would be. Each session runs one check at a time, so the
    /// bound matters only under a flood of connections.
    public static let maxConcurrentSPFChecks = 200

    static let spfSlots = AsyncLimiter(limit: maxConcurrentSPFChecks)
}

/// At most `limit` holders at once; the others wait in turn. A waiter whose
/// task is cancelled stops waiting.
final class AsyncLimiter: Sendable {
    private struct State {
        var available: Int
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Bool, Never>)] = []
        var nextID: UInt64 = 0
    }

    private let state: Mutex<State>

    init(limit: Int) { state = Mutex(State(available: limit)) }

    /// Holders and waiters, for tests.
    var counts: (available: Int, waiting: Int) { state.withLock { ($0.available, $0.waiters.count) } }

    /// Waits for a slot: true once held (give it back with `release`),
    /// false if the task was cancelled first.
    func acquire() async -> Bool {
        let id = state.withLock { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let immediate: Bool? = state.withLock { state in
                    if Task.isCancelled { return false }
                    if state.available > 0 {
                        state.available -= 1
                        return true
                    }
                    state.waiters.append((id, continuation))
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                state.waiters.firstIndex { $0.id == id }.map { state.waiters.remove(at: $0).continuation }
            }
            waiter?.resume(returning: false)
        }
    }

    /// Gives a slot back: to the first waiter, or to the pool.
    func release() {
        let next = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            if state.waiters.isEmpty {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst().continuation
        }
        next?.resume(returning: true)
    }
}
