/// The CONTEXTJ rules (RFC 5892 Appendix A.1, A.2): where ZERO WIDTH
/// NON-JOINER and ZERO WIDTH JOINER may appear.
public enum ContextJ {
    public static func allowed(_ scalars: [Unicode.Scalar], at index: Int) -> Bool {
        let value = scalars[index].value
        guard value == 0x200C || value == 0x200D else { return true }
        // Both: allowed right after a virama.
        if index > 0 && scalars[index - 1].properties.canonicalCombiningClass.rawValue == 9 { return true }
        guard value == 0x200C else { return false }
        // ZWNJ: (L|D) T* ZWNJ T* (R|D).
        var i = index - 1
        while i >= 0 && UnicodeData.joiningType(scalars[i]) == "T" { i -= 1 }
        guard i >= 0, ["L", "D"].contains(UnicodeData.joiningType(scalars[i])) else { return false }
        var j = index + 1
        while j < scalars.count && UnicodeData.joiningType(scalars[j]) == "T" { j += 1 }
        guard j < scalars.count, ["R", "D"].contains(UnicodeData.joiningType(scalars[j])) else { return false }
        return true
    }
}
