import ChasquidProto
import CoreMetrics
import Foundation
import Instrumentation
import MailQueue
import Prometheus
import Synchronization
import Testing

@testable import Monitoring

/// Metrics as the daemon sets them up: Prometheus and expvar side by side.
private struct Metrics {
    let backends = MetricsBackends()
    var server: ServerMetrics { backends.metrics }
    var expvar: ExpvarStore { backends.expvar }

    var exposition: String { MetricsExposition.render(prometheusText: backends.prometheus.emitToString()) }
}

@Suite struct MetricNameTests {
    @Test func expvarNamesConvertAsExpvaromDoes() {
        #expect(MetricDefinition.prometheusName("chasquid/smtpIn/commandCount") == "chasquid_smtpIn_commandCount")
        #expect(MetricDefinition.prometheusName("chasquid/sts/cache/ioErrors") == "chasquid_sts_cache_ioErrors")
        #expect(MetricDefinition.prometheusName("1x-y.z") == "i1x_y_z")
        #expect(MetricDefinition.prometheusName("ñ/a") == "__a")
    }

    @Test func everyCOMPATNameIsInTheCatalog() {
        let names = Set(MetricCatalog.all.map(\.expvarName))
        for name in [
            "smtpIn/commandCount", "smtpIn/responseCodeCount", "smtpIn/spfResultCount", "smtpIn/tlsCount",
            "smtpIn/securityLevelChecks", "smtpIn/hookResults", "smtpIn/wrongProtoCount", "smtpIn/loopsDetected",
            "aliases/hookResults", "queue/putCount", "queue/itemsWritten", "queue/dsnQueued", "queue/deliverAttempts",
            "smtpOut/tlsCount", "smtpOut/securityLevelChecks", "sourceDateTimestamp",
        ] {
            #expect(names.contains("chasquid/" + name), "\(name)")
        }
    }
}

@Suite struct ExpositionTests {
    @Test func theLayoutIsExpvaroms() {
        let metrics = Metrics()
        metrics.server.count(MetricCatalog.commandCount, "RCPT")
        metrics.server.count(MetricCatalog.commandCount, "EHLO")
        metrics.server.count(MetricCatalog.commandCount, "RCPT")
        metrics.server.count(MetricCatalog.putCount)
        metrics.server.set(MetricCatalog.queueLength, 3)
        let text = metrics.exposition
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)

        // Families in name order; map entries in key order; ints as ints.
        let commands = lines.firstIndex(of: "# HELP chasquid_smtpIn_commandCount count of SMTP commands received, by command")!
        #expect(lines[commands + 1] == #"chasquid_smtpIn_commandCount{command="EHLO"} 1"#)
        #expect(lines[commands + 2] == #"chasquid_smtpIn_commandCount{command="RCPT"} 2"#)
        #expect(lines.contains("chasquid_queue_putCount 1"))
        let names = lines.filter { $0.hasPrefix("# HELP chasquid") }.map { $0.split(separator: " ")[2] }
        #expect(names == names.sorted())

        // Counters untyped (their names cannot take OpenMetrics' _total); gauges typed.
        #expect(!text.contains("# TYPE chasquid_smtpIn_commandCount"))
        #expect(lines.contains("# TYPE chasquid_queue_items gauge"))
        #expect(lines.contains("chasquid_queue_items 3.0"))

        // The trailer, exactly.
        #expect(
            Array(lines.suffix(4)) == [
                "# HELP generated_by expvarom",
                #"# HELP ignored_variables ["chasquid_sourceDateStr" "chasquid_version" "cmdline" "memstats"]"#,
                "# EOF", "",
            ])
    }

    @Test func labelValuesAreEscaped() {
        let metrics = Metrics()
        metrics.server.count(MetricCatalog.commandCount, "unknown<\"A\\B\">")
        #expect(metrics.exposition.contains(#"chasquid_smtpIn_commandCount{command="unknown<\"A\\B\">"} 1"#))
    }

    @Test func histogramsKeepTheirBucketOrder() {
        let metrics = Metrics()
        metrics.server.record(MetricCatalog.deliveryDuration, "email:local", duration: .milliseconds(30))
        let lines = metrics.exposition.split(separator: "\n").map(String.init)
        let buckets = lines.filter { $0.hasPrefix("chasquid_delivery_attempt_duration_seconds_bucket") }
        // Our buckets (12 and +Inf), not swift-prometheus's default 11.
        guard case .histogram(let bounds) = MetricCatalog.deliveryDuration.kind else { return }
        #expect(buckets.count == bounds.count + 1)
        #expect(buckets.last?.contains(#"le="+Inf""#) == true)
        #expect(lines.contains(#"chasquid_delivery_attempt_duration_seconds_count{recipient_type="email:local"} 1"#))
    }
}

