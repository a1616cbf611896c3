import CoreMetrics
import Instrumentation
import Prometheus

/// The metrics the monitoring server shows, recorded into two backends at
/// once: swift-prometheus's registry for `/metrics`, and the expvar store
/// for `/debug/vars`.
public struct MetricsBackends: Sendable {
    public let prometheus: PrometheusCollectorRegistry
    public let expvar: ExpvarStore
    /// What the rest of the server counts through.
    public let metrics: ServerMetrics

    public init() {
        prometheus = PrometheusCollectorRegistry()
        expvar = ExpvarStore()
        var factory = PrometheusMetricsFactory(registry: prometheus)
        // swift-metrics labels are expvar names; Prometheus gets expvarom's conversion.
        factory.nameAndLabelSanitizer = { (MetricDefinition.prometheusName($0), $1) }
        for definition in MetricCatalog.all {
            if case .histogram(let buckets) = definition.kind {
                factory.durationHistogramBuckets[definition.prometheusName] = buckets.map { .nanoseconds(Int64($0 * 1e9)) }
            }
        }
        metrics = ServerMetrics(factory: MultiplexMetricsHandler(factories: [factory, expvar]))
    }
}
