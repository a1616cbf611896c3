import Foundation
import GoCompat
import Normalization

/// The `Received:` header we add to every message (COMPAT.md §12.3), in the
/// internal LF form with `\n\t` folds. Recipients are never listed, so Bcc
/// stays private; authenticated clients' IPs are hidden.
public enum TraceHeaders {
    public static func received(
        session: SessionInfo, remoteIP: String, tlsVersion: String?, envelopeFrom: String, date: Date = Date()
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
        let security = session.onTLS ? (tlsVersion ?? "TLS") : "plain text!"
        lines.append("(over \(session.mode.rawValue), \(security), envelope from \(goQuoted(envelopeFrom)))")
        lines.append("; \(rfc1123Date(date))")
        return lines.joined(separator: "\n\t") + "\n"
    }

    /// `Authentication-Results` and `Received-SPF` for an SPF verdict, in
    /// that order (COMPAT.md §12.3). The Authentication-Results value is
    /// folded with CRLF, as chasquid 1.18 builds it. DKIM verification does
    /// not exist yet, so no `dkim=` item is claimed.
    public static func spf(_ verdict: SPFVerdict, serverName: String) -> String {
        let item = "\(verdict.result) (\(verdict.reason ?? "<nil>"))"
        return "Authentication-Results: \(serverName)\r\n\t;spf=\(item)\n" + "Received-SPF: \(item)\n"
    }
}
