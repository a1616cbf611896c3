import Foundation
import MailLog
import SMTPCore

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
        lines.append("; \(rfc1123(date))")
        return lines.joined(separator: "\n\t") + "\n"
    }

    /// "Mon, 02 Jan 2006 15:04:05 -0700", local time. strftime with the C
    /// locale: a DateFormatter per message costs more than the rest of the
    /// header.
    static func rfc1123(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        localtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        let offset = parts.tm_gmtoff / 60
        let sign = offset < 0 ? "-" : "+"
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(days[Int(parts.tm_wday)]), \(two(Int(parts.tm_mday))) \(months[Int(parts.tm_mon)]) "
            + "\(parts.tm_year + 1900) \(two(Int(parts.tm_hour))):\(two(Int(parts.tm_min))):\(two(Int(parts.tm_sec))) "
            + "\(sign)\(two(abs(offset) / 60))\(two(abs(offset) % 60))"
    }
}