@Suite struct ExpvarTests {
    @Test func varsAreGoExpvarJSON() throws {
        let metrics = Metrics()
        metrics.server.count(MetricCatalog.responseCodeCount, "250", by: 2)
        metrics.server.count(MetricCatalog.responseCodeCount, "220")
        let text = ExpvarJSON.render(
            metrics.expvar.snapshot,
            extra: ["chasquid/version": .string("1.0 \"x\" <y>"), "cmdline": .strings(["chasquid", "-v=1"])])
        #expect(text.hasPrefix("{\n"))
        #expect(text.hasSuffix("\n}\n"))
        #expect(text.contains(#""chasquid/smtpIn/responseCodeCount": {"220": 1, "250": 2}"#))
        #expect(text.contains(#""chasquid/queue/putCount": 0"#))
        // Go escapes <, > and & in JSON strings.
        #expect(text.contains(#""chasquid/version": "1.0 \"x\" \u003cy\u003e""#))
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        #expect((object?["cmdline"] as? [String]) == ["chasquid", "-v=1"])
        let keys = text.split(separator: "\n").dropFirst().dropLast().map { $0.split(separator: "\"")[0] }
        #expect(keys == keys.sorted())
    }
}

@Suite struct TraceRegistryTests {
    @Test func finishedTracesAreKeptPerBucketAndErrorsApart() {
        let registry = TraceRegistry(keptPerBucket: 3, keptErrors: 2)
        for index in 0..<10 {
            let trace = registry.start(family: "F", title: "t\(index)")
            if index % 2 == 0 { trace.error("bad \(index)") }
            trace.finish()
        }
        #expect(registry.traces(family: "F", .bucket(0)).map(\.title) == ["t9", "t8", "t7"])
        #expect(registry.traces(family: "F", .errors).map(\.title) == ["t8", "t6"])
        #expect(registry.traces(family: "F", .active).isEmpty)
        let summary = registry.families.first
        #expect(summary?.finishedTotal == 10)
        #expect(summary?.errors == 2)
        // Gone from every ring: not found any more.
        #expect(registry.trace(id: 1) == nil)
    }

    @Test func aTraceKeepsBoundedEvents() {
        let registry = TraceRegistry()
        let trace = registry.start(family: "F", title: "big")
        for index in 0..<(Trace.maxEvents + 5) { trace.log("event \(index)") }
        trace.log(String(repeating: "x", count: 10_000))
        let snapshot = trace.snapshot
        #expect(snapshot.events.count == Trace.maxEvents)
        #expect(snapshot.droppedEvents == 6)
        let long = registry.start(family: "F", title: "long")
        long.log(String(repeating: "x", count: 10_000))
        #expect(long.snapshot.events.first!.message.count == Trace.maxEventLength + 1)
    }

    @Test func childrenLinkBothWays() {
        let registry = TraceRegistry()
        let parent = registry.start(family: "Queue.Item", title: "abc")
        let child = parent.child(family: "Delivery", title: "abc to x@y")
        child.finish()
        #expect(registry.trace(id: parent.id)?.children.map(\.id) == [child.id])
        #expect(registry.trace(id: child.id)?.parent?.id == parent.id)
        #expect(registry.trace(id: parent.id)?.isFinished == false)
    }
}

@Suite struct MonitoringSiteTests {
    private func site(
        queue: [QueueItemStatus] = [], traces: TraceRegistry = TraceRegistry(), exited: ExitFlag = ExitFlag()
    ) -> MonitoringSite {
        let metrics = Metrics()
        return MonitoringSite(
            sources: MonitoringSources(
                hostname: "mx.example.com", version: "1.0", sourceDate: "2026-01-01", started: Date(),
                commandLine: ["chasquid", "-v=1"], configText: "hostname: \"mx.example.com\"\n",
                flagsText: "-v=1\n\n-logtime=false\n", metrics: metrics.backends, traces: traces, queueStatus: { queue }, exit: { exited.set() }))
    }

    final class ExitFlag: Sendable {
        private let flag = Mutex(false)
        func set() { flag.withLock { $0 = true } }
        var isSet: Bool { flag.withLock { $0 } }
    }

    @Test func unknownPathsAre404AndExitIsPOSTOnly() async {
        let exited = ExitFlag()
        let site = site(exited: exited)
        #expect(await site.respond(method: "GET", target: "/nope").status == 404)
        #expect(await site.respond(method: "GET", target: "/debug/pprof/").status == 404)
        let get = await site.respond(method: "GET", target: "/exit")
        #expect(get.status == 405)
        #expect(!exited.isSet)
        let post = await site.respond(method: "POST", target: "/exit")
        #expect(post.status == 200)
        #expect(post.body == "OK exiting\n")
        #expect(!exited.isSet, "exit waits until the reply is sent")
        post.afterSending?()
        #expect(exited.isSet)
    }

