/// An IPv4 or IPv6 address as its bytes (4 or 16), with the parsing,
/// printing and prefix matching that DNS, SPF and the server need.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6, network order.
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses dotted-quad IPv4 or RFC 4291 IPv6 text (with `::` and an
    /// embedded IPv4 tail). Like Go's net.ParseIP, IPv4 parts may not have
    /// leading zeros. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) stays
    /// IPv6; `unmapped` gives its IPv4 form.
    public init?(_ text: some StringProtocol) {
        if let v4 = Self.parseIPv4(Substring(text)) {
            self.bytes = v4
        } else if let v6 = Self.parseIPv6(Substring(text)) {
            self.bytes = v6
        } else {
            return nil
        }
    }

    public var isIPv4: Bool { bytes.count == 4 }

    /// An IPv4-mapped IPv6 address as IPv4; anything else unchanged. SPF
    /// treats the mapped form as the IPv4 client it is (RFC 7208 §5).
    public var unmapped: IPAddress {
        if bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
            return IPAddress(uncheckedBytes: Array(bytes[12..<16]))
        }
        return self
    }

    private init(uncheckedBytes: [UInt8]) { self.bytes = uncheckedBytes }

    /// Whether the first `prefixLength` bits equal those of `network`. The
    /// families must match.
    public func isIn(_ network: IPAddress, prefixLength: Int) -> Bool {
        guard bytes.count == network.bytes.count, prefixLength >= 0, prefixLength <= bytes.count * 8 else {
            return false
        }
        var remaining = prefixLength
        for index in bytes.indices where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xff << (8 - bits))
            if bytes[index] & mask != network.bytes[index] & mask { return false }
            remaining -= bits
        }
        return true
    }

    /// The name for a PTR query: `d.c.b.a.in-addr.arpa` or the nibble form
    /// under `ip6.arpa` (RFC 1035 §3.5, RFC 3596 §2.5).
    public var reverseName: String {
        if isIPv4 {
            return bytes.reversed().map(String.init).joined(separator: ".") + ".in-addr.arpa"
        }
        let nibbles = bytes.reversed().flatMap { [Self.hexDigit($0 & 0xf), Self.hexDigit($0 >> 4)] }
        return nibbles.map(String.init).joined(separator: ".") + ".ip6.arpa"
    }

    /// Dotted quad, or RFC 5952 text for IPv6 (lower case, the longest run
    /// of two or more zero groups as `::`, IPv4-mapped with a dotted tail).
    public var description: String {
        if isIPv4 { return bytes.map(String.init).joined(separator: ".") }
        let mapped = unmapped
        if mapped.isIPv4 { return "::ffff:" + mapped.description }
        let groups = (0..<8).map { UInt16(bytes[2 * $0]) << 8 | UInt16(bytes[2 * $0 + 1]) }
        var bestStart = -1
        var bestLength = 0
        var index = 0
        while index < 8 {
            guard groups[index] == 0 else {
                index += 1
                continue
            }
            let start = index
            while index < 8, groups[index] == 0 { index += 1 }
            if index - start > bestLength {
                bestStart = start
                bestLength = index - start
            }
        }
        func hex(_ range: Range<Int>) -> String {
            groups[range].map { String($0, radix: 16) }.joined(separator: ":")
        }
        guard bestLength >= 2 else { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }

    /// Each byte as two lower-case hex digits, for SPF's `%{i}` on IPv6:
    /// the dot-separated nibbles in forward order.
    public var nibbles: [Character] {
        bytes.flatMap { [Self.hexDigit($0 >> 4), Self.hexDigit($0 & 0xf)] }
    }

    private static func hexDigit(_ value: UInt8) -> Character {
        Character(Unicode.Scalar(value < 10 ? 48 + value : 87 + value))
    }

    private static func parseIPv4(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var result: [UInt8] = []
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            if part.count > 1 && part.first == "0" { return nil }
            guard let value = UInt8(part) else { return nil }
            result.append(value)
        }
        return result
    }

    private static func parseIPv6(_ text: Substring) -> [UInt8]? {
        guard text.contains(":") else { return nil }
        var head: [UInt16] = []
        var tail: [UInt16] = []
        var sawDoubleColon = false
        let pieces: [Substring]
        if let range = text.range(of: "::") {
            sawDoubleColon = true
            let before = text[text.startIndex..<range.lowerBound]
            let after = text[range.upperBound...]
            if after.contains("::") { return nil }
            guard let headGroups = parseGroups(before, allowIPv4Tail: false) else { return nil }
            guard let tailGroups = parseGroups(after, allowIPv4Tail: true) else { return nil }
            head = headGroups
            tail = tailGroups
            pieces = []
        } else {
            pieces = [text]
        }
        if !sawDoubleColon {
            guard let groups = parseGroups(pieces[0], allowIPv4Tail: true), groups.count == 8 else { return nil }
            head = groups
        } else if head.count + tail.count > 7 {
            return nil
        }
        let groups = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        return groups.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
    }

    /// Colon-separated hex groups; the last may be a dotted IPv4 (two groups).
    private static func parseGroups(_ text: Substring, allowIPv4Tail: Bool) -> [UInt16]? {
        if text.isEmpty { return [] }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        var groups: [UInt16] = []
        for (index, part) in parts.enumerated() {
            if index == parts.count - 1, allowIPv4Tail, part.contains(".") {
                guard let v4 = parseIPv4(part) else { return nil }
                groups.append(UInt16(v4[0]) << 8 | UInt16(v4[1]))
                groups.append(UInt16(v4[2]) << 8 | UInt16(v4[3]))
                continue
            }
            guard !part.isEmpty, part.count <= 4, let value = UInt16(part, radix: 16),
                part.allSatisfy(\.isHexDigit)
            else { return nil }
            groups.append(value)
        }
        return groups
    }
}
