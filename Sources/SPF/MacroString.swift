/// A parsed macro-string (RFC 7208 §7.1): literal text and macros, not yet
/// expanded. Domain-specs, `exp=` texts and unknown modifiers' values are
/// all macro-strings.
struct MacroString: Sendable, Hashable {
    enum Piece: Sendable, Hashable {
        /// macro-literal characters (and, in an explain-string, spaces).
        case literal([UInt8])
        /// "%%": a percent sign.
        case percent
        /// "%_": a space.
        case space
        /// "%-": a URL-encoded space, "%20".
        case encodedSpace
        /// "%{...}".
        case macro(Macro)
    }

    var pieces: [Piece]

    init(_ pieces: [Piece]) { self.pieces = pieces }

    /// Whether expanding needs the value of `letter` (so the caller fetches
    /// `p`, which costs DNS queries, only when it is used).
    func uses(_ letter: MacroLetter) -> Bool {
        pieces.contains {
            if case .macro(let macro) = $0 { return macro.letter == letter }
            return false
        }
    }
}

/// One "%{...}" macro.
struct Macro: Sendable, Hashable {
    var letter: MacroLetter
    /// The letter was upper case: URL-escape the expansion (§7.3).
    var urlEscape: Bool
    /// The DIGIT transformer: keep this many right-hand parts (nil: all).
    var rightParts: Int?
    /// The "r" transformer: reverse the parts.
    var reverse: Bool
    /// The delimiters to split on; "." when none are given.
    var delimiters: [UInt8]
}

/// macro-letter = "s" / "l" / "o" / "d" / "i" / "p" / "h" / "c" / "r" / "t" / "v"
enum MacroLetter: UInt8, Sendable, Hashable, CaseIterable {
    case s = 0x73
    case l = 0x6c
    case o = 0x6f
    case d = 0x64
    case i = 0x69
    case p = 0x70
    case h = 0x68
    case c = 0x63
    case r = 0x72
    case t = 0x74
    case v = 0x76

    /// The letters a domain-spec may use: `c`, `r` and `t` belong to
    /// explanations only (§7.3).
    static let domainSpecLetters: Set<MacroLetter> = [.s, .l, .o, .d, .i, .p, .h, .v]
    static let allLetters = Set(MacroLetter.allCases)
}

/// Why a macro-string did not parse.
enum MacroStringError: Error, Sendable, Equatable {
    /// A "%" not followed by "{", "%", "_" or "-"; a bad "%{...}".
    case invalidMacro
    /// A character that is no macro-literal (a control, non-ASCII, or a
    /// space where spaces are not allowed).
    case invalidCharacter
    /// A domain-spec without its domain-end.
    case invalidDomainEnd
}

extension MacroString {
    /// macro-string  = *( macro-expand / macro-literal )
    /// macro-literal = %x21-24 / %x26-7E   ; visible characters except "%"
    ///
    /// With `allowSpace`, the explain-string of an `exp=` TXT record:
    /// explain-string = *( macro-string / SP )
    static func parse(
        _ bytes: some Collection<UInt8>,
        letters: Set<MacroLetter>,
        allowSpace: Bool = false
    ) throws(MacroStringError) -> MacroString {
        let bytes = Array(bytes)
        var pieces: [Piece] = []
        var literal: [UInt8] = []
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == ASCII.percent {
                if !literal.isEmpty {
                    pieces.append(.literal(literal))
                    literal = []
                }
                let (piece, next) = try parseMacroExpand(bytes, at: index, letters: letters)
                pieces.append(piece)
                index = next
                continue
            }
            guard (0x21...0x7e).contains(byte) || (allowSpace && byte == ASCII.space) else {
                throw .invalidCharacter
            }
            literal.append(byte)
            index += 1
        }
        if !literal.isEmpty { pieces.append(.literal(literal)) }
        return MacroString(pieces)
    }

    /// macro-expand = ( "%{" macro-letter transformers *delimiter "}" )
    ///                / "%%" / "%_" / "%-"
    /// transformers = *DIGIT [ "r" ]
    /// delimiter    = "." / "-" / "+" / "," / "/" / "_" / "="
    ///
    /// A DIGIT transformer must not be zero (§7.3). Letters are
    /// case-insensitive; an upper-case one asks for URL escaping.
    /// `index` is at the "%"; returns the piece and the index after it.
    static func parseMacroExpand(
        _ bytes: [UInt8],
        at index: Int,
        letters: Set<MacroLetter>
    ) throws(MacroStringError) -> (Piece, Int) {
        guard index + 1 < bytes.count else { throw .invalidMacro }
        switch bytes[index + 1] {
        case ASCII.percent: return (.percent, index + 2)
        case ASCII.underscore: return (.space, index + 2)
        case ASCII.dash: return (.encodedSpace, index + 2)
        case ASCII.openBrace: break
        default: throw .invalidMacro
        }
        var position = index + 2
        guard position < bytes.count, let letter = MacroLetter(rawValue: ASCII.lowercased(bytes[position])),
            letters.contains(letter)
        else { throw .invalidMacro }
        let urlEscape = ASCII.isUpper(bytes[position])
        position += 1

        var digits: Int?
        while position < bytes.count, ASCII.isDigit(bytes[position]) {
            // Saturate: more parts than any name has means "all of them".
            digits = min((digits ?? 0) * 10 + Int(bytes[position] - 0x30), 1_000)
            position += 1
        }
        if digits == 0 { throw .invalidMacro }

        var reverse = false
        if position < bytes.count, ASCII.lowercased(bytes[position]) == 0x72 {  // "r"
            reverse = true
            position += 1
        }

        var delimiters: [UInt8] = []
        while position < bytes.count, Self.delimiters.contains(bytes[position]) {
            delimiters.append(bytes[position])
            position += 1
        }
        guard position < bytes.count, bytes[position] == ASCII.closeBrace else { throw .invalidMacro }
        let macro = Macro(
            letter: letter,
            urlEscape: urlEscape,
            rightParts: digits,
            reverse: reverse,
            delimiters: delimiters.isEmpty ? [ASCII.dot] : delimiters
        )
        return (.macro(macro), position + 1)
    }

    static let delimiters: Set<UInt8> = Set(".-+,/_=".utf8)

    /// domain-spec = macro-string domain-end
    /// domain-end  = ( "." toplabel [ "." ] ) / macro-expand
    ///
    /// The check is on the text as written: what a macro expands to is not
    /// checked (§7.1).
    static func parseDomainSpec(_ bytes: some Collection<UInt8>) throws(MacroStringError) -> MacroString {
        let spec = try parse(bytes, letters: MacroLetter.domainSpecLetters)
        guard let last = spec.pieces.last else { throw .invalidDomainEnd }
        guard case .literal(var tail) = last else { return spec }  // ends with a macro-expand
        if tail.last == ASCII.dot { tail.removeLast() }
        guard let dot = tail.lastIndex(of: ASCII.dot), DomainName.isTopLabel(tail[(dot + 1)...]) else {
            throw .invalidDomainEnd
        }
        return spec
    }
}
