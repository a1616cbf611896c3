import ChasquidProto
import Foundation
import GoCompat
import Instrumentation
import MailQueue
import Normalization
import SwiftProtobuf

/// What the monitoring pages show, supplied by the daemon.
public struct MonitoringSources: Sendable {
    public var hostname: String
    public var version: String
    public var sourceDate: String
    public var started: Date
    public var commandLine: [String]
    /// The effective configuration, in text format.
    public var configText: String
    /// `-name=value` lines: flags that were set, a blank line, then the rest.
    public var flagsText: String
    public var metrics: MetricsBackends
    public var traces: TraceRegistry
    public var queueStatus: @Sendable () async -> [QueueItemStatus]
    /// Stops the daemon (`POST /exit`); called once the reply is sent.
    public var exit: @Sendable () -> Void

    public init(
        hostname: String, version: String, sourceDate: String, started: Date, commandLine: [String], configText: String,
        flagsText: String, metrics: MetricsBackends, traces: TraceRegistry,
        queueStatus: @escaping @Sendable () async -> [QueueItemStatus], exit: @escaping @Sendable () -> Void
    ) {
        self.hostname = hostname
        self.version = version
        self.sourceDate = sourceDate
        self.started = started
        self.commandLine = commandLine
        self.configText = configText
        self.flagsText = flagsText
        self.metrics = metrics
        self.traces = traces
        self.queueStatus = queueStatus
        self.exit = exit
    }
}

/// One HTTP response, before it meets the wire.
public struct MonitoringResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: String
    public var extraHeaders: [(String, String)] = []
    /// Run after the response is written (`/exit`).
    public var afterSending: (@Sendable () -> Void)?

    static func text(_ body: String, status: Int = 200) -> MonitoringResponse {
        MonitoringResponse(status: status, contentType: "text/plain; charset=utf-8", body: body)
    }

    static func html(_ body: String) -> MonitoringResponse {
        MonitoringResponse(status: 200, contentType: "text/html; charset=utf-8", body: body)
    }
}

/// The monitoring site: which path gives what (COMPAT.md §19, plus the HTML
/// pages). No I/O here, so it is tested without sockets.
public struct MonitoringSite: Sendable {
    public let sources: MonitoringSources

    public init(sources: MonitoringSources) { self.sources = sources }

    /// headers: the request's, for the checks against other web origins.
    public func respond(method: String, target: String, headers: [(String, String)] = []) async -> MonitoringResponse {
        if let refused = Self.crossOriginRefusal(method: method, headers: headers, hostname: sources.hostname) {
            return refused
        }
        let (path, query) = Self.split(target)
        if path == "/exit" {
            guard method == "POST" else {
                var response = MonitoringResponse.text("method not allowed\n", status: 405)
                response.extraHeaders = [("Allow", "POST")]
                return response
            }
            var response = MonitoringResponse.text("OK exiting\n")
            response.afterSending = sources.exit
            return response
        }
        guard method == "GET" || method == "HEAD" else {
            var response = MonitoringResponse.text("method not allowed\n", status: 405)
            response.extraHeaders = [("Allow", "GET, HEAD")]
            return response
        }
        switch path {
        case "/": return .html(await indexPage())
        case "/metrics":
            let text = MetricsExposition.render(prometheusText: sources.metrics.prometheus.emitToString())
            return MonitoringResponse(status: 200, contentType: MetricsExposition.contentType, body: text)
        case "/debug/vars":
            return MonitoringResponse(status: 200, contentType: "application/json; charset=utf-8", body: varsJSON())
        case "/debug/queue": return .text(Self.queueText(await sources.queueStatus(), now: Date()))
        case "/queue": return .html(queuePage(await sources.queueStatus()))
        case "/debug/config": return .text(sources.configText)
        case "/debug/flags": return .text(sources.flagsText)
        case "/config": return .html(configPage())
        case "/debug/traces": return tracesResponse(query)
        default: return .text("404 page not found\n", status: 404)
        }
    }

