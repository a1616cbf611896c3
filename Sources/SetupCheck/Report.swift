/// One thing found wrong, and what to publish or change to fix it.
public struct Problem: Sendable, Equatable {
    /// One line, e.g. `mx.example.com: SPF failed (192.0.2.1)`.
    public var summary: String
    /// Exact DNS records (zone-file lines) or settings that fix it.
    public var fixes: [String]

    public init(_ summary: String, fixes: [String] = []) {
        self.summary = summary
        self.fixes = fixes
    }
}

/// What a check run found: chasquid's failures (which decide the exit
/// status, as they do for chasquid's smtp-check) and our further warnings
/// (which decide it only with `-strict`).
public struct Report: Sendable, Equatable {
    public var failures: [Problem] = []
    public var warnings: [Problem] = []
    /// A stop before the end (no MX, a broken policy): the run failed.
    public var fatal = false

    public init() {}

    public func exitStatus(strict: Bool) -> Int32 {
        fatal || !failures.isEmpty || (strict && !warnings.isEmpty) ? 1 : 0
    }
}

/// Zone-file forms of the records the advice asks for.
enum Zone {
    /// A TXT record; values longer than 255 bytes are split into several
    /// character-strings, as DNS requires (RFC 1035 §3.3.14).
    static func txt(_ name: String, _ value: String) -> String {
        var strings: [String] = []
        var rest = Substring(value)
        while !rest.isEmpty {
            let piece = rest.utf8.prefix(255)
            let end = piece.endIndex
            strings.append("\"" + String(rest[..<end]) + "\"")
            rest = rest[end...]
        }
        return "\(name). IN TXT \(strings.joined(separator: " "))"
    }

    static func ptr(_ name: String, _ target: String) -> String { "\(name). IN PTR \(target)." }

    static func address(_ name: String, _ ip: String, ipv6: Bool) -> String {
        "\(name). IN \(ipv6 ? "AAAA" : "A") \(ip)"
    }
}
