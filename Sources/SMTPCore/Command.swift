import GoCompat
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
        if let space = text.firstIndex(ofScalar: " ") {
            verb = text[..<space].uppercased()
            argument = String(text.suffix(afterScalarAt: space))
        } else {
            verb = text.uppercased()
            argument = ""
        }
    }

    /// Verbs that mean a web client is talking to us (cross-protocol attacks).
    public static let httpVerbs: Set<String> = ["GET", "POST", "CONNECT"]

    /// A TLS handshake (a record of type 22, version 3.x) sent as if it
    /// were a command: a client speaking implicit TLS to a plain-text port.
    public var isTLSHandshake: Bool {
        var scalars = verb.unicodeScalars.makeIterator()
        return scalars.next() == "\u{16}" && scalars.next() == "\u{03}"
    }

    /// Whether the line is another protocol altogether (HTTP, TLS): closed
    /// at once, outside the error budget.
    public var isCrossProtocol: Bool { Self.httpVerbs.contains(verb) || isTLSHandshake }

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
            let parts = argument.split(scalar: " ", maxSplits: 1)
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

    /// Checks the `FROM:` / `TO:` prefix (ASCII, case-insensitive) and
    /// returns the first space- or tab-separated token after it; parameters
    /// are ignored. Per scalar: a mark after the colon or a space is part of
    /// the token, not of the prefix or the separator.
    public static func extract(_ argument: String, prefix: String) throws(Failure) -> String {
        let head = argument.utf8.prefix(prefix.utf8.count)
        let upper: (UInt8) -> UInt8 = { (0x61...0x7A).contains($0) ? $0 - 0x20 : $0 }
        guard head.count == prefix.utf8.count, head.map(upper).elementsEqual(prefix.utf8) else { throw .missingPrefix }
        let isBlank: (Unicode.Scalar) -> Bool = { $0 == " " || $0 == "\t" }
        // The prefix is ASCII: as many scalars as bytes.
        let rest = argument.unicodeScalars.dropFirst(prefix.utf8.count).drop(while: isBlank)
        guard let token = rest.split(whereSeparator: isBlank).first, !token.isEmpty else {
            throw .empty
        }
        return String(String.UnicodeScalarView(token))
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

    /// Scalar by scalar (issue 13 §6): a `Character` can hide an `@`, a
    /// quote or a control character inside a grapheme cluster.
    public static func parse(_ token: String) throws(Invalid) -> ParseResult {
        var address = Array(token.unicodeScalars)[...]
        if address.elementsEqual(["<", ">"]) { return .null }
        if address.first == "<" {
            guard address.count >= 2, address.last == ">" else { throw Invalid(reason: "missing '>'") }
            address = address.dropFirst().dropLast()
            // A source route (RFC 5321 §4.1.2 "@a,@b:") is obsolete; drop it.
            if address.first == "@", let colon = address.firstIndex(of: ":") {
                address = address[(colon + 1)...]
            }
        }
        guard !address.isEmpty else { throw Invalid(reason: "empty address") }
        // The last `@`: a quoted local part may hold one.
        if let at = address.lastIndex(of: "@") {
            try checkLocalPart(address[..<at])
            try checkDomain(address[(at + 1)...])
        } else {
            // Checked by the caller, which has a reply of its own for it.
            try checkLocalPart(address)
        }
        return .address(String(String.UnicodeScalarView(address)))
    }

    private static let atomSpecials: Set<Unicode.Scalar> = [
        "(", ")", "<", ">", "[", "]", ":", ";", "@", "\\", ",", "\"", " ",
    ]

    /// An ASCII control character or DEL: never part of an address (RFC 5321
    /// qtextSMTP, quoted-pairSMTP, dcontent), so none reaches a log, a hook's
    /// environment, a header or an outgoing command (issue 13 §5).
    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || scalar.value == 0x7F
    }

    static func checkLocalPart(_ local: ArraySlice<Unicode.Scalar>) throws(Invalid) {
        guard !local.isEmpty else { throw Invalid(reason: "empty local part") }
        if local.first == "\"" {
            // quoted-string: printable scalars (UTF-8 allowed, RFC 6531), a
            // quote or backslash only escaped.
            guard local.count >= 2, local.last == "\"" else { throw Invalid(reason: "unterminated quoted local part") }
            var escaped = false
            for scalar in local.dropFirst().dropLast() {
                if isControl(scalar) {
                    throw Invalid(reason: "control character \(scalar.debugDescription) in quoted local part")
                }
                if escaped {
                    escaped = false
                } else if scalar == "\\" {
                    escaped = true
                } else if scalar == "\"" {
                    throw Invalid(reason: "bad quoted local part")
                }
            }
            // `"a\"`: the closing quote is escaped.
            guard !escaped else { throw Invalid(reason: "unterminated quoted local part") }
            return
        }
        // dot-atom, with UTF-8 allowed (RFC 6531).
        for part in local.split(separator: ".", omittingEmptySubsequences: false) {
            guard !part.isEmpty else { throw Invalid(reason: "bad dots in local part") }
            for scalar in part where atomSpecials.contains(scalar) || isControl(scalar) {
                throw Invalid(reason: "invalid character \(scalar.debugDescription) in local part")
            }
        }
    }

    static func checkDomain(_ domain: ArraySlice<Unicode.Scalar>) throws(Invalid) {
        guard !domain.isEmpty else { throw Invalid(reason: "empty domain") }
        if domain.first == "[" {
            // An address literal: dcontent (RFC 5321 §4.1.3), printable
            // ASCII but for the brackets and the backslash.
            guard domain.count >= 3, domain.last == "]" else { throw Invalid(reason: "bad domain literal") }
            for scalar in domain.dropFirst().dropLast() where !(33...126).contains(scalar.value) || "[]\\".unicodeScalars.contains(scalar) {
                throw Invalid(reason: "invalid character \(scalar.debugDescription) in domain literal")
            }
            return
        }
        for label in domain.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty else { throw Invalid(reason: "bad dots in domain") }
            for scalar in label where atomSpecials.contains(scalar) || isControl(scalar) {
                throw Invalid(reason: "invalid character \(scalar.debugDescription) in domain")
            }
        }
    }
}
