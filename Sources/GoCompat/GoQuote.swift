/// Go's text conventions that chasquid's formats carry.

/// Go's `%q` (strconv.Quote) for the texts logs and headers quote:
/// backslash escapes for quotes, backslashes and everything Go's
/// `unicode.IsPrint` refuses (controls, C1 controls, format characters such
/// as the bidi overrides, separators other than the space, private use,
/// unassigned), so none of them reaches a terminal, a log or a header raw.
public func goQuoted(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        if let escape = goEscape(scalar) { out += escape } else { out.unicodeScalars.append(scalar) }
    }
    return out + "\""
}

/// strconv.Quote's escape for one scalar it does not write as is: a quote,
/// a backslash or anything outside Go's `IsPrint` (`\n`, `\x1b`, `\u202e`,
/// `\U000f0000`); nil for the scalars written as they are.
public func goEscape(_ scalar: Unicode.Scalar) -> String? {
    switch scalar {
    case "\"": return "\\\""
    case "\\": return "\\\\"
    case "\u{07}": return "\\a"
    case "\u{08}": return "\\b"
    case "\u{0C}": return "\\f"
    case "\n": return "\\n"
    case "\r": return "\\r"
    case "\t": return "\\t"
    case "\u{0B}": return "\\v"
    default:
        if isGoPrintable(scalar) { return nil }
        if scalar.value < 0x20 || scalar.value == 0x7F { return String(format: "\\x%02x", scalar.value) }
        if scalar.value < 0x10000 { return String(format: "\\u%04x", scalar.value) }
        return String(format: "\\U%08x", scalar.value)
    }
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols
/// and the ASCII space.
func isGoPrintable(_ scalar: Unicode.Scalar) -> Bool {
    if scalar == " " { return true }
    switch scalar.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
        .nonspacingMark, .spacingMark, .enclosingMark,
        .decimalNumber, .letterNumber, .otherNumber,
        .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
        .initialPunctuation, .finalPunctuation, .otherPunctuation,
        .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol:
        return true
    default:
        return false
    }
}

/// The body of `goQuoted(s)`, without the outer quotes: how chasquid's log
/// writes messages (COMPAT.md §11.5).
public func goQuotedInner(_ s: String) -> String {
    // The quotes are scalars of their own; `dropFirst` on Characters would
    // take a combining mark or a Prepend scalar next to them too.
    String(goQuoted(s).unicodeScalars.dropFirst().dropLast())
}
