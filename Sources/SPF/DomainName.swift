/// Domain-name rules SPF applies: the `toplabel` of the grammar (RFC 7208
/// §7.1), the checks on check_host()'s <domain> (§4.3), and the preparation
/// of an expanded <target-name> for a query (§4.8, §7.3).
enum DomainName {
    static let maxNameLength = 253
    static let maxLabelLength = 63

    /// toplabel = ( *alphanum ALPHA *alphanum ) /
    ///            ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
    /// alphanum = ALPHA / DIGIT
    ///
    /// That is: letters, digits and dashes; starts and ends with a letter or
    /// digit; not all digits unless it has a dash.
    static func isTopLabel(_ label: some BidirectionalCollection<UInt8>) -> Bool {
        guard let first = label.first, let last = label.last else { return false }
        guard ASCII.isAlphanumeric(first), ASCII.isAlphanumeric(last) else { return false }
        var hasDash = false
        var hasAlpha = false
        for byte in label {
            if byte == ASCII.dash {
                hasDash = true
            } else if ASCII.isAlpha(byte) {
                hasAlpha = true
            } else if !ASCII.isDigit(byte) {
                return false
            }
        }
        return hasAlpha || hasDash
    }

    /// The <domain> check_host() starts from, without one trailing dot, or
    /// nil when it is malformed and the result must be `none` (§4.3): an
    /// empty label, a label over 63 octets, a name over 253, a last label
    /// that is not a toplabel (a domain literal, an IP address), or
    /// anything but visible ASCII.
    ///
    /// A single label is not refused here, although §4.3 allows answering
    /// `none` without a query: like chasquid's library (whose tests use
    /// such names) it is looked up, and as the stub resolver applies no
    /// search list the answer is NXDOMAIN, hence `none`, unless the name
    /// really publishes a record.
    static func checkHostDomain(_ domain: String) -> String? {
        var bytes = Array(domain.utf8)
        if bytes.last == ASCII.dot { bytes.removeLast() }
        guard !bytes.isEmpty, bytes.count <= maxNameLength else { return nil }
        guard bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else { return nil }
        let labels = bytes.split(separator: ASCII.dot, omittingEmptySubsequences: false)
        for label in labels where label.isEmpty || label.count > maxLabelLength {
            return nil
        }
        guard let last = labels.last, isTopLabel(last) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// An expanded domain-spec made ready for a query (RFC 7208 §7.3): one
    /// trailing dot dropped; when longer than 253 octets, whole labels
    /// removed from the left until it fits. Nil when no query can be made
    /// of it (an empty label, a label over 63 octets): the caller treats the
    /// name as one that does not exist.
    static func queryName(_ expanded: String) -> String? {
        var bytes = Array(expanded.utf8)[...]
        if bytes.last == ASCII.dot { bytes = bytes.dropLast() }
        while bytes.count > maxNameLength {
            guard let dot = bytes.firstIndex(of: ASCII.dot) else { return nil }
            bytes = bytes[(dot + 1)...]
        }
        guard !bytes.isEmpty else { return nil }
        for label in bytes.split(separator: ASCII.dot, omittingEmptySubsequences: false)
        where label.isEmpty || label.count > maxLabelLength {
            return nil
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Case-insensitive (ASCII) equality of two names.
    static func equal(_ a: String, _ b: String) -> Bool {
        ASCII.lowercased(a) == ASCII.lowercased(b)
    }

    /// Whether `name` is `parent` or a name under it, ignoring ASCII case
    /// and one trailing dot on either (§5.5).
    static func isSameOrSubdomain(_ name: String, of parent: String) -> Bool {
        let child = ASCII.lowercased(withoutTrailingDot(name))
        let suffix = ASCII.lowercased(withoutTrailingDot(parent))
        guard !suffix.isEmpty else { return false }
        return child == suffix || child.hasSuffix("." + suffix)
    }

    static func withoutTrailingDot(_ name: String) -> String {
        name.utf8.last == ASCII.dot ? String(name.dropLast()) : name
    }
}

/// The ASCII byte classes the SPF grammar uses (RFC 5234 core rules).
enum ASCII {
    static let space: UInt8 = 0x20
    static let percent: UInt8 = 0x25
    static let dash: UInt8 = 0x2d
    static let dot: UInt8 = 0x2e
    static let slash: UInt8 = 0x2f
    static let colon: UInt8 = 0x3a
    static let equals: UInt8 = 0x3d
    static let underscore: UInt8 = 0x5f
    static let openBrace: UInt8 = 0x7b
    static let closeBrace: UInt8 = 0x7d

    static func isAlpha(_ byte: UInt8) -> Bool { (0x41...0x5a).contains(byte) || (0x61...0x7a).contains(byte) }
    static func isDigit(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) }
    static func isAlphanumeric(_ byte: UInt8) -> Bool { isAlpha(byte) || isDigit(byte) }
    static func isUpper(_ byte: UInt8) -> Bool { (0x41...0x5a).contains(byte) }
    static func lowercased(_ byte: UInt8) -> UInt8 { isUpper(byte) ? byte + 0x20 : byte }

    /// Lower-cases ASCII letters only, leaving every other byte alone.
    static func lowercased(_ text: String) -> String {
        String(decoding: text.utf8.map { lowercased($0) }, as: UTF8.self)
    }

    /// Case-insensitive comparison of `bytes` with a lower-case ASCII word.
    static func equalsLowercase(_ bytes: some Collection<UInt8>, _ word: String) -> Bool {
        bytes.count == word.utf8.count && zip(bytes, word.utf8).allSatisfy { lowercased($0) == $1 }
    }
}
