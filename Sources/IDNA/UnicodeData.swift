/// Lookups in the generated tables (UnicodeTables.swift), parsed once.
enum UnicodeData {
    enum Status: UInt8, Sendable {
        case valid, mapped, deviation, disallowed, ignored, disallowedSTD3Valid, disallowedSTD3Mapped
    }

    struct Range<Value: Sendable>: Sendable {
        var start: UInt32
        var end: UInt32
        var value: Value
    }

    static let idna: [Range<(Status, [Unicode.Scalar])>] = UnicodeTableData.idnaMapping.split(separator: ";").map {
        let f = $0.split(separator: ",", omittingEmptySubsequences: false)
        let status: Status =
            switch f[2] {
            case "V": .valid
            case "M": .mapped
            case "D": .deviation
            case "I": .ignored
            case "S": .disallowedSTD3Valid
            case "T": .disallowedSTD3Mapped
            default: .disallowed
            }
        let mapping = f[3].split(separator: " ").compactMap { UInt32($0, radix: 16).flatMap(Unicode.Scalar.init) }
        return Range(start: UInt32(f[0], radix: 16)!, end: UInt32(f[1], radix: 16)!, value: (status, mapping))
    }

    static let bidi: [Range<Substring>] = parseSimple(UnicodeTableData.bidiClass)
    static let joining: [Range<Substring>] = parseSimple(UnicodeTableData.joiningType)

    static func parseSimple(_ text: String) -> [Range<Substring>] {
        text.split(separator: ";").map {
            let f = $0.split(separator: ",")
            return Range(start: UInt32(f[0], radix: 16)!, end: UInt32(f[1], radix: 16)!, value: f[2])
        }
    }

    static func find<V>(_ table: [Range<V>], _ scalar: Unicode.Scalar) -> V? {
        var low = 0
        var high = table.count - 1
        let v = scalar.value
        while low <= high {
            let mid = (low + high) / 2
            if v < table[mid].start {
                high = mid - 1
            } else if v > table[mid].end {
                low = mid + 1
            } else {
                return table[mid].value
            }
        }
        return nil
    }

    static func status(_ s: Unicode.Scalar) -> (Status, [Unicode.Scalar]) { find(idna, s) ?? (.disallowed, []) }

    /// The Bidi_Class, as its short name ("L", "R", "AL", "EN", …).
    static func bidiClass(_ s: Unicode.Scalar) -> Substring { find(bidi, s) ?? "L" }

    /// The Joining_Type ("D", "L", "R", "T", "C"; "U" when not listed).
    static func joiningType(_ s: Unicode.Scalar) -> Substring { find(joining, s) ?? "U" }
}
