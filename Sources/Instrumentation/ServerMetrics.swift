import CoreMetrics

/// The server's metrics, by event. Everything goes through swift-metrics with
/// the factory given (in the daemon, Prometheus and expvar side by side), so
/// tests can give each server its own.
public final class ServerMetrics: Sendable {
    public let factory: any MetricsFactory

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

    public func count(_ definition: MetricDefinition, _ labelValue: String? = nil, by amount: Int = 1) {
        let dimensions = definition.labelName.flatMap { name in labelValue.map { [(name, $0)] } } ?? []
        Counter(label: definition.expvarName, dimensions: dimensions, factory: factory).increment(by: amount)
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
