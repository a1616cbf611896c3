import DNS

/// A qualifier and the result a match gives (RFC 7208 §4.6.2).
enum Qualifier: UInt8, Sendable, Hashable {
    case pass = 0x2b  // "+"
    case fail = 0x2d  // "-"
    case softfail = 0x7e  // "~"
    case neutral = 0x3f  // "?"

    var result: SPFResult {
        switch self {
        case .pass: .pass
        case .fail: .fail
        case .softfail: .softfail
        case .neutral: .neutral
        }
    }
}

/// The prefix lengths of a dual-cidr-length; absent ones are the full
/// length (an exact match).
struct DualCIDR: Sendable, Hashable {
    var ipv4: Int = 32
    var ipv6: Int = 128
}

/// The eight mechanisms (§5).
enum Mechanism: Sendable, Hashable {
    case all
    case include(MacroString)
    /// Without a domain-spec: the current <domain>.
    case a(MacroString?, DualCIDR)
    case mx(MacroString?, DualCIDR)
    case ptr(MacroString?)
    case ip4(IPAddress, prefixLength: Int)
    case ip6(IPAddress, prefixLength: Int)
    case exists(MacroString)

    /// Whether evaluating it queries DNS and so counts against the limit
    /// of 10 (§4.6.4).
    var queriesDNS: Bool {
        switch self {
        case .include, .a, .mx, .ptr, .exists: true
        case .all, .ip4, .ip6: false
        }
    }
}

struct Directive: Sendable, Hashable {
    var qualifier: Qualifier
    var mechanism: Mechanism
}

/// The modifiers (§6). Unknown ones keep their name only: their value was
/// checked to be a macro-string and is otherwise ignored.
enum Modifier: Sendable, Hashable {
    case redirect(MacroString)
    case explanation(MacroString)
    case unknown(name: String)
}

enum Term: Sendable, Hashable {
    case directive(Directive)
    case modifier(Modifier)
}

/// Why a record is a permerror; `reason` is the text for SPFOutcome.
struct SPFSyntaxError: Error, Sendable, Equatable {
    var reason: String
    /// The offending term, for diagnostics.
    var term: String

    static func unknownField(_ term: some Collection<UInt8>) -> Self { .init(SPFReason.unknownField, term) }
    static func invalidIP(_ term: some Collection<UInt8>) -> Self { .init(SPFReason.invalidIP, term) }
    static func invalidMask(_ term: some Collection<UInt8>) -> Self { .init(SPFReason.invalidMask, term) }

    init(_ reason: String, _ term: some Collection<UInt8>) {
        self.reason = reason
        self.term = String(decoding: term, as: UTF8.self)
    }

    /// The error for a domain-spec or macro-string that did not parse.
    init(_ error: MacroStringError, _ term: some Collection<UInt8>) {
        self.init(error == .invalidMacro ? SPFReason.invalidMacro : SPFReason.invalidDomain, term)
    }
}

/// An SPF record, parsed whole before anything is evaluated (§4.6: a
/// syntax error anywhere is a permerror, even after a matching term).
struct SPFRecord: Sendable, Hashable {
    var terms: [Term]

    var directives: [Directive] {
        terms.compactMap {
            if case .directive(let directive) = $0 { return directive }
            return nil
        }
    }

    var redirect: MacroString? {
        for case .modifier(.redirect(let target)) in terms { return target }
        return nil
    }

    var explanation: MacroString? {
        for case .modifier(.explanation(let target)) in terms { return target }
        return nil
    }

    /// Whether a TXT record's text is an SPF record: it starts with
    /// "v=spf1" (any case, §4.5) followed by a space or nothing.
    static func isSPF(_ text: [UInt8]) -> Bool {
        text.count >= 6 && ASCII.equalsLowercase(text[0..<6], "v=spf1")
            && (text.count == 6 || text[6] == ASCII.space)
    }

    /// record = version terms *SP
    /// version = "v=spf1"
    /// terms   = *( 1*SP ( directive / modifier ) )
    ///
    /// `text` is a record `isSPF` accepted. Terms are separated by spaces
    /// only: any other byte belongs to a term and must fit its grammar.
    /// "redirect" and "exp" may each appear once (§6).
    static func parse(_ text: [UInt8]) throws(SPFSyntaxError) -> SPFRecord {
        guard isSPF(text) else { throw .unknownField(text.prefix(6)) }
        var terms: [Term] = []
        var sawRedirect = false
        var sawExplanation = false
        for token in text[6...].split(separator: ASCII.space) {
            let term = try parseTerm(token)
            switch term {
            case .modifier(.redirect):
                if sawRedirect { throw SPFSyntaxError(SPFReason.invalidDomain, token) }
                sawRedirect = true
            case .modifier(.explanation):
                if sawExplanation { throw SPFSyntaxError(SPFReason.invalidDomain, token) }
                sawExplanation = true
            default: break
            }
            terms.append(term)
        }
        return SPFRecord(terms: terms)
    }

