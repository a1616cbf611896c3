import Foundation

/// Small helpers for the pages: escaping and a shared frame. Plain HTML, a
/// little CSS, no JavaScript.
enum HTML {
    /// Per Unicode scalar, never per Character: a "Prepend" scalar
    /// (U+0600, U+0D4E, …) fuses with a following `<` into one grapheme
    /// that matches no case below, and the `<` would pass raw.
    static func escape(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out.append(contentsOf: "&amp;".unicodeScalars)
            case "<": out.append(contentsOf: "&lt;".unicodeScalars)
            case ">": out.append(contentsOf: "&gt;".unicodeScalars)
            case "\"": out.append(contentsOf: "&quot;".unicodeScalars)
            case "'": out.append(contentsOf: "&#39;".unicodeScalars)
            default: out.append(scalar)
            }
        }
        return String(out)
    }

    /// Escapes a query value for a link.
    static func query(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    static func page(title: String, hostname: String, body: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escape(title)) · chasquid @ \(escape(hostname))</title>
        <style>
        body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 75em; padding: 0 1em; color: #222; }
        h1 { font-size: 1.5em; margin-bottom: 0.2em; }
        h1 small { font-weight: normal; color: #666; font-size: 0.6em; }
        h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
        table { border-collapse: collapse; margin: 0.5em 0; }
        th, td { text-align: left; padding: 0.2em 0.8em 0.2em 0; vertical-align: top; }
        th { border-bottom: 1px solid #ccc; }
        td.num, th.num { text-align: right; }
        tr.error td, span.error { color: #b00020; }
        td.mono, pre, code { font-family: ui-monospace, monospace; font-size: 0.92em; }
        pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
        nav a { margin-right: 1em; }
        .muted { color: #777; }
        .trace { border-left: 3px solid #ddd; padding-left: 0.8em; margin: 1em 0; }
        .trace.error { border-left-color: #b00020; }
        </style>
        </head>
        <body>
        <nav><a href="/">index</a><a href="/queue">queue</a><a href="/debug/traces">traces</a><a href="/config">config</a><a href="/metrics">metrics</a><a href="/debug/vars">vars</a></nav>
        <h1>\(escape(title)) <small>chasquid @ \(escape(hostname))</small></h1>
        \(body)
        </body>
        </html>

        """
    }

    static func time(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }

    static func duration(_ duration: Duration) -> String {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        if seconds < 1 { return String(format: "%.1f ms", seconds * 1000) }
        if seconds < 120 { return String(format: "%.2f s", seconds) }
        if seconds < 7200 { return String(format: "%.1f min", seconds / 60) }
        return String(format: "%.1f h", seconds / 3600)
    }
}
