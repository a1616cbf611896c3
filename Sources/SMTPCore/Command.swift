import Normalization

/// A command line split into its verb and argument (RFC 5321 §4.1.1).
/// Verbs are case-insensitive; the argument is everything after the first
/// space, as sent.
public struct Command: Equatable, Sendable {
    /// Upper-cased verb.
    public var verb: String
    public var argument: String

    public init(verb: String, argument: String) {
        self.verb = verb
        self.argument = argument
    }

    public init(line: [UInt8]) {
        let text = String(decoding: line, as: UTF8.self)
        if let space = text.firstIndex(of: " ") {
            verb = text[..<space].uppercased()
            argument = String(text[text.index(after: space)...])
        } else {
            verb = text.uppercased()
            argument = ""
        }
    }

    /// Verbs that mean a web client is talking to us (cross-protocol attacks).
    public static let httpVerbs: Set<String> = ["GET", "POST", "CONNECT"]

    /// The verbs the server implements.
    public static let knownVerbs: Set<String> = [
        "HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "HELP", "QUIT", "VRFY", "EXPN", "STARTTLS", "AUTH",
    ]

    /// The verb as chasquid names it in metrics and logs: an unknown one is
    /// Go's `unknown<%.6q>`, its first 6 characters (Unicode scalars) quoted,
    /// so a client cannot fill either with noise or control characters.
    public var reportedVerb: String {
        Self.knownVerbs.contains(verb) ? verb : "unknown<\(goQuoted(String(String.UnicodeScalarView(verb.unicodeScalars.prefix(6)))))>"
    }

    /// What the metrics count an unknown verb as once too many distinct ones
    /// were seen (`ServerMetrics.count(_:clientLabel:overflow:)`).
    public static let unknownVerbOverflow = "unknown<other>"

    /// The line as a trace may show it. An AUTH initial response is a
    /// credential, so AUTH keeps only its mechanism.
    public var traceText: String {
        if verb == "AUTH" {
            let parts = argument.split(separator: " ", maxSplits: 1)
            guard let mechanism = parts.first?.uppercased() else { return "AUTH" }
            return parts.count > 1 ? "AUTH \(mechanism) (initial response not shown)" : "AUTH \(mechanism)"
        }
        return argument.isEmpty ? verb : "\(verb) \(argument)"
    }
}

/// The path argument of MAIL FROM / RCPT TO (RFC 5321 §4.1.2, RFC 6531).
public enum PathArgument {
    public enum Failure: Error, Equatable, Sendable {
        /// No `FROM:` / `TO:` prefix.
        case missingPrefix
        /// Nothing after the prefix.
        case empty
    }

    /// Checks the `FROM:` / `TO:` prefix (case-insensitive) and returns the
    /// first whitespace-separated token after it; parameters are ignored.
    public static func extract(_ argument: String, prefix: String) throws(Failure) -> String {
        guard argument.count >= prefix.count, argument.prefix(prefix.count).uppercased() == prefix else {
            throw .missingPrefix
        }
        let rest = argument.dropFirst(prefix.count).drop { $0 == " " || $0 == "\t" }
        guard let token = rest.split(whereSeparator: { $0 == " " || $0 == "\t" }).first, !token.isEmpty else {
            throw .empty
        }
        return String(token)
    }
}

/// Mailbox syntax for the envelope, as chasquid accepts it: `<local@domain>`
/// or a bare `local@domain`; `<>` is the null sender.
public enum Mailbox {
    public enum ParseResult: Equatable, Sendable {
        case null
        case address(String)
    }

    public struct Invalid: Error, Equatable, Sendable {
        public var reason: String
    }

    public static func parse(_ token: String) throws(Invalid) -> ParseResult {
        if token == "<>" { return .null }
        var address = Substring(token)
        if address.hasPrefix("<") {
            guard address.hasSuffix(">"), address.count >= 2 else { throw Invalid(reason: "missing '>'") }
            address = address.dropFirst().dropLast()
            // A source route (RFC 5321 §4.1.2 "@a,@b:") is obsolete; drop it.
            if address.hasPrefix("@"), let colon = address.firstIndex(of: ":") {
                address = address[address.index(after: colon)...]
            }
        }
        guard !address.isEmpty else { throw Invalid(reason: "empty address") }
        guard let at = address.lastIndex(of: "@") else {
            // Checked by the caller, which has a reply of its own for it.
            try checkLocalPart(address)
            return .address(String(address))
        }
        let local = address[..<at]
        let domain = address[address.index(after: at)...]
        try checkLocalPart(local)
        try checkDomain(domain)
        return .address(String(address))
    }

    private static let atomSpecials: Set<Character> = ["(", ")", "<", ">", "[", "]", ":", ";", "@", "\\", ",", "\"", " "]

    static func checkLocalPart(_ local: Substring) throws(Invalid) {
        guard !local.isEmpty else { throw Invalid(reason: "empty local part") }
        if local.hasPrefix("\"") {
            // quoted-string: anything but bare quotes and backslashes, escapes allowed.
            guard local.count >= 2, local.hasSuffix("\"") else { throw Invalid(reason: "unterminated quoted local part") }
            var escaped = false
            for c in local.dropFirst().dropLast() {
                if escaped {
                    escaped = false
                } else if c == "\\" {
                    escaped = true
                } else if c == "\"" {
                    throw Invalid(reason: "bad quoted local part")
                }
            }
            return
        }
        // dot-atom, with UTF-8 allowed (RFC 6531).
        for part in local.split(separator: ".", omittingEmptySubsequences: false) {
            guard !part.isEmpty else { throw Invalid(reason: "bad dots in local part") }
            for c in part where atomSpecials.contains(c) || c.asciiValue.map({ $0 < 0x21 || $0 == 0x7F }) == true {
                throw Invalid(reason: "invalid character \(c.debugDescription) in local part")
            }
        }
    }

    static func checkDomain(_ domain: Substring) throws(Invalid) {
        guard !domain.isEmpty else { throw Invalid(reason: "empty domain") }
        if domain.hasPrefix("[") {
            guard domain.hasSuffix("]") else { throw Invalid(reason: "bad domain literal") }
            return
        }
        for label in domain.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty else { throw Invalid(reason: "bad dots in domain") }
            for c in label where atomSpecials.contains(c) || c.asciiValue.map({ $0 < 0x21 || $0 == 0x7F }) == true {
                throw Invalid(reason: "invalid character \(c.debugDescription) in domain")
            }
        }
    }
}
