import GoCompat

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
            .map { GoQuery.escape($0.element.key) + "=" + GoQuery.escape($0.element.value) }
            .joined(separator: "&")
    }

    public struct DecodingError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    private static func unescape(_ text: Substring) throws(DecodingError) -> String {
        do { return try GoQuery.unescape(text) } catch { throw DecodingError(description: error.description) }
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
}
