/// Go's text conventions that chasquid's formats carry.

/// Go's `%q` (strconv.Quote) for the texts logs and headers quote:
/// backslash escapes for quotes, backslashes and everything Go's
/// `unicode.IsPrint` refuses (controls, C1 controls, format characters such
/// as the bidi overrides, separators other than the space, private use,
/// unassigned), so none of them reaches a terminal, a log or a header raw.
public func goQuoted(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\u{07}": out += "\\a"
        case "\u{08}": out += "\\b"
        case "\u{0C}": out += "\\f"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\u{0B}": out += "\\v"
        default:
            if isGoPrintable(scalar) {
                out.unicodeScalars.append(scalar)
            } else if scalar.value < 0x20 || scalar.value == 0x7F {
                out += String(format: "\\x%02x", scalar.value)
            } else if scalar.value < 0x10000 {
                out += String(format: "\\u%04x", scalar.value)
            } else {
                out += String(format: "\\U%08x", scalar.value)
            }
        }
    }
    return out + "\""
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
    String(goQuoted(s).dropFirst().dropLast())
}
