/// The canonicalization algorithms (RFC 6376 §3.4).
public enum DKIMCanonicalization: String, Sendable {
    case simple
    case relaxed

    static let crlf: [UInt8] = [0x0D, 0x0A]

    static func isWSP(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }

    /// One header field, with its CRLF (§3.4.1, §3.4.2).
    func header(_ field: DKIMMessage.Field) -> [UInt8] {
        switch self {
        case .simple:
            return field.source + Self.crlf
        case .relaxed:
            // Name lower-cased, unfolded, WSP runs as one SP, no WSP at the
            // end of the value or around the colon.
            var out = Array(field.name.lowercased().utf8)
            out.append(UInt8(ascii: ":"))
            var value: [UInt8] = []
            var pendingSpace = false
            // Only the CRLFs of folds go (RFC 6376 §3.4.2); a lone CR is
            // text, so one added to a signed field breaks the signature.
            let source = field.value
            var index = 0
            while index < source.count {
                let byte = source[index]
                index += 1
                if byte == 0x0D, index < source.count, source[index] == 0x0A {
                    index += 1
                    continue
                }
                if Self.isWSP(byte) {
                    pendingSpace = true
                    continue
                }
                if pendingSpace && !value.isEmpty { value.append(0x20) }
                pendingSpace = false
                value.append(byte)
            }
            return out + value + Self.crlf
        }
    }

    /// The whole canonical body (§3.4.3, §3.4.4), as BodyCanonicalizer
    /// produces it in pieces.
    func body(_ body: [UInt8]) -> [UInt8] {
        var canonicalizer = BodyCanonicalizer(self)
        return canonicalizer.feed(body) + canonicalizer.finish()
    }
}
