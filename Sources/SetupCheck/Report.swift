import Foundation

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

/// Text from servers (TXT records, replies, certificate names, policy
/// bodies) shown on a terminal: control characters (C0, DEL, C1) are
/// written as `\x..` / `\u{..}`, so none can move the cursor, recolour
/// the screen or end a line.
enum Printable {
    static func line(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar.value {
            case 0x00..<0x20, 0x7F:
                out += "\\x" + hex(scalar.value, width: 2)
            case 0x80..<0xA0:
                out += "\\u{" + hex(scalar.value, width: 4) + "}"
            default:
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    static func hex(_ value: UInt32, width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}

/// Zone-file forms of the records the advice asks for.
enum Zone {
    /// A TXT record; values longer than 255 bytes are split into several
    /// character-strings, as DNS requires (RFC 1035 §3.3.14).
    /// `"` and `\` are escaped, as zone files need (RFC 1035 §5.1).
    static func txt(_ name: String, _ value: String) -> String {
        var strings: [String] = []
        var rest = Substring(value)
        while !rest.isEmpty {
            let piece = rest.utf8.prefix(255)
            let end = piece.endIndex
            let text = String(rest[..<end]).replacingOccurrences(of: "\\", with: "\\\\")
                .replacingOccurrences(of: "\"", with: "\\\"")
            strings.append("\"" + text + "\"")
            rest = rest[end...]
        }
        return "\(name). IN TXT \(strings.joined(separator: " "))"
    }

    static func ptr(_ name: String, _ target: String) -> String { "\(name). IN PTR \(target)." }

    static func mx(_ domain: String) -> String { "\(domain). IN MX 10 <your mail server's name>." }

    static func address(_ name: String, _ ip: String, ipv6: Bool) -> String {
        "\(name). IN \(ipv6 ? "AAAA" : "A") \(ip)"
    }
}
