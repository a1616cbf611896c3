import DNS
import Synchronization

/// Failed AUTH attempts, counted per client network (an IPv4 address, an
/// IPv6 /64, since one host has a whole /64) and per account [SEC].
///
/// Past `freeFailures`, each failure delays the next attempts from that
/// network and on that account: `baseDelay`, doubling per failure, at most
/// `maxDelay`. A network
/// that fails `maxFailures` times, each within `window` of the last, is
/// refused (454) until `lockout` has passed since its last failure. An
/// account is only ever delayed, never refused, so its owner logs in from
/// elsewhere while someone guesses its password. Loopback clients (webmail
/// on this machine, speaking for many users) are counted per account only,
/// as fail2ban ignores them by default.
///
/// chasquid has no such limit: only the per-connection error budget, which
/// a client escapes by reconnecting (docs/security.md).
public final class AuthThrottle: Sendable {
    public struct Settings: Sendable {
        public var maxFailures = 10
        /// Typing mistakes: failures without any delay.
        public var freeFailures = 3
        public var window: Duration = .seconds(600)
        public var lockout: Duration = .seconds(900)
        public var baseDelay: Duration = .milliseconds(500)
        public var maxDelay: Duration = .seconds(8)
        /// Records kept before old ones are dropped, so guessing from many
        /// addresses cannot grow memory without bound.
        public var maxRecords = 10_000

        public init() {}

        /// The defaults, with the first delay given and the longest 16 times it.
        public init(baseDelay: Duration) {
            self.baseDelay = baseDelay
            maxDelay = baseDelay * 16
        }
    }

    public enum Verdict: Equatable, Sendable {
        /// Check the password, after waiting this long (zero: at once).
        case proceed(delay: Duration)
        /// Do not check: the network failed too often.
        case refuse
        /// Not yet: with the attempts still being checked, the network
        /// would reach its limit. Ask again once some are decided, so that
        /// parallel guesses are checked no more often than sequential ones,
        /// while parallel right passwords (a webmail host) just wait a moment.
        case wait
    }

    struct Record {
        var failures: Int
        var last: ContinuousClock.Instant
        /// Attempts let through whose password is still being checked: each
        /// counts towards the delay as a failure would, and an attempt that
        /// would reach the limit with them waits for their outcome.
        var pending = 0
    }

    public let settings: Settings
    private let now: @Sendable () -> ContinuousClock.Instant
    private let records = Mutex<[String: Record]>([:])

    public init(settings: Settings = Settings(), now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.settings = settings
        self.now = now
    }

    /// What to do with an attempt from `ip` as `account` (`user@domain`).
    /// An attempt let through is pending until `finished`: call it exactly
    /// once, whatever the outcome.
    public func attempt(ip: String, account: String) -> Verdict {
        let now = now()
        let keys = Self.keys(ip: ip, account: account)
        return records.withLock { records in
            if let network = keys.network.flatMap({ current(records[$0], now: now) }) {
                if isLocked(network, now: now) { return .refuse }
                if network.failures + network.pending >= settings.maxFailures { return .wait }
            }
            var counted = 0
            for key in keys.all {
                let record = current(records[key], now: now)
                counted = max(counted, (record?.failures ?? 0) + (record?.pending ?? 0))
                if records[key] == nil, records.count >= settings.maxRecords { prune(&records, now: now) }
                var updated = record ?? Record(failures: 0, last: now)
                updated.pending += 1
                records[key] = updated
            }
            return .proceed(delay: delay(afterFailures: counted))
        }
    }

    /// Whether the network is refused now: a delayed attempt asks again
    /// before its password is checked, since the guesses it waited behind
    /// may have locked the network meanwhile.
    public func isRefused(ip: String) -> Bool {
        let now = now()
        guard let key = Self.networkKey(ip) else { return false }
        return records.withLock { records in current(records[key], now: now).map { isLocked($0, now: now) } ?? false }
    }

    public enum Outcome: Sendable {
        case failed, succeeded
        /// Not decided (the back end failed, or the attempt was refused
        /// after its delay): nothing counted.
        case undecided
    }

