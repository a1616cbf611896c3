import Foundation
import GoCompat
import Normalization

/// The `Received:` header we add to every message (COMPAT.md §12.3), in the
/// internal LF form with `\n\t` folds. Recipients are never listed, so Bcc
/// stays private; authenticated clients' IPs are hidden.
public enum TraceHeaders {
    public static func received(
        session: SessionInfo, remoteIP: String, tlsVersion: String?, tlsCipherSuite: String? = nil,
        envelopeFrom: String, date: Date = Date()
    ) -> String {
        var from = "from \(session.ehloDomain ?? "unknown")"
        if !session.isAuthenticated {
            let ip = remoteIP.contains(":") ? "IPv6:\(remoteIP)" : remoteIP
            from += " ([\(ip)])"
        }
        var with = session.usedEHLO ? "ESMTP" : "SMTP"
        if session.onTLS { with += "S" }
        if session.isAuthenticated { with += "A" }
        var lines = ["Received: \(from)", "by \(session.serverName) (chasquid) with \(with)"]
        // RFC 8314 §4.3: the suite, on its own line (chasquid's form).
        if session.onTLS, let tlsCipherSuite { lines.append("tls \(tlsCipherSuite)") }
        let security = session.onTLS ? (tlsVersion ?? "TLS") : "plain text!"
        lines.append("(over \(session.mode.rawValue), \(security), envelope from \(goQuoted(envelopeFrom)))")
        lines.append("; \(rfc1123Date(date))")
        return lines.joined(separator: "\n\t") + "\n"
    }

    /// `Authentication-Results` and `Received-SPF` for an SPF verdict, in
    /// that order (COMPAT.md §12.3), before DKIM has run.
    public static func spf(_ verdict: SPFVerdict, serverName: String) -> String {
        (authenticationResults(serverName: serverName, spf: verdict, dkim: nil) ?? "") + receivedSPF(verdict)
    }

    public static func receivedSPF(_ verdict: SPFVerdict) -> String {
        "Received-SPF: \(verdict.result) (\(verdict.reason ?? "<nil>"))\n"
    }

    /// `Authentication-Results` with what ran: the SPF item, then the DKIM
    /// items (DKIMVerifier's text: each item starts with ";", lines end
    /// in CRLF). As chasquid 1.18 builds it, the value's line breaks are
    /// CRLF even in the internal LF form, each continued with a tab, the
    /// whole trimmed; nil when nothing ran.
    public static func authenticationResults(serverName: String, spf: SPFVerdict?, dkim: String?) -> String? {
        guard spf != nil || dkim != nil else { return nil }
        var value = serverName + "\r\n"
        if let spf { value += ";spf=\(spf.result) (\(spf.reason ?? "<nil>"))\r\n" }
        if let dkim { value += dkim + "\r\n" }
        // Trimmed as Go's strings.TrimSpace; no Foundation on this path
        // (it runs for every message).
        var scalars = value.unicodeScalars[...]
        while let first = scalars.first, first.properties.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.properties.isWhitespace { scalars.removeLast() }
        var folded = "Authentication-Results: "
        for scalar in scalars {
            folded.unicodeScalars.append(scalar)
            if scalar == "\n" { folded.unicodeScalars.append("\t") }
        }
        return folded + "\n"
    }
}

/// The headers a session puts on top of a message before its data, kept in
/// parts so the sink can rebuild them once DKIM has run (its results join
/// Authentication-Results, its signatures go below Received).
public struct TraceBlock: Equatable, Sendable {
    public var serverName: String
    public var spf: SPFVerdict?
    /// The whole `Received:` header, with its newline.
    public var received: String

    public init(serverName: String, spf: SPFVerdict?, received: String) {
        self.serverName = serverName
        self.spf = spf
        self.received = received
    }

    /// What the session writes at the start of the spool.
    public var text: String { (spf.map { TraceHeaders.spf($0, serverName: serverName) } ?? "") + received }
}
