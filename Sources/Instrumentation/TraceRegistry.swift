import Synchronization

/// Where traces live: the active ones, and for each family a few recent ones
/// per latency bucket and the recent errors. Memory is bounded by
/// families × (buckets × `keptPerBucket` + `keptErrors`) finished traces.
public final class TraceRegistry: Sendable {
    /// A finished trace is kept in every bucket whose bound it reaches, as
    /// golang.org/x/net/trace does, so `≥0s` always has the latest ones.
    public static let latencyBuckets: [Duration] = [
        .zero, .milliseconds(50), .milliseconds(100), .milliseconds(200), .milliseconds(500), .seconds(1),
        .seconds(10), .seconds(100),
    ]

    public let keptPerBucket: Int
    public let keptErrors: Int
    /// Active traces beyond this many per family are not listed (they still run).
    public let maxActivePerFamily: Int

    private struct Family {
        var active: [UInt64: Trace] = [:]
        var buckets: [[Trace]] = Array(repeating: [], count: TraceRegistry.latencyBuckets.count)
        var errors: [Trace] = []
        var finishedCount = 0
    }
    private struct State {
        var nextID: UInt64 = 1
        var families: [String: Family] = [:]
    }
    private let state = Mutex(State())

    public init(keptPerBucket: Int = 10, keptErrors: Int = 20, maxActivePerFamily: Int = 1000) {
        self.keptPerBucket = keptPerBucket
        self.keptErrors = keptErrors
        self.maxActivePerFamily = maxActivePerFamily
    }

    public func start(family: String, title: String, parent: TraceLink? = nil) -> Trace {
        let id = state.withLock { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        let trace = Trace(id: id, family: family, title: title, parent: parent, registry: self)
        state.withLock { state in
            if state.families[family, default: Family()].active.count < maxActivePerFamily {
                state.families[family, default: Family()].active[id] = trace
            }
        }
        return trace
    }

    func finished(_ trace: Trace) {
        let elapsed = trace.elapsed
        let isError = trace.isError
        state.withLock { state in
            // Changed in place: copying a family would copy its active traces.
            Self.record(trace, elapsed: elapsed, isError: isError, in: &state.families[trace.family, default: Family()],
                keptPerBucket: keptPerBucket, keptErrors: keptErrors)
        }
    }

    private static func record(
        _ trace: Trace, elapsed: Duration, isError: Bool, in family: inout Family, keptPerBucket: Int, keptErrors: Int
    ) {
        family.active[trace.id] = nil
        family.finishedCount += 1
        for (index, bound) in latencyBuckets.enumerated() where elapsed >= bound {
            push(trace, into: &family.buckets[index], keeping: keptPerBucket)
        }
        if isError { push(trace, into: &family.errors, keeping: keptErrors) }
    }

    private static func push(_ trace: Trace, into ring: inout [Trace], keeping limit: Int) {
        ring.append(trace)
        if ring.count > limit { ring.removeFirst(ring.count - limit) }
    }

    /// One family's counts, for the summary table.
    public struct FamilySummary: Sendable {
        public var name: String
        public var active: Int
        /// Traces kept per latency bucket (same order as `latencyBuckets`).
        public var bucketCounts: [Int]
        public var errors: Int
        public var finishedTotal: Int
    }

    public var families: [FamilySummary] {
        state.withLock { state in
            state.families.keys.sorted().map { name in
                let family = state.families[name]!
                return FamilySummary(
                    name: name, active: family.active.count, bucketCounts: family.buckets.map(\.count),
                    errors: family.errors.count, finishedTotal: family.finishedCount)
            }
        }
    }

    public enum Selection: Sendable, Equatable {
        case active
        case bucket(Int)
        case errors
    }

    /// The traces of one family and selection, newest first.
    public func traces(family: String, _ selection: Selection) -> [TraceSnapshot] {
        let traces: [Trace] = state.withLock { state in
            guard let family = state.families[family] else { return [] }
            switch selection {
            case .active: return family.active.values.sorted { $0.id < $1.id }
            case .errors: return family.errors
            case .bucket(let index): return family.buckets.indices.contains(index) ? family.buckets[index] : []
            }
        }
        return traces.reversed().map(\.snapshot)
    }

    /// A trace by ID, while it is active or still kept.
    public func trace(id: UInt64) -> TraceSnapshot? {
        let found: Trace? = state.withLock { state in
            for family in state.families.values {
                if let trace = family.active[id] { return trace }
                if let trace = family.errors.first(where: { $0.id == id }) { return trace }
                for bucket in family.buckets {
                    if let trace = bucket.first(where: { $0.id == id }) { return trace }
                }
            }
            return nil
        }
        return found?.snapshot
    }
}