    /// A Prepend scalar before `<` makes one grapheme of the two; escaping
    /// is per scalar, so no `<` reaches the page raw (issue 13 §1).
    @Test(arguments: ["\u{0600}", "\u{0605}", "\u{06DD}", "\u{0D4E}", "\u{110BD}"])
    func prependScalarsCannotSmuggleMarkup(prepend: String) {
        let payload = "NOOP \(prepend)<img src=x onerror=alert(1)>\(prepend)\"\(prepend)'\(prepend)&"
        let escaped = HTML.escape(payload)
        #expect(!escaped.unicodeScalars.contains("<"))
        #expect(!escaped.unicodeScalars.contains(">"))
        #expect(!escaped.unicodeScalars.contains("\""))
        #expect(!escaped.unicodeScalars.contains("'"))
        #expect(escaped == "NOOP \(prepend)&lt;img src=x onerror=alert(1)&gt;\(prepend)&quot;\(prepend)&#39;\(prepend)&amp;")
    }

    @Test func aReflectedFamilyCannotSmuggleMarkup() async {
        let target = "/debug/traces?fam=" + HTML.query("\u{0600}<script>document.title='pwned'</script>")
        let page = await site().respond(method: "GET", target: target)
        let body = page.body
        #expect(body.contains("\u{0600}&lt;script&gt;"), "the family is shown, escaped")
        #expect(!body.contains("<script>document.title"))
        #expect(!body.unicodeScalars.split(separator: "\u{0600}").dropFirst().contains { $0.first == "<" })
    }

    /// Another site's page cannot stop the daemon, and a rebound name gets
    /// nothing (issue 13 §8); tools without those headers are served.
    @Test func crossSiteExitAndRebindingAreRefused() async {
        let exited = ExitFlag()
        let site = site(exited: exited)
        let refusedPosts: [[(String, String)]] = [
            [("Host", "127.0.0.1:1099"), ("Origin", "https://evil.example")],
            [("Host", "127.0.0.1:1099"), ("Sec-Fetch-Site", "cross-site")],
            [("Host", "127.0.0.1:1099"), ("Sec-Fetch-Site", "same-site")],
            [("Host", "127.0.0.1:1099"), ("Origin", "null")],
            [("Host", "evil.example:1099"), ("Sec-Fetch-Site", "same-origin")],
        ]
        for headers in refusedPosts {
            let response = await site.respond(method: "POST", target: "/exit", headers: headers)
            #expect(response.status == 403, "\(headers)")
            #expect(response.afterSending == nil)
        }
        #expect(!exited.isSet)
        // What a browser sends for a page on a rebound name.
        for host in ["rebind.evil.example", "rebind.evil.example:1099", "127.0.0.1.evil.example", "evil.example.",
                     "", "[::1]evil.example", "[::1]:x", "127.0.0.1:", "127.0.0.1:80x", ":1099"] {
            let headers = [("Host", host), ("Sec-Fetch-Site", "same-origin"), ("Sec-Fetch-Mode", "navigate")]
            #expect(await site.respond(method: "GET", target: "/debug/config", headers: headers).status == 403, "\(host)")
        }
        for host in ["127.0.0.1:1099", "[::1]:1099", "[::1]", "localhost:1099", "LOCALHOST", "mx.example.com:1099",
                     "MX.Example.com.", "192.0.2.7"] {
            let headers = [("Host", host), ("Sec-Fetch-Site", "none")]
            #expect(await site.respond(method: "GET", target: "/", headers: headers).status == 200, "\(host)")
        }
        // A tool (no browser headers) may name the server as it likes.
        #expect(await site.respond(method: "GET", target: "/metrics", headers: [("Host", "mon.internal:1099")]).status == 200)
        // Same origin (the page's own form) and curl (no headers) may stop it.
        let sameOrigin = await site.respond(
            method: "POST", target: "/exit",
            headers: [("Host", "127.0.0.1:1099"), ("Origin", "http://127.0.0.1:1099"), ("Sec-Fetch-Site", "same-origin")])
        #expect(sameOrigin.status == 200)
        let behindTLSProxy = await site.respond(
            method: "POST", target: "/exit",
            headers: [("Host", "mx.example.com"), ("Origin", "https://mx.example.com"), ("Sec-Fetch-Site", "same-origin")])
        #expect(behindTLSProxy.status == 200)
        #expect(await site.respond(method: "POST", target: "/exit", headers: [("Host", "127.0.0.1:1099")]).status == 200)
    }

