import CoreMetrics
import Synchronization

/// The server's metrics, by event. Everything goes through swift-metrics with
/// the factory given (in the daemon, Prometheus and expvar side by side), so
/// tests can give each server its own.
public final class ServerMetrics: Sendable {
    public let factory: any MetricsFactory

    /// Distinct label values kept per metric for labels that come from
    /// clients (`unknown<"XXXXXX">` commands): each value is a series
    /// forever, so past this many, new ones are counted together.
    public static let maxClientLabelValues = 100
    private let clientLabelValues = Mutex<[String: Set<String>]>([:])

    public init(factory: any MetricsFactory) {
        self.factory = factory
        // Plain ints exist from the start, at 0, as Go's expvar.NewInt does.
        for definition in MetricCatalog.all where definition.kind == .counter && definition.labelName == nil {
            count(definition, by: 0)
        }
        set(MetricCatalog.openConnections, 0)
        set(MetricCatalog.queueLength, 0)
    }

    /// A server whose metrics go nowhere (tools, tests that do not look).
    public static let discarding = ServerMetrics(factory: NOOPMetricsHandler.instance)

    /// Counts an event; `labelValue` must come from us, not from a client.
    public func count(_ definition: MetricDefinition, _ labelValue: String? = nil, by amount: Int = 1) {
        counters.handle(Series(definition, labelValue)) {
            Counter(label: definition.expvarName, dimensions: Self.dimensions(definition, labelValue), factory: factory)
        }.increment(by: amount)
    }

    /// Counts an event whose label a client chose: after
    /// `maxClientLabelValues` distinct ones, new ones count as `overflow`.
    public func count(_ definition: MetricDefinition, clientLabel: String, overflow: String) {
        let label = clientLabelValues.withLock { seen in
            if seen[definition.expvarName, default: []].contains(clientLabel) { return clientLabel }
            guard seen[definition.expvarName, default: []].count < Self.maxClientLabelValues else { return overflow }
            seen[definition.expvarName, default: []].insert(clientLabel)
            return clientLabel
        }
        count(definition, label)
    }

    public func set(_ definition: MetricDefinition, _ value: Double) {
        meter(definition).set(value)
    }

    public func adjust(_ definition: MetricDefinition, by amount: Double) {
        let meter = meter(definition)
        if amount >= 0 { meter.increment(by: amount) } else { meter.decrement(by: -amount) }
    }

    public func record(_ definition: MetricDefinition, _ labelValue: String, duration: Duration) {
        let (seconds, attoseconds) = duration.components
        timers.handle(Series(definition, labelValue)) {
            Timer(label: definition.expvarName, dimensions: Self.dimensions(definition, labelValue), factory: factory)
        }.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    private func meter(_ definition: MetricDefinition) -> Meter {
        meters.handle(Series(definition, nil)) { Meter(label: definition.expvarName, factory: factory) }
    }

    private static func dimensions(_ definition: MetricDefinition, _ labelValue: String?) -> [(String, String)] {
        definition.labelName.flatMap { name in labelValue.map { [(name, $0)] } } ?? []
    }

    // Each series' handler is made once: making one looks it up in every
    // backend's registry, too much for every SMTP command.
    private let counters = Handles<Counter>()
    private let meters = Handles<Meter>()
    private let timers = Handles<Timer>()
}

/// One metric and label value.
private struct Series: Hashable {
    var name: String
    var label: String?

    init(_ definition: MetricDefinition, _ label: String?) {
        name = definition.expvarName
        self.label = label
    }
}

/// swift-metrics handlers by series, made on first use.
private final class Handles<Metric: Sendable>: Sendable {
    private let cache = Mutex<[Series: Metric]>([:])

    func handle(_ series: Series, make: () -> Metric) -> Metric {
        cache.withLock { cache in
            if let metric = cache[series] { return metric }
            let metric = make()
            cache[series] = metric
            return metric
        }
    }
}
