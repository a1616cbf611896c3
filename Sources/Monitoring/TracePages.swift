import Instrumentation

/// `/debug/traces`: the families with their counts (errors first), one
/// family's traces by latency bucket, and one trace whole.
extension MonitoringSite {
    func tracesResponse(_ query: [String: String]) -> MonitoringResponse {
        if let idText = query["trace"] {
            guard let id = UInt64(idText), let trace = sources.traces.trace(id: id) else {
                return .text("trace \(idText) not found (finished traces are kept for a while only)\n", status: 404)
            }
            return .html(tracePage(trace))
        }
        if let family = query["fam"] {
            let selection: TraceRegistry.Selection
            switch query["b"] ?? "active" {
            case "active": selection = .active
            case "errors": selection = .errors
            case let text:
                guard let index = Int(text), TraceRegistry.latencyBuckets.indices.contains(index) else {
                    return .text("unknown bucket\n", status: 404)
                }
                selection = .bucket(index)
            }
            return .html(familyPage(family, selection))
        }
        return .html(summaryPage())
    }

    static func bucketName(_ index: Int) -> String {
        let bound = TraceRegistry.latencyBuckets[index]
        let milliseconds = bound.components.seconds * 1000 + bound.components.attoseconds / 1_000_000_000_000_000
        return milliseconds < 1000 ? "≥\(milliseconds)ms" : "≥\(milliseconds / 1000)s"
    }

    func summaryPage() -> String {
        let families = sources.traces.families
        var body = "<p>Every SMTP connection (<code>SMTP.Conn</code>), queue item (<code>Queue.Item</code>) and "
        body += "delivery attempt (<code>Delivery</code>) keeps a short log. Finished ones are kept "
        body += "\(sources.traces.keptPerBucket) per latency bucket and \(sources.traces.keptErrors) errors per family.</p>\n"
        body += "<table>\n<tr><th>Family</th><th class=\"num\">Errors</th><th class=\"num\">Active</th>"
        for index in TraceRegistry.latencyBuckets.indices {
            body += "<th class=\"num\">\(Self.bucketName(index))</th>"
        }
        body += "<th class=\"num\">Finished</th></tr>\n"
        // Families with errors first, then by name.
        let ordered = families.sorted { ($0.errors > 0 ? 0 : 1, $0.name) < ($1.errors > 0 ? 0 : 1, $1.name) }
        for family in ordered {
            let name = HTML.query(family.name)
            func link(_ count: Int, _ bucket: String) -> String {
                count == 0 ? "<span class=\"muted\">0</span>" : "<a href=\"/debug/traces?fam=\(name)&amp;b=\(bucket)\">\(count)</a>"
            }
            body += "<tr\(family.errors > 0 ? " class=\"error\"" : "")><td><code>\(HTML.escape(family.name))</code></td>"
            body += "<td class=\"num\">\(link(family.errors, "errors"))</td>"
            body += "<td class=\"num\">\(link(family.active, "active"))</td>"
            for (index, count) in family.bucketCounts.enumerated() {
                body += "<td class=\"num\">\(link(count, String(index)))</td>"
            }
            body += "<td class=\"num\">\(family.finishedTotal)</td></tr>\n"
        }
        body += "</table>\n"
        if families.isEmpty { body += "<p class=\"muted\">No traces yet.</p>\n" }
        return HTML.page(title: "Traces", hostname: sources.hostname, body: body)
    }

    func familyPage(_ family: String, _ selection: TraceRegistry.Selection) -> String {
        let traces = sources.traces.traces(family: family, selection)
        let what: String
        switch selection {
        case .active: what = "active"
        case .errors: what = "recent errors"
        case .bucket(let index): what = "recent, \(Self.bucketName(index))"
        }
        var body = "<p><a href=\"/debug/traces\">All families</a> · \(traces.count) trace\(traces.count == 1 ? "" : "s"), newest first.</p>\n"
        for trace in traces { body += traceBlock(trace, linkTitle: true) }
        return HTML.page(title: "\(family): \(what)", hostname: sources.hostname, body: body)
    }

    func tracePage(_ trace: TraceSnapshot) -> String {
        var body = "<p><a href=\"/debug/traces\">All families</a> · "
        body += "<a href=\"/debug/traces?fam=\(HTML.query(trace.family))&amp;b=0\">more <code>\(HTML.escape(trace.family))</code></a></p>\n"
        body += traceBlock(trace, linkTitle: false)
        return HTML.page(title: "\(trace.family) \(trace.title)", hostname: sources.hostname, body: body)
    }

    func traceBlock(_ trace: TraceSnapshot, linkTitle: Bool) -> String {
        var out = "<div class=\"trace\(trace.isError ? " error" : "")\">\n"
        let title = "<code>\(HTML.escape(trace.title))</code>"
        out += "<p><b>\(linkTitle ? "<a href=\"/debug/traces?trace=\(trace.id)\">\(title)</a>" : title)</b> "
        out += "<span class=\"muted\">#\(trace.id) · started \(HTML.time(trace.started)) · "
        out += "\(trace.isFinished ? "took" : "running for") \(HTML.duration(trace.elapsed))"
        out += trace.isError ? "</span> · <span class=\"error\">error</span></p>\n" : "</span></p>\n"
        if let parent = trace.parent {
            out += "<p>Part of <a href=\"/debug/traces?trace=\(parent.id)\">\(HTML.escape(parent.family)) "
            out += "<code>\(HTML.escape(parent.title))</code></a></p>\n"
        }
        if !trace.children.isEmpty {
            out += "<p>Child traces:</p><ul>\n"
            for child in trace.children {
                out += "<li><a href=\"/debug/traces?trace=\(child.id)\">\(HTML.escape(child.family)) "
                out += "<code>\(HTML.escape(child.title))</code></a></li>\n"
            }
            out += "</ul>\n"
        }
        out += "<table>\n"
        for event in trace.events {
            out += "<tr\(event.isError ? " class=\"error\"" : "")><td class=\"num muted\">+\(HTML.duration(event.elapsed))</td>"
            out += "<td class=\"mono\">\(HTML.escape(event.message))</td></tr>\n"
        }
        if trace.droppedEvents > 0 {
            out += "<tr><td></td><td class=\"muted\">(\(trace.droppedEvents) more events not kept)</td></tr>\n"
        }
        out += "</table>\n</div>\n"
        return out
    }
}
