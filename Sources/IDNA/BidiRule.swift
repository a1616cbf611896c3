/// The Bidi Rule (RFC 5893 §2), for IDNA labels and PRECIS strings.
public enum BidiRule {
    static let rtl: Set<Substring> = ["R", "AL", "AN"]

    /// Whether any code point is right-to-left (R, AL) or an Arabic number (AN).
    public static func hasRTL(_ scalars: [Unicode.Scalar]) -> Bool {
        scalars.contains { rtl.contains(UnicodeData.bidiClass($0)) }
    }

    /// True when `scalars` satisfies the six conditions.
    public static func satisfied(_ scalars: [Unicode.Scalar]) -> Bool {
        guard let first = scalars.first else { return true }
        let classes = scalars.map { UnicodeData.bidiClass($0) }
        let firstClass = classes[0]
        _ = first
        // Condition 1: the first character is L, R or AL.
        if firstClass == "R" || firstClass == "AL" {
            // 2: only R, AL, AN, EN, ES, CS, ET, ON, BN, NSM.
            let allowed: Set<Substring> = ["R", "AL", "AN", "EN", "ES", "CS", "ET", "ON", "BN", "NSM"]
            guard classes.allSatisfy({ allowed.contains($0) }) else { return false }
            // 3: ends with R, AL, EN or AN, followed by zero or more NSM.
            guard let last = classes.last(where: { $0 != "NSM" }), ["R", "AL", "EN", "AN"].contains(last) else {
                return false
            }
            // 4: not both EN and AN.
            return !(classes.contains("EN") && classes.contains("AN"))
        }
        guard firstClass == "L" else { return false }
        // 5: only L, EN, ES, CS, ET, ON, BN, NSM.
        let allowed: Set<Substring> = ["L", "EN", "ES", "CS", "ET", "ON", "BN", "NSM"]
        guard classes.allSatisfy({ allowed.contains($0) }) else { return false }
        // 6: ends with L or EN, followed by zero or more NSM.
        guard let last = classes.last(where: { $0 != "NSM" }) else { return false }
        return last == "L" || last == "EN"
    }
}