    /// A query string is the client's: nothing in it may trap.
    @Test func malformedQueriesAreHarmless() async {
        let site = site()
        for target in ["/?=", "/?&", "/?=x", "/?%zz", "/debug/traces?=&=", "/debug/traces?fam=&b=", "/debug/traces?trace="] {
            let status = await site.respond(method: "GET", target: target).status
            #expect(status == 200 || status == 404, "\(target)")
        }
        #expect(MonitoringSite.split("/x?a=1&&b&c=%41").1 == ["a": "1", "b": "", "c": "A"])
    }

    @Test func flagsConfigAndMetricsHaveTheirFormats() async {
        let site = site()
        #expect(await site.respond(method: "GET", target: "/debug/flags").body == "-v=1\n\n-logtime=false\n")
        #expect(await site.respond(method: "GET", target: "/debug/config").body == "hostname: \"mx.example.com\"\n")
        let metrics = await site.respond(method: "GET", target: "/metrics")
        #expect(metrics.contentType == "application/openmetrics-text; version=1.0.0; charset=utf-8")
        #expect(metrics.body.hasSuffix("# EOF\n"))
    }

    @Test func theQueueTextHasEnvelopesButNoData() async {
        var message = Queue_Message()
        message.id = "ABC123"
        message.from = "ana@example.com"
        message.to = ["x@example.org"]
        message.data = Data("SECRET BODY".utf8)
        var rcpt = Queue_Recipient()
        rcpt.address = "x@example.org"
        rcpt.lastFailureMessage = "<connection refused>"
        message.rcpt = [rcpt]
        let item = QueueItemStatus(message: message, nextAttempt: Date(), traceID: 7)
        let text = MonitoringSite.queueText([item], now: Date())
        #expect(text.hasPrefix("# Queue status\n\ndate: "))
        #expect(text.contains("\nlength: 1\n\n## Item ABC123\n"))
        #expect(text.contains("from: ana@example.com\nto: [x@example.org]\n"))
        #expect(text.contains("PENDING x@example.org (EMAIL)\n  original address: \n  last failure: \"<connection refused>\"\n"))
        #expect(!text.contains("SECRET"))
        let page = await site(queue: [item]).respond(method: "GET", target: "/queue").body
        #expect(page.contains("&lt;connection refused&gt;"))
        #expect(page.contains("/debug/traces?trace=7"))
        #expect(!page.contains("SECRET"))
    }

    @Test func tracePagesEscapeWhatClientsSent() async {
        let traces = TraceRegistry()
        let trace = traces.start(family: "SMTP.Conn", title: "1.2.3.4:5")
        trace.log("> EHLO <script>alert(1)</script>")
        trace.error("< 550 no")
        trace.finish()
        let site = site(traces: traces)
        let page = await site.respond(method: "GET", target: "/debug/traces?trace=\(trace.id)")
        #expect(page.status == 200)
        #expect(page.body.contains("&gt; EHLO &lt;script&gt;alert(1)&lt;/script&gt;"))
        #expect(!page.body.contains("<script>"))
        let summary = await site.respond(method: "GET", target: "/debug/traces").body
        #expect(summary.contains("/debug/traces?fam=SMTP.Conn&amp;b=errors"))
        let errors = await site.respond(method: "GET", target: "/debug/traces?fam=SMTP.Conn&b=errors").body
        #expect(errors.contains("1.2.3.4:5"))
        #expect(await site.respond(method: "GET", target: "/debug/traces?trace=999").status == 404)
    }
}

@Suite struct LabelBoundTests {
    /// A client sending endless distinct unknown verbs must not grow the
    /// metrics without bound, nor crowd out the labels we choose.
    @Test func clientLabelsPastTheLimitAreCountedTogether() {
        let backends = MetricsBackends()
        let limit = ServerMetrics.maxClientLabelValues
        for index in 0..<(limit + 50) {
            backends.metrics.count(MetricCatalog.commandCount, clientLabel: "unknown<\"X\(index)\">", overflow: "unknown<other>")
        }
        backends.metrics.count(MetricCatalog.commandCount, clientLabel: "unknown<\"X0\">", overflow: "unknown<other>")
        backends.metrics.count(MetricCatalog.commandCount, "STARTTLS")
        guard case .map(let map)? = backends.expvar.snapshot["chasquid/smtpIn/commandCount"] else {
            Issue.record("no commandCount map")
            return
        }
        #expect(map.count == limit + 2)
        #expect(map["unknown<other>"] == 50)
        #expect(map["unknown<\"X0\">"] == 2)
        #expect(map["STARTTLS"] == 1)
    }
}
