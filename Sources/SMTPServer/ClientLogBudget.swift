import Synchronization

/// How many daemon-log lines one client network may cause (unknown
/// commands, failed AUTH, cross-protocol requests), so that garbage from
/// many connections cannot fill the log [SEC]. Each network has a bucket of
/// `burst` lines, refilled one line per `refill`; past it lines are dropped,
/// and the next line let through is followed by a count of those dropped.
/// The default (20 at once, then one every 3 s) keeps every line fail2ban
/// needs to ban a network (its default: 5 within 10 minutes).
public final class ClientLogBudget: Sendable {
    public struct Settings: Sendable {
        public var burst = 20
        public var refill: Duration = .seconds(3)
        /// Networks remembered; past it, the least recent are forgotten.
        public var maxNetworks = 10_000

        public init() {}
    }

    public enum Verdict: Equatable, Sendable {
        /// Log the line; `dropped` lines before it were not logged.
        case log(dropped: Int)
        case drop
    }

    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
        var dropped = 0
    }

    public let settings: Settings
    /// The client's network; nil: not limited (loopback: software on this
    /// machine, which fail2ban ignores too).
    private let networkOf: @Sendable (String) -> String?
    private let buckets = Mutex<[String: Bucket]>([:])

    public init(settings: Settings = Settings(), networkOf: @escaping @Sendable (String) -> String? = { $0 }) {
        self.settings = settings
        self.networkOf = networkOf
    }

    public func admit(ip: String, now: ContinuousClock.Instant = .now) -> Verdict {
        guard let key = networkOf(ip) else { return .log(dropped: 0) }
        let burst = Double(settings.burst)
        let refillSeconds = Double(settings.refill.components.seconds) + Double(settings.refill.components.attoseconds) / 1e18
        return buckets.withLock { buckets in
            var bucket = buckets[key] ?? Bucket(tokens: burst, updated: now)
            let elapsed = now - bucket.updated
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            bucket.tokens = min(burst, bucket.tokens + (refillSeconds > 0 ? seconds / refillSeconds : burst))
            bucket.updated = now
            let verdict: Verdict
            if bucket.tokens >= 1 {
                bucket.tokens -= 1
                verdict = .log(dropped: bucket.dropped)
                bucket.dropped = 0
            } else {
                bucket.dropped += 1
                verdict = .drop
            }
            if buckets[key] == nil, buckets.count >= settings.maxNetworks { prune(&buckets) }
            buckets[key] = bucket
            return verdict
        }
    }

    /// Networks remembered (tests).
    var count: Int { buckets.withLock { $0.count } }

    /// Forgets the least recently seen half: a network forgotten starts
    /// again with a full bucket, which only costs log lines.
    private func prune(_ buckets: inout [String: Bucket]) {
        let keep = buckets.sorted { $0.value.updated > $1.value.updated }.prefix(settings.maxNetworks / 2)
        buckets = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
    }
}
