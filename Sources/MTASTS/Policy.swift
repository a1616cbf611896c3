import GoCompat
import IDNA

/// An MTA-STS policy (RFC 8461 §3.2): which MX hosts a domain's mail may go
/// to, and whether a sender must insist on verified TLS to them.
public struct STSPolicy: Sendable, Equatable {
    public enum Mode: String, Sendable {
        /// MX must match and TLS must verify, or the mail waits.
        case enforce
        /// Report failures, deliver anyway.
        case testing
        /// No policy (a domain withdrawing one).
        case none
    }

    public var version: String = ""
    /// The `mode` value as written; `mode` is its meaning, if valid.
    public var modeText: String = ""
    public var mode: Mode? { Mode(rawValue: modeText) }
    /// The `mx` patterns, in order: a host name or `*.` and a domain.
    public var mxPatterns: [String] = []
    /// Seconds the policy may be cached (RFC 8461: at most 31557600).
    public var maxAge: Int = 0

    public init() {}

    /// The largest max_age the RFC allows (about one year).
    public static let maximumMaxAge = 31_557_600

    /// Parses a policy body. RFC 8461 §3.2:
    ///
    ///     sts-policy-record = sts-policy-field *WSP *(sts-policy-term-delim sts-policy-field *WSP) [sts-policy-term-delim]
    ///     sts-policy-field  = sts-policy-version / sts-policy-mode / sts-policy-max-age / sts-policy-mx / sts-policy-extension
    ///     sts-policy-term-delim = CRLF / LF
    ///     field = key ":" *WSP value
    ///
    /// Unknown keys are ignored; a line that is not `key: value` is skipped
    /// (as chasquid does), and `check()` then says what is missing.
    public init(parsing text: String) {
        for line in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingWhitespace()
            let value = line[line.index(after: colon)...].trimmingWhitespace()
            switch key {
            case "version": version = value
            case "mode": modeText = value
            // max_age = 1*10DIGIT; anything else is invalid, and 0 says so.
            case "max_age":
                maxAge = (1...10).contains(value.count) && value.allSatisfy(\.isASCIIDigit) ? Int(value) ?? 0 : 0
            case "mx": mxPatterns.append(value)
            default: continue
            }
        }
    }

    /// Why the policy cannot be used, worded as chasquid words it.
    public enum Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        case unknownVersion, invalidMaxAge, invalidMode, invalidMX
        public var description: String {
            switch self {
            case .unknownVersion: "unknown policy version"
            case .invalidMaxAge: "invalid max_age"
            case .invalidMode: "invalid mode"
            case .invalidMX: "invalid mx"
            }
        }
    }

    /// Whether the policy can be used: version STSv1, 0 < max_age <= one
    /// year (RFC 8461, and chasquid 1.18), a known mode, and at least one mx
    /// (required, even for `none`).
    public func check() throws(Invalid) {
        guard version == "STSv1" else { throw .unknownVersion }
        guard maxAge > 0, maxAge <= Self.maximumMaxAge else { throw .invalidMaxAge }
        guard mode != nil else { throw .invalidMode }
        guard !mxPatterns.isEmpty else { throw .invalidMX }
    }

    /// Whether mail may go to `host` under this policy: always in `testing`
    /// and `none` (chasquid's rule), else when a pattern matches.
    public func allows(mx host: String) -> Bool {
        mode != .enforce || lists(host)
    }

    /// Whether one of the `mx` patterns matches `host`, whatever the mode.
    public func lists(_ host: String) -> Bool {
        mxPatterns.contains { Self.matches(host, pattern: $0) }
    }

    /// RFC 8461 §4.1: a literal name, or `*.` matching exactly one leftmost
    /// label. Both sides compared in ASCII form, without a trailing dot.
    public static func matches(_ host: String, pattern: String) -> Bool {
        guard let host = ascii(host), let pattern = ascii(pattern) else { return false }
        if host == pattern { return true }
        guard pattern.hasPrefix("*.") else { return false }
        guard let dot = host.firstIndex(of: ".") else { return false }
        let rest = host[host.index(after: dot)...]
        return !host[..<dot].isEmpty && rest == pattern.dropFirst(2)
    }

    static func ascii(_ name: String) -> String? {
        var name = name.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        if name.hasPrefix("*.") { return (try? UTS46.toASCII(String(name.dropFirst(2)))).map { "*." + $0 } }
        return try? UTS46.toASCII(name)
    }

    /// The policy as Go prints chasquid's Policy struct with `%+v`, which
    /// smtp-check shows: `{Version:STSv1 Mode:enforce MXs:[a b] MaxAge:24h0m0s}`.
    public var goDescription: String {
        // Go's time.Duration wraps past 292 years; so does this.
        let age = GoDuration.format(nanoseconds: Int64(maxAge) &* 1_000_000_000)
        return "{Version:\(version) Mode:\(modeText) MXs:[\(mxPatterns.joined(separator: " "))] MaxAge:\(age)}"
    }
}

/// The `_mta-sts.<domain>` TXT record (RFC 8461 §3.1):
///
///     sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
///     sts-version     = %s"v=STSv1"
///     sts-id          = %s"id=" 1*32(ALPHA / DIGIT)
///     sts-field-delim = *WSP ";" *WSP
public struct STSRecord: Sendable, Equatable {
    /// The record's `id=`, if it has a valid one.
    public var id: String?
    /// What RFC 8461 finds wrong with the records (several, no valid id),
    /// which chasquid does not check; nil when nothing.
    public var problem: Problem?

    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        case missing, several(Int), invalid(String)
        public var description: String {
            switch self {
            case .missing: "MTA-STS TXT record missing"
            case .several(let count): "\(count) MTA-STS TXT records (there must be one)"
            case .invalid(let text): "MTA-STS TXT record without a valid id= (\(text))"
            }
        }
    }

    /// The record among a name's TXT strings. As chasquid, any string that
    /// starts with `v=STSv1;` means the domain has a policy; more than one,
    /// or one without a valid id, is noted as `problem` (RFC 8461 would
    /// ignore them) but does not stop the policy from being fetched.
    public static func find(in texts: [String]) throws(Problem) -> STSRecord {
        let candidates = texts.filter { $0.hasPrefix("v=STSv1;") }
        guard let text = candidates.first else { throw .missing }
        var record = STSRecord(id: nil, problem: nil)
        for field in text.split(separator: ";").dropFirst() {
            let field = field.trimmingWhitespace()
            if field.hasPrefix("id=") {
                let value = field.dropFirst(3)
                if (1...32).contains(value.count), value.allSatisfy({ $0.isASCIIDigit || $0.isASCIILetter }) {
                    record.id = String(value)
                }
            }
        }
        if candidates.count > 1 {
            record.problem = .several(candidates.count)
        } else if record.id == nil {
            record.problem = .invalid(text)
        }
        return record
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(self[first...last])
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
    var isASCIILetter: Bool { isASCII && isLetter }
}
