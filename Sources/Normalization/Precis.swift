import Foundation
import IDNA

/// PRECIS (RFC 8264) as used for user names: the UsernameCaseMapped profile
/// (RFC 8265 §3.3), with the IdentifierClass derived from Unicode properties.
enum Precis {
    static func usernameCaseMapped(_ input: String) throws(Normalize.Error) -> String {
        if input.isEmpty { return input }
        // Fast path, for nearly every address: printable ASCII is allowed as
        // is (RFC 8264 §9.11, ASCII7), and only needs lower case.
        if input.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) {
            return String(decoding: input.utf8.map { (0x41...0x5A).contains($0) ? $0 + 0x20 : $0 }, as: UTF8.self)
        }
        // 1. Width mapping: fullwidth and halfwidth forms to their plain equivalents.
        var widthMapped = String.UnicodeScalarView()
        for scalar in input.unicodeScalars {
            if isWidthVariant(scalar) {
                widthMapped.append(contentsOf: String(scalar).precomposedStringWithCompatibilityMapping.unicodeScalars)
            } else {
                widthMapped.append(scalar)
            }
        }
        // 2. Case mapping (lower case), then 3. NFC.
        let output = String(widthMapped).lowercased().precomposedStringWithCanonicalMapping
        // 4. Every code point must be allowed by the IdentifierClass.
        let scalars = Array(output.unicodeScalars)
        for (index, scalar) in scalars.enumerated() {
            switch identifierClass(scalar) {
            case .valid:
                continue
            case .contextJ:
                if ContextJ.allowed(scalars, at: index) { continue }
            case .contextO:
                if contextOAllowed(scalars, at: index) { continue }
            case .disallowed:
                break
            }
            throw Normalize.Error("precis: disallowed rune encountered")
        }
        if output.isEmpty { throw Normalize.Error("precis: transformation resulted in empty string") }
        // 5. The Bidi Rule (RFC 5893). Like x/text, chasquid's library, we
        // apply it to every string that is not pure ASCII.
        if !BidiRule.satisfied(scalars) { throw Normalize.Error("precis: failed Bidi Rule") }
        return output
    }

    private enum Derived { case valid, contextJ, contextO, disallowed }

    private static func isWidthVariant(_ s: Unicode.Scalar) -> Bool {
        // The <wide> and <narrow> decompositions live in the Halfwidth and
        // Fullwidth Forms block, plus the ideographic space.
        (0xFF01...0xFFEE).contains(s.value) || s.value == 0x3000
    }

    // RFC 8264 §8 and §9, in the order the RFC evaluates them.
    private static func identifierClass(_ s: Unicode.Scalar) -> Derived {
        let p = s.properties
        if let exception = exceptions[s.value] { return exception }
        if p.age == nil { return .disallowed }  // Unassigned
        if (0x21...0x7E).contains(s.value) { return .valid }  // ASCII7
        if p.isJoinControl { return .contextJ }
        if (0x1100...0x11FF).contains(s.value) { return .disallowed }  // OldHangulJamo (conjoining jamo)
        if p.isDefaultIgnorableCodePoint || p.isNoncharacterCodePoint { return .disallowed }
        switch p.generalCategory {
        case .control: return .disallowed
        default: break
        }
        if String(s).precomposedStringWithCompatibilityMapping != String(s) { return .disallowed }  // HasCompat
        switch p.generalCategory {
        case .lowercaseLetter, .uppercaseLetter, .otherLetter, .decimalNumber, .modifierLetter,
            .nonspacingMark, .spacingMark:
            return .valid
        default:
            // OtherLetterDigits, Spaces, Symbols, Punctuation and the rest are
            // not allowed in identifiers.
            return .disallowed
        }
    }

    // RFC 5892 §2.6 exceptions that matter for identifiers.
    private static let exceptions: [UInt32: Derived] = [
        0x00DF: .valid, 0x03C2: .valid, 0x06FD: .valid, 0x06FE: .valid, 0x0F0B: .valid, 0x3007: .valid,
        0x00B7: .contextO, 0x0375: .contextO, 0x05F3: .contextO, 0x05F4: .contextO, 0x30FB: .contextO,
        0x0660: .contextO, 0x0661: .contextO, 0x0662: .contextO, 0x0663: .contextO, 0x0664: .contextO,
        0x0665: .contextO, 0x0666: .contextO, 0x0667: .contextO, 0x0668: .contextO, 0x0669: .contextO,
        0x06F0: .contextO, 0x06F1: .contextO, 0x06F2: .contextO, 0x06F3: .contextO, 0x06F4: .contextO,
        0x06F5: .contextO, 0x06F6: .contextO, 0x06F7: .contextO, 0x06F8: .contextO, 0x06F9: .contextO,
        0x0640: .disallowed, 0x07FA: .disallowed, 0x302E: .disallowed, 0x302F: .disallowed,
        0x3031: .disallowed, 0x3032: .disallowed, 0x3033: .disallowed, 0x3034: .disallowed,
        0x3035: .disallowed, 0x303B: .disallowed,
    ]

    // RFC 5892 Appendix A.3 to A.9.
    private static func contextOAllowed(_ scalars: [Unicode.Scalar], at index: Int) -> Bool {
        let s = scalars[index].value
        switch s {
        case 0x00B7:  // MIDDLE DOT: between two 'l'.
            return index > 0 && index + 1 < scalars.count && scalars[index - 1] == "l" && scalars[index + 1] == "l"
        case 0x0375:  // Greek KERAIA: followed by Greek.
            return index + 1 < scalars.count && isGreek(scalars[index + 1])
        case 0x05F3, 0x05F4:  // Hebrew GERESH/GERSHAYIM: preceded by Hebrew.
            return index > 0 && (0x0590...0x05FF).contains(scalars[index - 1].value)
        case 0x30FB:  // KATAKANA MIDDLE DOT: some Hiragana, Katakana or Han in the label.
            return scalars.contains { isJapanese($0) }
        case 0x0660...0x0669:
            return !scalars.contains { (0x06F0...0x06F9).contains($0.value) }
        case 0x06F0...0x06F9:
            return !scalars.contains { (0x0660...0x0669).contains($0.value) }
        default:
            return false
        }
    }

    private static func isGreek(_ s: Unicode.Scalar) -> Bool {
        (0x0370...0x03FF).contains(s.value) || (0x1F00...0x1FFF).contains(s.value)
    }

    private static func isJapanese(_ s: Unicode.Scalar) -> Bool {
        s.value != 0x30FB
            && ((0x3040...0x309F).contains(s.value) || (0x30A0...0x30FF).contains(s.value)
                || s.properties.isIdeographic)
    }
}