    /// directive        = [ qualifier ] mechanism
    /// qualifier        = "+" / "-" / "?" / "~"
    /// modifier         = redirect / explanation / unknown-modifier
    /// redirect         = "redirect" "=" domain-spec
    /// explanation      = "exp" "=" domain-spec
    /// unknown-modifier = name "=" macro-string
    /// name             = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
    ///
    /// A term is a modifier when it starts with a name followed by "="
    /// (§4.6.1: the "=" comes before any ":" or "/"); anything else is a
    /// directive. Known modifier names are not also unknown modifiers: a
    /// bad `redirect=` or `exp=` value is an error, not an ignored term.
    static func parseTerm(_ token: ArraySlice<UInt8>) throws(SPFSyntaxError) -> Term {
        if let first = token.first, ASCII.isAlpha(first) {
            var end = token.startIndex
            while end < token.endIndex,
                ASCII.isAlphanumeric(token[end]) || token[end] == ASCII.dash || token[end] == ASCII.underscore
                    || token[end] == ASCII.dot
            {
                end += 1
            }
            if end < token.endIndex, token[end] == ASCII.equals {
                return .modifier(try parseModifier(name: token[..<end], value: token[(end + 1)...], token: token))
            }
        }
        return .directive(try parseDirective(token))
    }

    static func parseModifier(
        name: ArraySlice<UInt8>,
        value: ArraySlice<UInt8>,
        token: ArraySlice<UInt8>
    ) throws(SPFSyntaxError) -> Modifier {
        do {
            if ASCII.equalsLowercase(name, "redirect") {
                return .redirect(try MacroString.parseDomainSpec(value))
            }
            if ASCII.equalsLowercase(name, "exp") {
                return .explanation(try MacroString.parseDomainSpec(value))
            }
            _ = try MacroString.parse(value, letters: MacroLetter.allLetters)
            return .unknown(name: String(decoding: name, as: UTF8.self))
        } catch {
            throw SPFSyntaxError(error, token)
        }
    }

    /// mechanism = ( all / include / a / mx / ptr / ip4 / ip6 / exists )
    /// all       = "all"
    /// include   = "include"  ":" domain-spec
    /// a         = "a"        [ ":" domain-spec ] [ dual-cidr-length ]
    /// mx        = "mx"       [ ":" domain-spec ] [ dual-cidr-length ]
    /// ptr       = "ptr"      [ ":" domain-spec ]
    /// ip4       = "ip4"      ":" ip4-network   [ ip4-cidr-length ]
    /// ip6       = "ip6"      ":" ip6-network   [ ip6-cidr-length ]
    /// exists    = "exists"   ":" domain-spec
    ///
    /// Mechanism names are case-insensitive.
    static func parseDirective(_ token: ArraySlice<UInt8>) throws(SPFSyntaxError) -> Directive {
        var rest = token
        var qualifier = Qualifier.pass
        if let first = rest.first, let explicit = Qualifier(rawValue: first) {
            qualifier = explicit
            rest = rest.dropFirst()
        }
        let nameEnd = rest.firstIndex { !ASCII.isAlphanumeric($0) } ?? rest.endIndex
        let name = rest[..<nameEnd]
        let argument = rest[nameEnd...]

        func domainSpec(after colon: ArraySlice<UInt8>) throws(SPFSyntaxError) -> MacroString {
            do {
                return try MacroString.parseDomainSpec(colon)
            } catch {
                throw SPFSyntaxError(error, token)
            }
        }
        /// [ ":" domain-spec ] with nothing else.
        func optionalDomainSpec(_ text: ArraySlice<UInt8>) throws(SPFSyntaxError) -> MacroString? {
            if text.isEmpty { return nil }
            guard text.first == ASCII.colon else { throw .unknownField(token) }
            return try domainSpec(after: text.dropFirst())
        }
        /// ":" domain-spec
        func requiredDomainSpec(_ text: ArraySlice<UInt8>) throws(SPFSyntaxError) -> MacroString {
            guard text.first == ASCII.colon else { throw .unknownField(token) }
            return try domainSpec(after: text.dropFirst())
        }

        let mechanism: Mechanism
        if ASCII.equalsLowercase(name, "all") {
            guard argument.isEmpty else { throw .unknownField(token) }
            mechanism = .all
        } else if ASCII.equalsLowercase(name, "include") {
            mechanism = .include(try requiredDomainSpec(argument))
        } else if ASCII.equalsLowercase(name, "a") {
            let (text, cidr) = try splitDualCIDR(argument, token: token)
            mechanism = .a(try optionalDomainSpec(text), cidr)
        } else if ASCII.equalsLowercase(name, "mx") {
            let (text, cidr) = try splitDualCIDR(argument, token: token)
            mechanism = .mx(try optionalDomainSpec(text), cidr)
        } else if ASCII.equalsLowercase(name, "ptr") {
            mechanism = .ptr(try optionalDomainSpec(argument))
        } else if ASCII.equalsLowercase(name, "ip4") {
            let (address, length) = try parseNetwork(argument, ipv6: false, token: token)
            mechanism = .ip4(address, prefixLength: length)
        } else if ASCII.equalsLowercase(name, "ip6") {
            let (address, length) = try parseNetwork(argument, ipv6: true, token: token)
            mechanism = .ip6(address, prefixLength: length)
        } else if ASCII.equalsLowercase(name, "exists") {
            mechanism = .exists(try requiredDomainSpec(argument))
        } else {
            throw .unknownField(token)
        }
        return Directive(qualifier: qualifier, mechanism: mechanism)
    }

