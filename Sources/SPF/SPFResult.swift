/// The result of check_host() (RFC 7208 §2.6). The raw values are the
/// result names used in `Received-SPF:` headers (§9.1).
public enum SPFResult: String, Sendable, Hashable, CaseIterable {
    /// No SPF record, or the domain is not one check_host() can ask about.
    case none
    /// The domain makes no assertion about the client.
    case neutral
    /// The client is authorized.
    case pass
    /// The client is not authorized.
    case fail
    /// Probably not authorized, but the domain will not say so strongly.
    case softfail
    /// A transient (usually DNS) error; trying later may give a result.
    case temperror
    /// The domain's records cannot be interpreted.
    case permerror
}

/// What check_host() concluded, and why.
public struct SPFOutcome: Sendable, Equatable {
    public var result: SPFResult
    /// A short, machine-ish account of how the result was reached, worded as
    /// chasquid's SPF library words it ("matched ip", "lookup limit
    /// reached", ...). It goes in `Received-SPF: <result> (<reason>)` and in
    /// the SMTP reply; nil when there is nothing to say.
    public var reason: String?
    /// For `fail` only: the domain's explanation (its `exp=` text, macros
    /// expanded), or the checker's default explanation (RFC 7208 §6.2).
    public var explanation: String?

    public init(result: SPFResult, reason: String? = nil, explanation: String? = nil) {
        self.result = result
        self.reason = reason
        self.explanation = explanation
    }
}

/// The reason texts. Those chasquid's library (blitiri.com.ar/go/spf) also
/// has use its wording, so headers and replies read the same.
enum SPFReason {
    // Matches.
    static let matchedAll = "matched all"
    static let matchedIP = "matched ip"
    static let matchedA = "matched a"
    static let matchedMX = "matched mx"
    static let matchedPTR = "matched ptr"
    static let matchedExists = "matched exists"

    // DNS.
    static let noRecord = "no DNS record found"
    static let multipleRecords = "multiple matching DNS records"
    static let lookupLimitReached = "lookup limit reached"
    static let voidLookupLimitReached = "void lookup limit reached"
    static let tooManyMXRecords = "too many MX records"

    // Syntax.
    static let unknownField = "unknown field"
    static let invalidIP = "invalid ipX value"
    static let invalidMask = "invalid mask"
    static let invalidMacro = "invalid macro"
    static let invalidDomain = "invalid domain"
}