    /// The end of an attempt `attempt` let through.
    public func finished(ip: String, account: String, outcome: Outcome) {
        let keys = Self.keys(ip: ip, account: account)
        records.withLock { records in
            for key in keys.all where (records[key]?.pending ?? 0) > 0 {
                records[key]?.pending -= 1
            }
        }
        switch outcome {
        case .failed: failed(ip: ip, account: account)
        case .succeeded: succeeded(account: account)
        case .undecided: break
        }
    }

    private func isLocked(_ network: Record, now: ContinuousClock.Instant) -> Bool {
        network.failures >= settings.maxFailures && now - network.last < settings.lockout
    }

    private static func keys(ip: String, account: String) -> (network: String?, all: [String]) {
        let network = networkKey(ip)
        return (network, [network, "user " + account].compactMap { $0 })
    }

    /// How many networks and accounts are remembered (tests).
    var recordCount: Int { records.withLock { $0.count } }

    /// A failed attempt.
    func failed(ip: String, account: String) {
        let now = now()
        records.withLock { records in
            for key in Self.keys(ip: ip, account: account).all {
                let record = current(records[key], now: now)
                if records[key] == nil, records.count >= settings.maxRecords { prune(&records, now: now) }
                records[key] = Record(failures: (record?.failures ?? 0) + 1, last: now, pending: record?.pending ?? 0)
            }
        }
    }

    /// A correct password: the account's count starts again. The network's
    /// does not, or one good account would reset a guesser's count.
    func succeeded(account: String) {
        records.withLock { records in
            guard let pending = records["user " + account]?.pending, pending > 0 else {
                records.removeValue(forKey: "user " + account)
                return
            }
            records["user " + account] = Record(failures: 0, last: now(), pending: pending)
        }
    }

    /// Failures still counting: the last one within the window, or a
    /// lockout still running.
    private func current(_ record: Record?, now: ContinuousClock.Instant) -> Record? {
        guard let record else { return nil }
        let keep = record.failures >= settings.maxFailures ? max(settings.window, settings.lockout) : settings.window
        return now - record.last < keep ? record : nil
    }

    private func delay(afterFailures failures: Int) -> Duration {
        let counted = failures - settings.freeFailures
        guard counted > 0 else { return .zero }
        var delay = settings.baseDelay
        for _ in 1..<min(counted, 16) where delay < settings.maxDelay { delay *= 2 }
        return min(delay, settings.maxDelay)
    }

    /// The network's record key; nil for loopback.
    static func networkKey(_ ip: String) -> String? {
        ClientNetwork.limited(ip).map { "net " + $0 }
    }

    private func prune(_ records: inout [String: Record], now: ContinuousClock.Instant) {
        records = records.filter { current($0.value, now: now) != nil }
        // Still full: keep every locked network, then the most recent of the
        // rest, so a flood of new names cannot end a lockout.
        if records.count >= settings.maxRecords {
            let locked = records.filter { $0.key.hasPrefix("net ") && $0.value.failures >= settings.maxFailures }
            let others = records.filter { locked[$0.key] == nil }.sorted { $0.value.last > $1.value.last }
                .prefix(max(0, settings.maxRecords / 2 - locked.count))
            records = locked.merging(others.map { ($0.key, $0.value) }) { old, _ in old }
        }
    }

}

/// The unit limits count clients by: one host has one IPv4 address, but a
/// whole IPv6 /64.
enum ClientNetwork {
    /// The address for IPv4 (an IPv4-mapped IPv6 address as IPv4), the
    /// first 64 bits for IPv6; text that is no address, as it is.
    static func of(_ ip: String) -> String {
        guard let address = IPAddress(ip)?.unmapped else { return ip }
        if address.isIPv4 { return "\(address)" }
        let prefix = IPAddress(bytes: Array(address.bytes.prefix(8)) + Array(repeating: 0, count: 8)) ?? address
        return "\(prefix)/64"
    }

    /// As `of`, but nil for loopback: software on this machine (webmail, a
    /// local proxy) speaks for many clients, and fail2ban ignores it too.
    static func limited(_ ip: String) -> String? {
        if let address = IPAddress(ip)?.unmapped,
            address.isIPv4 ? address.bytes[0] == 127 : address.bytes == Array(repeating: 0, count: 15) + [1]
        {
            return nil
        }
        return of(ip)
    }
}
