/// The types a session shares with the server: the listener mode, the questions
/// it asks (`SessionPolicy`) and their answers, and what it knows.

/// Which listener a connection came in on (COMPAT.md §3, mode names).
public enum ListenerMode: String, Sendable, CaseIterable {
    case smtp = "SMTP"
    case submission = "submission"
    case submissionTLS = "submission+TLS"

    /// Submission ports require AUTH before MAIL [SEC].
    public var requiresAuth: Bool { self != .smtp }
}

/// The questions a session asks the rest of the server. The SMTP logic stays
/// free of I/O; the server implements these with the domains, the users
/// databases, SPF and the queue, and tests with plain values.
public protocol SessionPolicy: Sendable {
    /// Is `domain` (normalised, Unicode) one of ours?
    func isLocal(domain: String) -> Bool
    /// Does the local `address` exist (aliases, users, catch-all)?
    func recipientExists(_ address: String) async -> RecipientCheck
    /// Checks credentials; `domain` may be empty. `session` says who asks
    /// (failed attempts are counted per client).
    func authenticate(user: String, domain: String, password: String, session: SessionInfo) async -> AuthCheck
    /// SPF and security-level checks on the sender (COMPAT.md §12.2 steps 6
    /// and 7).
    func checkSender(_ address: String, session: SessionInfo) async -> SenderCheck
}

public enum RecipientCheck: Equatable, Sendable {
    case exists
    case unknown
    case lookupFailed(String)
}

public enum AuthCheck: Equatable, Sendable {
    case accepted
    case rejected
    case backendFailed(String)
    /// Not checked: this client failed too often lately.
    case throttled
}

/// The verdict of the sender checks at MAIL FROM.
public struct SenderCheck: Equatable, Sendable {
    /// The reply refusing the sender; nil accepts.
    public var refusal: Reply?
    /// The mail-log reason for a refusal, in chasquid's words (§18).
    public var logReason: String?
    /// The SPF outcome, when SPF ran.
    public var spf: SPFVerdict?

    public init(refusal: Reply? = nil, logReason: String? = nil, spf: SPFVerdict? = nil) {
        self.refusal = refusal
        self.logReason = logReason
        self.spf = spf
    }

    public static let accepted = SenderCheck()
}

/// An SPF outcome as the session keeps it, for the `Received-SPF` and
/// `Authentication-Results` headers and the post-data hook.
public struct SPFVerdict: Equatable, Sendable {
    /// `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror` or `permerror`.
    public var result: String
    /// Why; nil prints as `<nil>`, as chasquid does.
    public var reason: String?

    public init(result: String, reason: String?) {
        self.result = result
        self.reason = reason
    }

    public var passed: Bool { result == "pass" }
}

/// What is known about the session, for policies and headers.
public struct SessionInfo: Equatable, Sendable {
    public var mode: ListenerMode
    /// The name we answer as: the hostname, or the TLS SNI name once known.
    public var serverName: String
    public var onTLS: Bool
    /// The first word of HELO/EHLO, unvalidated.
    public var ehloDomain: String?
    public var usedEHLO: Bool
    /// `user@domain` (or `user@`) once authenticated.
    public var authenticatedAs: String?
    public var authenticatedUser: String?
    public var authenticatedDomain: String?
    /// The client's IP address as text; nil when not known.
    public var remoteIP: String? = nil

    public var isAuthenticated: Bool { authenticatedAs != nil }
}

/// The envelope of the transaction in progress.
public struct Envelope: Equatable, Sendable {
    /// The sender as stored: domain normalised, or "<>".
    public var from: String
    /// Accepted recipients, before alias expansion.
    public var recipients: [String] = []
    /// The SPF outcome at MAIL FROM, when SPF ran.
    public var spf: SPFVerdict? = nil
    /// The headers put on top of the data (set when DATA starts).
    public var trace: TraceBlock? = nil
}

/// A policy refusal worth a mail-log line (COMPAT.md §18): who, and why, in
/// chasquid's words.
public struct Rejection: Equatable, Sendable {
    public var from: String?
    public var to: [String]
    public var reason: String
}
