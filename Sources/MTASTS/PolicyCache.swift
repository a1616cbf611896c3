import DurableFiles
import Foundation
import IDNA

#if canImport(Glibc)
import Glibc
#endif

/// MTA-STS policies as chasquid caches them (COMPAT.md §5, §13):
/// `<data_dir>/sts-cache/pol:<domain>`, one JSON policy per file, whose
/// modification time is when it expires (fetch time + max_age). Expired,
/// unreadable or invalid entries are fetched again; a fetch that fails
/// leaves no policy (the domain is delivered to as without one).
public final class STSPolicyCache: Sendable {
    public let directory: String
    let fetcher: STSPolicyFetcher
    let now: @Sendable () -> Date
    let onEvent: @Sendable (Event) -> Void

    /// What happened, named as chasquid's `sts/cache/*` counters.
    public enum Event: String, Sendable, CaseIterable {
        case fetches, hits, expired, ioErrors, failedFetch, invalid, marshalErrors, unmarshalErrors
        case refreshCycles, refreshes, refreshErrors
    }

    public static let filePrefix = "pol:"

    /// Makes the directory if missing (0770); anything else in its place is
    /// an error, which stops the daemon's start-up.
    public init(
        directory: String, fetcher: STSPolicyFetcher, now: @escaping @Sendable () -> Date = { Date() },
        onEvent: @escaping @Sendable (Event) -> Void = { _ in }
    ) throws(FileError) {
        self.directory = directory
        self.fetcher = fetcher
        self.now = now
        self.onEvent = onEvent
        try makeDirectories(directory, mode: 0o770)
    }

    func path(_ domain: String) -> String? {
        // The raw domain names the file; one with a "/" has no place here.
        guard !domain.isEmpty, !domain.contains("/") else { return nil }
        return directory + "/" + Self.filePrefix + domain
    }

    /// The domain's policy: from the cache while it lasts, else fetched
    /// (within `timeout`), checked and stored. Nil when it has none.
    public func policy(for domain: String, timeout: Duration) async -> STSPolicy? {
        onEvent(.fetches)
        if let cached = load(domain) {
            onEvent(.hits)
            return cached
        }
        guard let fetched = await fetchChecked(domain, timeout: timeout) else {
            onEvent(.failedFetch)
            return nil
        }
        await store(domain, fetched)
        return fetched
    }

    func fetchChecked(_ domain: String, timeout: Duration) async -> STSPolicy? {
        guard let ascii = try? UTS46.toASCII(domain) else { return nil }
        guard let (_, policy) = try? await fetcher.fetch(domain: ascii, timeout: timeout) else { return nil }
        guard (try? policy.check()) != nil else { return nil }
        return policy
    }

    /// A cached policy still valid, or nil (counting why).
    func load(_ domain: String) -> STSPolicy? {
        guard let path = path(domain) else { return nil }
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        let expiry = Date(timeIntervalSince1970: TimeInterval(info.st_mtim.tv_sec) + TimeInterval(info.st_mtim.tv_nsec) / 1e9)
        guard expiry > now() else {
            onEvent(.expired)
            return nil
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            onEvent(.ioErrors)
            return nil
        }
        guard let policy = Self.decode(Array(data)) else {
            onEvent(.unmarshalErrors)
            return nil
        }
        guard (try? policy.check()) != nil else {
            onEvent(.invalid)
            return nil
        }
        return policy
    }

    /// Writes (and fsyncs) on a file thread, never on an event loop.
    func store(_ domain: String, _ policy: STSPolicy) async {
        guard let path = path(domain) else {
            onEvent(.ioErrors)
            return
        }
        // Kept at most as long as RFC 8461 allows, whatever max_age says.
        let age = min(policy.maxAge, STSPolicy.maximumMaxAge)
        let expiry = now().timeIntervalSince1970 + TimeInterval(age)
        let time = timespec(tv_sec: Int(expiry), tv_nsec: Int((expiry - expiry.rounded(.down)) * 1e9))
        let encoded = Self.encode(policy)
        do {
            try await offloaded { () throws(FileError) in
                try AtomicFile.write(encoded, to: path, mode: 0o640, modificationTime: time)
            }
        } catch {
            onEvent(.ioErrors)
        }
    }

    /// Fetches every cached domain's policy again and stores what is valid
    /// (chasquid does this every 10 minutes, the first pass at start-up).
    public func refresh(timeout: Duration) async {
        onEvent(.refreshCycles)
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
        for name in names where name.hasPrefix(Self.filePrefix) {
            if Task.isCancelled { return }
            let domain = String(name.dropFirst(Self.filePrefix.count))
            onEvent(.refreshes)
            guard let policy = await fetchChecked(domain, timeout: timeout) else {
                onEvent(.refreshErrors)
                continue
            }
            await store(domain, policy)
        }
    }

    /// Refreshes now and then every `interval`, until cancelled.
    public func refreshPeriodically(every interval: Duration, timeout: Duration) async {
        while !Task.isCancelled {
            await refresh(timeout: timeout)
            try? await Task.sleep(for: interval)
        }
    }

    // MARK: - The file format

    /// Go's json.Marshal of chasquid's Policy: these keys in this order,
    /// max_age in nanoseconds.
    static func encode(_ policy: STSPolicy) -> [UInt8] {
        func quoted(_ text: String) -> String {
            let data = (try? JSONSerialization.data(withJSONObject: [text], options: [.withoutEscapingSlashes])) ?? Data("[\"\"]".utf8)
            return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
        }
        let mx = policy.mxPatterns.map(quoted).joined(separator: ",")
        let nanoseconds = Int64(policy.maxAge) &* 1_000_000_000
        let text = "{\"version\":\(quoted(policy.version)),\"mode\":\(quoted(policy.modeText)),\"mx\":[\(mx)],\"max_age\":\(nanoseconds)}"
        return Array(text.utf8)
    }

    struct Stored: Decodable {
        var version: String
        var mode: String
        var mx: [String]?
        var max_age: Int64
    }

    static func decode(_ bytes: [UInt8]) -> STSPolicy? {
        guard let stored = try? JSONDecoder().decode(Stored.self, from: Data(bytes)) else { return nil }
        var policy = STSPolicy()
        policy.version = stored.version
        policy.modeText = stored.mode
        policy.mxPatterns = stored.mx ?? []
        policy.maxAge = Int(stored.max_age / 1_000_000_000)
        return policy
    }
}
