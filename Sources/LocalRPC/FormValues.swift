/// `application/x-www-form-urlencoded` values, as Go's `url.Values` encodes
/// them: keys sorted, a key's values in order, `url.QueryEscape` escaping.
/// The local RPC speaks this (COMPAT.md §16).
public struct FormValues: Equatable, Sendable {
    public private(set) var pairs: [(key: String, value: String)] = []

    public init() {}

    public static func == (a: FormValues, b: FormValues) -> Bool {
        a.pairs.elementsEqual(b.pairs) { $0.key == $1.key && $0.value == $1.value }
    }

    public mutating func add(_ key: String, _ value: String) { pairs.append((key, value)) }

    public func values(_ key: String) -> [String] { pairs.filter { $0.key == key }.map(\.value) }

    public func first(_ key: String) -> String? { pairs.first { $0.key == key }?.value }

    /// Keys sorted (stably, so one key's values keep their order).
    public func encoded() -> String {
        pairs.enumerated()
            .sorted { ($0.element.key, $0.offset) < ($1.element.key, $1.offset) }
            .map { Self.escape($0.element.key) + "=" + Self.escape($0.element.value) }
            .joined(separator: "&")
    }

    public struct DecodingError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public static func decode(_ text: String) throws(DecodingError) -> FormValues {
        var values = FormValues()
        for part in text.split(separator: "&", omittingEmptySubsequences: true) {
            let (key, value): (Substring, Substring)
            if let equals = part.firstIndex(of: "=") {
                (key, value) = (part[..<equals], part[part.index(after: equals)...])
            } else {
                (key, value) = (part, "")
            }
            values.add(try unescape(key), try unescape(value))
        }
        return values
    }

    /// Go's `url.QueryEscape`: bytes outside `[A-Za-z0-9-_.~]` become `%XX`
    /// (uppercase), and space becomes `+`.
    public static func escape(_ text: String) -> String {
        var result = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                UInt8(ascii: "~"):
                result.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: " "):
                result += "+"
            default:
                let hex = Array("0123456789ABCDEF".unicodeScalars)
                result += "%"
                result.unicodeScalars.append(hex[Int(byte >> 4)])
                result.unicodeScalars.append(hex[Int(byte & 0xF)])
            }
        }
        return result
    }

    public static func unescape(_ text: some StringProtocol) throws(DecodingError) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"):
                bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    throw DecodingError(description: "invalid URL escape in \"\(text)\"")
                }
                bytes.append(high << 4 | low)
            default:
                bytes.append(byte)
            }
        }
        guard let result = String(validating: bytes, as: UTF8.self) else {
            throw DecodingError(description: "invalid UTF-8 in \"\(text)\"")
        }
        return result
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
