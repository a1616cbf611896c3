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
            _ = Counter(label: definition.expvarName, factory: factory)
        }
        Meter(label: MetricCatalog.openConnections.expvarName, factory: factory).set(0)
        Meter(label: MetricCatalog.queueLength.expvarName, factory: factory).set(0)
    }

    /// A server whose metrics go nowhere (tools, tests that do not look).
    public static let discarding = ServerMetrics(factory: NOOPMetricsHandler.instance)

    /// Counts an event; `labelValue` must come from us, not from a client.
    public func count(_ definition: MetricDefinition, _ labelValue: String? = nil, by amount: Int = 1) {
        let dimensions = definition.labelName.flatMap { name in labelValue.map { [(name, $0)] } } ?? []
        Counter(label: definition.expvarName, dimensions: dimensions, factory: factory).increment(by: amount)
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
        Meter(label: definition.expvarName, factory: factory).set(value)
    }

    public func adjust(_ definition: MetricDefinition, by amount: Double) {
        let meter = Meter(label: definition.expvarName, factory: factory)
        if amount >= 0 { meter.increment(by: amount) } else { meter.decrement(by: -amount) }
    }

    public func record(_ definition: MetricDefinition, _ labelValue: String, duration: Duration) {
        let dimensions = definition.labelName.map { [($0, labelValue)] } ?? []
        let (seconds, attoseconds) = duration.components
        Timer(label: definition.expvarName, dimensions: dimensions, factory: factory)
            .recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
