import Foundation
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
        lines.append("(over \(session.mode.rawValue), \(security), envelope from \(goQuote(envelopeFrom)))")
        lines.append("; \(rfc1123(date))")
        return lines.joined(separator: "\n\t") + "\n"
    }

    static func rfc1123(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss Z"
        return formatter.string(from: date)
    }

    static func goQuote(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            default:
                if c.value < 0x20 || c.value == 0x7F { out += String(format: "\\x%02x", c.value) } else { out.unicodeScalars.append(c) }
            }
        }
        return out + "\""
    }
}