    static func split(_ target: String) -> (String, [String: String]) {
        // Per Unicode scalar: a `Character` may fuse a delimiter with its neighbour.
        guard let mark = target.firstIndex(ofScalar: "?") else { return (target, [:]) }
        var query: [String: String] = [:]
        for pair in target.suffix(afterScalarAt: mark).split(scalar: "&") {
            let parts = pair.split(scalar: "=", maxSplits: 1, omittingEmptySubsequences: false).map {
                String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0)
            }
            guard let key = parts.first, !key.isEmpty else { continue }
            query[key] = parts.count > 1 ? parts[1] : ""
        }
        return (String(target[..<mark]), query)
    }

    // MARK: /debug/vars

    func varsJSON() -> String {
        ExpvarJSON.render(
            sources.metrics.expvar.snapshot,
            extra: [
                "chasquid/version": .string(sources.version),
                "chasquid/sourceDateStr": .string(sources.sourceDate),
                "cmdline": .strings(sources.commandLine),
                "memstats": .ints(ProcessStats.read().memstats),
            ])
    }

    // MARK: queue

    /// chasquid's `/debug/queue` text (its `Queue.DumpString`): a header,
    /// then per item its envelope and one block per recipient. Bodies live
    /// in their own files and never appear.
    public static func queueText(_ items: [QueueItemStatus], now: Date) -> String {
        var out = "# Queue status\n\ndate: \(goTime(now))\nlength: \(items.count)\n\n"
        for item in items {
            let message = item.message
            out += "## Item \(message.id)\n"
            out += "created at: \(goTime(message.createdAtTs.date))\n"
            out += "from: \(message.from)\n"
            out += "to: [\(message.to.joined(separator: " "))]\n"
            for rcpt in message.rcpt {
                out += "\(statusName(rcpt.status)) \(rcpt.address) (\(typeName(rcpt.type)))\n"
                out += "  original address: \(rcpt.originalAddress)\n"
                out += "  last failure: \(goQuoted(rcpt.lastFailureMessage))\n"
            }
            out += "\n"
        }
        return out
    }

    /// The names Go's protobuf enums print.
    static func statusName(_ status: Queue_Recipient.Status) -> String {
        switch status {
        case .pending: "PENDING"
        case .sent: "SENT"
        case .failed: "FAILED"
        case .UNRECOGNIZED(let value): String(value)
        }
    }

    static func typeName(_ type: Queue_Recipient.TypeEnum) -> String {
        switch type {
        case .email: "EMAIL"
        case .pipe: "PIPE"
        case .forward: "FORWARD"
        case .UNRECOGNIZED(let value): String(value)
        }
    }

    /// Go's `time.Time` `%v` form: `2006-01-02 15:04:05.999999999 -0700 MST`.
    static func goTime(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone.current
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss.SSSSSS Z zzz"
        return formatter.string(from: date)
    }

    func queuePage(_ items: [QueueItemStatus]) -> String {
        var body = "<p>\(items.count) item\(items.count == 1 ? "" : "s") in the queue. "
        body += "<a href=\"/debug/queue\">As text</a>.</p>\n"
        for item in items {
            let message = item.message
            body += "<h2 id=\"\(HTML.escape(message.id))\">Item <code>\(HTML.escape(message.id))</code></h2>\n<table>\n"
            body += "<tr><th>From</th><td class=\"mono\">\(HTML.escape(message.from))</td></tr>\n"
            body += "<tr><th>To</th><td class=\"mono\">\(HTML.escape(message.to.joined(separator: ", ")))</td></tr>\n"
            if message.hasCreatedAtTs {
                body += "<tr><th>Received</th><td>\(HTML.time(message.createdAtTs.date))</td></tr>\n"
            }
            let next = item.nextAttempt.map { "\(HTML.time($0))" } ?? "in progress"
            body += "<tr><th>Next attempt</th><td>\(next)</td></tr>\n"
            if let trace = item.traceID {
                body += "<tr><th>Trace</th><td><a href=\"/debug/traces?trace=\(trace)\">#\(trace)</a></td></tr>\n"
            }
            body += "</table>\n<table>\n<tr><th>Recipient</th><th>Type</th><th>Status</th><th>Last error</th></tr>\n"
            for rcpt in message.rcpt {
                let failed = rcpt.status == .failed
                body += "<tr\(failed ? " class=\"error\"" : "")><td class=\"mono\">\(HTML.escape(rcpt.address))</td>"
                body += "<td>\(Self.typeName(rcpt.type))</td><td>\(Self.statusName(rcpt.status))</td>"
                body += "<td>\(HTML.escape(rcpt.lastFailureMessage))</td></tr>\n"
            }
            body += "</table>\n"
        }
        return HTML.page(title: "Queue", hostname: sources.hostname, body: body)
    }

    // MARK: index and config

    func indexPage() async -> String {
        let queueLength = await sources.queueStatus().count
        let uptime = Duration.seconds(Int64(Date().timeIntervalSince(sources.started)))
        let connections = Int(sources.metrics.expvar.double(MetricCatalog.openConnections.expvarName) ?? 0)
        let errors = sources.traces.families.reduce(0) { $0 + $1.errors }
        var body = "<table>\n"
        body += "<tr><th>Version</th><td>\(HTML.escape(sources.version))</td></tr>\n"
        body += "<tr><th>Source date</th><td>\(HTML.escape(sources.sourceDate))</td></tr>\n"
        body += "<tr><th>Started</th><td>\(HTML.time(sources.started)) (up \(HTML.duration(uptime)))</td></tr>\n"
        body += "<tr><th>Queue</th><td><a href=\"/queue\">\(queueLength) item\(queueLength == 1 ? "" : "s")</a></td></tr>\n"
        body += "<tr><th>Open connections</th><td>\(connections)</td></tr>\n"
        body += "<tr><th>Recent errors</th><td><a href=\"/debug/traces\">\(errors) kept</a></td></tr>\n"
        body += "</table>\n"
        body += """
            <h2>Pages</h2>
            <ul>
            <li><a href="/queue">Queue</a>: items, recipients, next attempt, last error (<a href="/debug/queue">text</a>)</li>
            <li><a href="/debug/traces">Traces</a>: SMTP connections, queue items and delivery attempts</li>
            <li><a href="/config">Configuration</a>: the effective config and the flags (<a href="/debug/config">config as text</a>, <a href="/debug/flags">flags as text</a>)</li>
            <li><a href="/metrics">Metrics</a> (OpenMetrics, for Prometheus) and <a href="/debug/vars">variables</a> (expvar JSON)</li>
            </ul>
            <h2>Stopping</h2>
            <p><code>curl -X POST http://&lt;this address&gt;/exit</code> stops the daemon. This server has no authentication: keep it on loopback or a private network.</p>

            """
        return HTML.page(title: "Monitoring", hostname: sources.hostname, body: body)
    }

    func configPage() -> String {
        let body = """
            <h2>Configuration</h2>
            <p class="muted">After defaults and <code>-config_overrides</code>; the form <code>chasquid.conf</code> takes.</p>
            <pre>\(HTML.escape(sources.configText))</pre>
            <h2>Flags</h2>
            <p class="muted">Flags that were set, then the rest.</p>
            <pre>\(HTML.escape(sources.flagsText))</pre>
            <h2>Command line</h2>
            <pre>\(HTML.escape(sources.commandLine.joined(separator: " ")))</pre>

            """
        return HTML.page(title: "Configuration", hostname: sources.hostname, body: body)
    }
}


