import DNS

/// The values the macro letters stand for during one check (RFC 7208 §7.3).
struct MacroValues: Sendable {
    /// s: <sender>, with "postmaster" for a missing local part.
    var sender: String
    /// l: the local part of <sender>.
    var localPart: String
    /// o: the domain of <sender>.
    var senderDomain: String
    /// d: <domain>, the domain of the record being evaluated.
    var domain: String
    /// i, c, v: <ip>, already an IPv4 address if it was IPv4-mapped.
    var ip: IPAddress
    /// h: the HELO/EHLO domain.
    var helo: String
    /// p: the validated domain name of <ip>, or "unknown". The evaluator
    /// fills it in before expanding a string that uses it.
    var validatedName: String = "unknown"
    /// r: the host doing the check.
    var receivingHost: String
    /// t: seconds since the epoch.
    var timestamp: Int
}

extension MacroString {
    /// The text with its macros expanded (§7.3). Pure: the values, `p`
    /// included, are the caller's.
    func expand(_ values: MacroValues) -> String {
        var out: [UInt8] = []
        for piece in pieces {
            switch piece {
            case .literal(let bytes): out += bytes
            case .percent: out.append(ASCII.percent)
            case .space: out.append(ASCII.space)
            case .encodedSpace: out += Array("%20".utf8)
            case .macro(let macro): out += macro.expand(values)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension Macro {
    /// One macro: the letter's value split on the delimiters, reversed if
    /// asked, cut to the right-hand parts asked for, joined with "." and,
    /// for an upper-case letter, URL-escaped.
    func expand(_ values: MacroValues) -> [UInt8] {
        let value = Array(Self.value(of: letter, in: values).utf8)
        var parts = value.split(omittingEmptySubsequences: false) { delimiters.contains($0) }
        if reverse { parts.reverse() }
        if let rightParts, rightParts < parts.count {
            parts.removeFirst(parts.count - rightParts)
        }
        let joined = Array(parts.joined(separator: [ASCII.dot]))
        return urlEscape ? Self.urlEscaped(joined) : joined
    }

    static func value(of letter: MacroLetter, in values: MacroValues) -> String {
        switch letter {
        case .s: values.sender
        case .l: values.localPart
        case .o: values.senderDomain
        case .d: values.domain
        case .i: dotFormat(values.ip)
        case .p: values.validatedName
        case .v: values.ip.isIPv4 ? "in-addr" : "ip6"
        case .h: values.helo
        case .c: values.ip.description
        case .r: values.receivingHost
        case .t: String(values.timestamp)
        }
    }

    /// `i`: dotted quad for IPv4; for IPv6 the 32 nibbles, dot-separated,
    /// most significant first (§7.3), in upper case as pyspf writes them
    /// (the conformance suite's `v-macro-ip6` expects that; DNS does not
    /// care about case).
    static func dotFormat(_ ip: IPAddress) -> String {
        if ip.isIPv4 { return ip.description }
        return ip.nibbles.map { String($0).uppercased() }.joined(separator: ".")
    }

    /// Percent-encodes every byte outside RFC 3986's unreserved set
    /// (ALPHA / DIGIT / "-" / "." / "_" / "~"), as §7.3 asks of upper-case
    /// macro letters.
    static func urlEscaped(_ bytes: [UInt8]) -> [UInt8] {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            if ASCII.isAlphanumeric(byte) || byte == ASCII.dash || byte == ASCII.dot || byte == ASCII.underscore
                || byte == 0x7e
            {
                out.append(byte)
            } else {
                out += [ASCII.percent, hex[Int(byte >> 4)], hex[Int(byte & 0xf)]]
            }
        }
        return out
    }
}