    /// dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ]
    /// ip4-cidr-length  = "/" ("0" / %x31-39 0*1DIGIT) ; value range 0-32
    /// ip6-cidr-length  = "/" ("0" / %x31-39 0*2DIGIT) ; value range 0-128
    ///
    /// Takes the lengths off the end of an a/mx argument and returns what
    /// precedes them. A domain-spec may itself contain "/" but cannot end
    /// in "/" DIGIT (its domain-end is a toplabel or a macro), so a
    /// trailing "/" 1*DIGIT is always a length. Lengths out of range or
    /// with leading zeros are errors.
    static func splitDualCIDR(
        _ argument: ArraySlice<UInt8>,
        token: ArraySlice<UInt8>
    ) throws(SPFSyntaxError) -> (ArraySlice<UInt8>, DualCIDR) {
        var rest = argument
        var cidr = DualCIDR()

        /// The digits of a trailing "/" 1*DIGIT, and where its "/" is.
        func trailingLength(_ text: ArraySlice<UInt8>) -> (slash: Int, digits: ArraySlice<UInt8>)? {
            let digitsStart = (text.lastIndex { !ASCII.isDigit($0) } ?? (text.startIndex - 1)) + 1
            guard digitsStart < text.endIndex, digitsStart > text.startIndex,
                text[digitsStart - 1] == ASCII.slash
            else { return nil }
            return (digitsStart - 1, text[digitsStart...])
        }

        if let length = trailingLength(rest), length.slash > rest.startIndex,
            rest[length.slash - 1] == ASCII.slash
        {
            cidr.ipv6 = try prefixLength(length.digits, max: 128, token: token)
            rest = rest[..<(length.slash - 1)]
        }
        if let length = trailingLength(rest) {
            cidr.ipv4 = try prefixLength(length.digits, max: 32, token: token)
            rest = rest[..<length.slash]
        }
        return (rest, cidr)
    }

    /// "0" / %x31-39 *DIGIT, at most `max`.
    static func prefixLength(
        _ digits: ArraySlice<UInt8>,
        max: Int,
        token: ArraySlice<UInt8>
    )
        throws(SPFSyntaxError) -> Int
    {
        guard !digits.isEmpty, digits.count <= 3, digits.allSatisfy(ASCII.isDigit),
            digits.count == 1 || digits.first != 0x30
        else { throw .invalidMask(token) }
        let value = digits.reduce(0) { $0 * 10 + Int($1 - 0x30) }
        guard value <= max else { throw .invalidMask(token) }
        return value
    }

    /// ip4-network = qnum "." qnum "." qnum "." qnum   (no leading zeros)
    /// ip6-network = <as per RFC 4291, Section 2.2>
    ///
    /// `argument` is what follows "ip4"/"ip6": ":" network [ "/" length ].
    static func parseNetwork(
        _ argument: ArraySlice<UInt8>,
        ipv6: Bool,
        token: ArraySlice<UInt8>
    ) throws(SPFSyntaxError) -> (IPAddress, Int) {
        guard argument.first == ASCII.colon else { throw .unknownField(token) }
        let text = argument.dropFirst()
        let slash = text.firstIndex(of: ASCII.slash)
        let networkText = String(decoding: text[..<(slash ?? text.endIndex)], as: UTF8.self)
        guard let network = IPAddress(networkText), network.isIPv4 != ipv6 else { throw .invalidIP(token) }
        guard let slash else { return (network, ipv6 ? 128 : 32) }
        return (network, try prefixLength(text[(slash + 1)...], max: ipv6 ? 128 : 32, token: token))
    }
}
