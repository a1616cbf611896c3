/// Go's text conventions that chasquid's formats carry.

/// Go's `%q` for the texts logs and headers quote: backslash escapes for
/// quotes, backslashes and control characters; other characters as they are.
public func goQuoted(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 || scalar.value == 0x7F {
                out += String(format: "\\x%02x", scalar.value)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

/// The body of `goQuoted(s)`, without the outer quotes: how chasquid's log
/// writes messages (COMPAT.md §11.5).
public func goQuotedInner(_ s: String) -> String {
    String(goQuoted(s).dropFirst().dropLast())
}
