import Foundation

/// IDNA domain processing per UTS #46 (nontransitional, IDNA2008-compatible),
/// with the flags of its conformance tests: CheckHyphens, CheckBidi,
/// CheckJoiners and UseSTD3ASCIIRules on; VerifyDnsLength for ToASCII.
public enum UTS46 {
    public struct Error: Swift.Error, CustomStringConvertible, Sendable, Equatable {
        /// UTS #46 status codes, as in IdnaTestV2.txt (P1, V6, B1, …).
        public var codes: [String]
        public var description: String { "idna: invalid domain [\(codes.joined(separator: " "))]" }
    }

    /// The domain in Unicode (U-labels), or the errors found.
    public static func toUnicode(_ domain: String) throws(Error) -> String {
        let (labels, errors) = process(domain)
        if !errors.isEmpty { throw Error(codes: errors) }
        return labels.map { String(String.UnicodeScalarView($0)) }.joined(separator: ".")
    }

    /// The domain in ASCII (A-labels), checked for DNS lengths.
    public static func toASCII(_ domain: String, verifyDnsLength: Bool = true) throws(Error) -> String {
        let (labels, processingErrors) = process(domain)
        var errors = processingErrors
        var ascii: [String] = []
        for label in labels {
            if label.allSatisfy(\.isASCII) {
                ascii.append(String(String.UnicodeScalarView(label)))
            } else {
                do {
                    ascii.append("xn--" + (try Punycode.encode(String(String.UnicodeScalarView(label)))))
                } catch {
                    errors.append("A3")
                    ascii.append("")
                }
            }
        }
        if verifyDnsLength {
            var checked = ascii
            if checked.count > 1 && checked.last == "" { checked.removeLast() }  // The root label.
            let total = checked.joined(separator: ".").utf8.count
            if total == 0 || total > 253 { errors.append("A4_1") }
            if checked.contains(where: { $0.isEmpty || $0.utf8.count > 63 }) { errors.append("A4_2") }
        }
        if !errors.isEmpty { throw Error(codes: errors) }
        return ascii.joined(separator: ".")
    }

    /// Steps 1–4 of UTS #46 §4: map, normalise, split, convert and validate.
    static func process(_ domain: String) -> (labels: [[Unicode.Scalar]], errors: [String]) {
        var errors: [String] = []
        var mapped = String.UnicodeScalarView()
        for scalar in domain.unicodeScalars {
            let (status, mapping) = UnicodeData.status(scalar)
            switch status {
            case .valid, .deviation: mapped.append(scalar)
            case .mapped: mapped.append(contentsOf: mapping)
            case .ignored: break
            case .disallowed, .disallowedSTD3Valid, .disallowedSTD3Mapped:
                errors.append("P1")
                mapped.append(scalar)
            }
        }
        let normalized = String(mapped).precomposedStringWithCanonicalMapping
        var labels: [[Unicode.Scalar]] = []
        var fromPunycode: [Bool] = []
        for rawLabel in normalized.unicodeScalars.split(separator: ".", omittingEmptySubsequences: false) {
            var label = Array(rawLabel)
            var decoded = false
            if label.count >= 4, String(String.UnicodeScalarView(label.prefix(4))).lowercased() == "xn--" {
                if !label.allSatisfy(\.isASCII) {
                    errors.append("P4")
                } else {
                    do {
                        let text = try Punycode.decode(String(String.UnicodeScalarView(label.dropFirst(4))))
                        label = Array(text.unicodeScalars)
                        decoded = true
                        if label.isEmpty || label.allSatisfy(\.isASCII) { errors.append("P4") }
                    } catch {
                        errors.append("P4")
                    }
                }
            }
            labels.append(label)
            fromPunycode.append(decoded)
        }
        for (label, decoded) in zip(labels, fromPunycode) {
            errors += validate(label, decoded: decoded)
        }
        // An empty label, other than the root's after a final dot, is an
        // error (IdnaTestV2's X4_2); so is an empty domain.
        if labels.dropLast().contains(where: \.isEmpty) || labels.allSatisfy(\.isEmpty) {
            errors.append("X4_2")
        }
        // CheckBidi applies when any label is right-to-left (a "Bidi domain name").
        if labels.contains(where: { BidiRule.hasRTL($0) }) {
            for label in labels where !label.isEmpty && !BidiRule.satisfied(label) {
                errors.append("B1")
            }
        }
        return (labels, errors)
    }

    /// UTS #46 §4.1 Validity Criteria.
    static func validate(_ label: [Unicode.Scalar], decoded: Bool) -> [String] {
        guard !label.isEmpty else { return [] }
        var errors: [String] = []
        let text = String(String.UnicodeScalarView(label))
        if decoded && text.precomposedStringWithCanonicalMapping.unicodeScalars.elementsEqual(label) == false {
            errors.append("V1")
        }
        if label.count >= 4 && label[2] == "-" && label[3] == "-" { errors.append("V2") }
        if label.first == "-" || label.last == "-" { errors.append("V3") }
        if label.contains(".") { errors.append("V4") }
        if let first = label.first,
            [.nonspacingMark, .spacingMark, .enclosingMark].contains(first.properties.generalCategory)
        {
            errors.append("V5")
        }
        for scalar in label {
            let (status, _) = UnicodeData.status(scalar)
            // Nontransitional: deviations are valid.
            if status != .valid && status != .deviation {
                errors.append("V6")
                break
            }
        }
        for index in label.indices where !ContextJ.allowed(label, at: index) {
            errors.append("C1")
            break
        }
        return errors
    }
}