// MARK: Other web origins (issue 13 §8)

extension MonitoringSite {
    /// Any page the admin's browser opens can send requests here. Refused:
    /// a request whose Host is a name other than ours or a loopback one (DNS
    /// rebinding: the attacker's name resolving to 127.0.0.1), and a POST
    /// that the browser says comes from another site (`/exit` by a
    /// cross-site form or no-cors fetch). Tools that send neither header
    /// (curl, Prometheus) are served as before.
    static func crossOriginRefusal(method: String, headers: [(String, String)], hostname: String) -> MonitoringResponse? {
        func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name }?.1.trimmingCharacters(in: .whitespaces)
        }
        let host = header("host")
        // Only browsers are fooled by rebinding, and they say they are one
        // (Sec-Fetch-*, Origin): tools such as curl and Prometheus may use
        // any name for the server.
        let fromBrowser = headers.contains { name, _ in
            let lower = name.lowercased()
            return lower.hasPrefix("sec-fetch-") || lower == "origin"
        }
        if fromBrowser, !isTrustedHost(host ?? "", hostname: hostname) {
            return .text("forbidden: unexpected Host\n", status: 403)
        }
        guard method != "GET" && method != "HEAD" else { return nil }
        if let site = header("sec-fetch-site")?.lowercased(), site != "same-origin" && site != "none" {
            return .text("forbidden: cross-site request\n", status: 403)
        }
        if let origin = header("origin")?.lowercased() {
            // https: behind a TLS-terminating proxy.
            guard let host = host?.lowercased(), origin == "http://" + host || origin == "https://" + host else {
                return .text("forbidden: cross-origin request\n", status: 403)
            }
        }
        return nil
    }

    /// An IP literal (a rebinding attack cannot make the browser send one
    /// for its own name), `localhost` and names under it, or our hostname.
    static func isTrustedHost(_ hostHeader: String, hostname: String) -> Bool {
        func isPort(_ text: Substring) -> Bool { !text.isEmpty && text.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }
        var name = Substring(hostHeader)
        if name.unicodeScalars.first == "[" {
            guard let close = name.firstIndex(ofScalar: "]") else { return false }
            let rest = name.suffix(afterScalarAt: close)
            guard rest.isEmpty || (rest.unicodeScalars.first == ":" && isPort(rest.suffix(afterScalarAt: rest.startIndex)))
            else { return false }
            var address = in6_addr()
            return inet_pton(AF_INET6, String(name[name.unicodeScalars.index(after: name.startIndex)..<close]), &address) == 1
        }
        if let colon = name.lastIndex(ofScalar: ":") {
            guard isPort(name.suffix(afterScalarAt: colon)) else { return false }
            name = name[..<colon]
        }
        guard !name.isEmpty else { return false }
        let lower = name.lowercased()
        var address = in_addr()
        if inet_pton(AF_INET, lower, &address) == 1 { return true }
        let trimmed = lower.hasSuffix(".") ? String(lower.dropLast()) : lower
        return trimmed == "localhost" || trimmed.hasSuffix(".localhost") || (!hostname.isEmpty && trimmed == hostname.lowercased())
    }
}
