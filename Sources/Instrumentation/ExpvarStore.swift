import CoreMetrics
import Synchronization

/// A swift-metrics backend that keeps the current values by expvar name, for
/// `/debug/vars`: an unlabelled counter is an int, a labelled one a map from
/// label value to int (Go's `expvar.Map`), a gauge its last value.
/// Histograms are left to `/metrics`.
public final class ExpvarStore: MetricsFactory, Sendable {
    public enum Value: Sendable, Equatable {
        case int(Int64)
        case map([String: Int64])
        case double(Double)
    }

    private let values = Mutex<[String: Value]>([:])

    public init() {}

    /// Every variable, by name.
    public var snapshot: [String: Value] { values.withLock { $0 } }

    /// The value of a gauge.
    public func double(_ name: String) -> Double? {
        if case .double(let v)? = values.withLock({ $0[name] }) { return v }
        return nil
    }

    /// The value of an int variable, or of one map entry.
    public func int(_ name: String, _ key: String? = nil) -> Int64? {
        switch values.withLock({ $0[name] }) {
        case .int(let v)? where key == nil: v
        case .map(let m)? where key != nil: m[key!]
        default: nil
        }
    }

    fileprivate func add(_ amount: Int64, to name: String, key: String?) {
        values.withLock { values in
            guard let key else {
                if case .int(let current)? = values[name] {
                    values[name] = .int(current &+ amount)
                } else {
                    values[name] = .int(amount)
                }
                return
            }
            // Taken out and put back, so the map is not copied on write.
            var map: [String: Int64] = [:]
            if case .map(let existing)? = values.removeValue(forKey: name) { map = existing }
            map[key, default: 0] &+= amount
            values[name] = .map(map)
        }
    }

    fileprivate func set(_ value: Double, name: String) {
        values.withLock { $0[name] = .double(value) }
    }

    fileprivate func addDouble(_ amount: Double, name: String) {
        values.withLock { values in
            if case .double(let current)? = values[name] {
                values[name] = .double(current + amount)
            } else {
                values[name] = .double(amount)
            }
        }
    }

    /// A map's key is its one label's value; with no labels it is an int.
    private static func key(_ dimensions: [(String, String)]) -> String? {
        dimensions.isEmpty ? nil : dimensions.map(\.1).joined(separator: ",")
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        let handler = ExpvarCounter(store: self, name: label, key: Self.key(dimensions))
        handler.increment(by: 0)
        return handler
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        ExpvarGauge(store: self, name: label)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        ExpvarGauge(store: self, name: label)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        aggregate ? NoExpvar() : ExpvarGauge(store: self, name: label)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler { NoExpvar() }

    public func destroyCounter(_ handler: any CounterHandler) {}
    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    public func destroyMeter(_ handler: any MeterHandler) {}
    public func destroyRecorder(_ handler: any RecorderHandler) {}
    public func destroyTimer(_ handler: any TimerHandler) {}
}

private final class ExpvarCounter: CounterHandler, Sendable {
    let store: ExpvarStore
    let name: String
    let key: String?

    init(store: ExpvarStore, name: String, key: String?) {
        self.store = store
        self.name = name
        self.key = key
    }

    func increment(by amount: Int64) { store.add(amount, to: name, key: key) }
    func reset() {}
}

private final class ExpvarGauge: FloatingPointCounterHandler, MeterHandler, RecorderHandler, Sendable {
    let store: ExpvarStore
    let name: String

    init(store: ExpvarStore, name: String) {
        self.store = store
        self.name = name
    }

    func increment(by amount: Double) { store.addDouble(amount, name: name) }
    func decrement(by amount: Double) { store.addDouble(-amount, name: name) }
    func set(_ value: Int64) { store.set(Double(value), name: name) }
    func set(_ value: Double) { store.set(value, name: name) }
    func record(_ value: Int64) { set(value) }
    func record(_ value: Double) { set(value) }
    func reset() { set(0.0) }
}

private final class NoExpvar: RecorderHandler, TimerHandler, Sendable {
    func record(_ value: Int64) {}
    func record(_ value: Double) {}
    func recordNanoseconds(_ duration: Int64) {}
}
