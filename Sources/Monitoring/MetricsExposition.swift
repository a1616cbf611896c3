import Instrumentation

/// `/metrics` as chasquid writes it (COMPAT.md §19): swift-prometheus's text,
/// re-laid the way expvarom lays it out. Families sorted by name, each with
/// its `# HELP`, samples of a family in key order, and the expvarom trailer.
///
/// Counters are left untyped, as expvarom leaves them: the OpenMetrics
/// content type makes a typed counter's samples end in `_total`, and the §19
/// names cannot change. Gauges and histograms keep their `# TYPE` (§22.17).
public enum MetricsExposition {
    public static let contentType = "application/openmetrics-text; version=1.0.0; charset=utf-8"

    /// The converted names of the non-numeric variables, listed in the
    /// trailer as expvarom does (Go's `%q` of each, in expvar order).
    public static let ignoredVariables = ["chasquid_sourceDateStr", "chasquid_version", "cmdline", "memstats"]

    private struct Family {
        var name: String
        var type: String
        var samples: [String] = []
    }

    public static func render(prometheusText: String) -> String {
        var families: [String: Family] = [:]
        var current: String?
        for line in prometheusText.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4 else { continue }
                let name = String(parts[2])
                families[name] = families[name] ?? Family(name: name, type: String(parts[3]))
                current = name
            } else if line.hasPrefix("#") {
                continue
            } else if let current {
                families[current]?.samples.append(String(line))
            }
        }
        var out = ""
        for name in families.keys.sorted() {
            let family = families[name]!
            if let help = MetricCatalog.byPrometheusName[name]?.help {
                out += "# HELP \(name) \(help)\n"
            }
            var samples = family.samples
            switch family.type {
            case "histogram":
                // Bucket order matters; swift-prometheus writes it right.
                out += "# TYPE \(name) histogram\n"
            case "counter":
                samples.sort()
            default:
                out += "# TYPE \(name) \(family.type)\n"
                samples.sort()
            }
            for sample in samples { out += sample + "\n" }
        }
        out += "# HELP generated_by expvarom\n"
        out += "# HELP ignored_variables [" + ignoredVariables.map { "\"\($0)\"" }.joined(separator: " ") + "]\n"
        out += "# EOF\n"
        return out
    }
}
