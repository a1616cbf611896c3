import Aliases
import Dispatch
import Foundation
import LocalDomains
import MailLog
import SMTPCore

/// The server's answers to the session's questions, from the live domains.
public struct ServerPolicy: SessionPolicy {
    let domains: LocalDomainStore
    let aliasHook: ResolveHook?
    let mailLog: MailLog

    public init(domains: LocalDomainStore, aliasHook: ResolveHook?, mailLog: MailLog) {
        self.domains = domains
        self.aliasHook = aliasHook
        self.mailLog = mailLog
    }

    /// A resolver over the current snapshot.
    public func resolver() -> Resolver {
        domains.snapshot.resolver(rules: domains.rules, hook: aliasHook?.asResolverHook)
    }

    public func isLocal(domain: String) -> Bool { domains.snapshot.isLocal(domain) }

    public func recipientExists(_ address: String) async -> RecipientCheck {
        do {
            return try await resolver().exists(address) ? .exists : .unknown
        } catch {
            return .lookupFailed("\(error)")
        }
    }

    public func authenticate(user: String, domain: String, password: String) async -> AuthCheck {
        // Every attempt takes about the same time, whatever its outcome, so
        // timing tells nothing about which users exist [SEC].
        let start = ContinuousClock.now
        let users = domains.snapshot.domains[domain]?.users
        // scrypt takes tens of milliseconds of CPU: off the concurrency pool.
        let accepted = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: users?.authenticate(user: user, password: password) ?? false)
            }
        }
        let minimum = SMTPDefaults.authMinimumDuration
        let jitter = Duration.milliseconds(Int.random(in: 0...20))
        let elapsed = ContinuousClock.now - start
        if elapsed < minimum + jitter { try? await Task.sleep(for: minimum + jitter - elapsed) }
        return accepted ? .accepted : .rejected
    }

    public func checkSender(_ address: String, session: SessionInfo) async -> Reply? {
        // SPF and the incoming security level arrive with issues 5 and 6.
        nil
    }
}
