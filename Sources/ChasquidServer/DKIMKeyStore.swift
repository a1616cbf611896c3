import DKIM
import LocalDomains
import Synchronization

/// The DKIM keys of every local domain (`domains/<domain>/dkim:*.pem`).
/// Read at start-up, where a key that does not load stops the daemon, and
/// again on SIGHUP, where a failure keeps the keys already loaded; never on
/// the 30-second reload of users and aliases (chasquid reads keys once), so
/// a key file being written cannot stop those.
final class DKIMKeyStore: Sendable {
    private let keys = Mutex<[String: [DKIMKey]]>([:])

    struct LoadError: Error, CustomStringConvertible {
        var description: String
    }

    init(domains: DomainSnapshot) throws(LoadError) {
        try reload(domains: domains)
    }

    /// Every domain's keys, or the first that fails (and nothing changes).
    func reload(domains: DomainSnapshot) throws(LoadError) {
        var loaded: [String: [DKIMKey]] = [:]
        for domain in domains.domains.values {
            for result in domain.directories.flatMap({ DKIMKey.load(directory: $0) }) {
                switch result {
                case .success(let key): loaded[domain.name, default: []].append(key)
                case .failure(let error): throw LoadError(description: "DKIM key error: \(error)")
                }
            }
        }
        keys.withLock { $0 = loaded }
    }

    func keys(for domain: String) -> [DKIMKey] { keys.withLock { $0[domain] ?? [] } }
}
