/// Go's `time.ParseDuration` format, used by `give_up_send_after` and in logs:
/// an optional sign, then one or more `<decimal><unit>` groups, units
/// `ns us µs ms s m h` ("1h30m", "20h", "1.5s"). A bare "0" is allowed.
public enum GoDuration {
    public struct Error: Swift.Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
    }

    private static let unitNanoseconds: [(String, Double)] = [
        ("ns", 1), ("us", 1e3), ("µs", 1e3), ("μs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9),
    ]

    /// Parses `text`, returning nanoseconds.
    public static func parse(_ text: String) throws(Error) -> Int64 {
        var rest = Substring(text)
        var negative = false
        if let first = rest.first, first == "-" || first == "+" {
            negative = first == "-"
            rest = rest.dropFirst()
        }
        if rest == "0" { return 0 }
        guard !rest.isEmpty else { throw Error(description: "invalid duration \"\(text)\"") }
        var total = 0.0
        while !rest.isEmpty {
            let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            guard !number.isEmpty, number != ".", number.filter({ $0 == "." }).count <= 1,
                let value = Double(number.hasPrefix(".") ? "0" + number : number)
            else { throw Error(description: "invalid duration \"\(text)\"") }
            rest = rest.dropFirst(number.count)
            let unitText = rest.prefix { !($0.isASCII && ($0.isNumber || $0 == ".")) }
            guard !unitText.isEmpty else { throw Error(description: "missing unit in duration \"\(text)\"") }
            guard let unit = unitNanoseconds.first(where: { $0.0 == unitText }) else {
                throw Error(description: "unknown unit \"\(unitText)\" in duration \"\(text)\"")
            }
            rest = rest.dropFirst(unitText.count)
            total += value * unit.1
            guard total <= Double(Int64.max) else { throw Error(description: "invalid duration \"\(text)\"") }
        }
        return negative ? -Int64(total) : Int64(total)
    }

    /// Formats nanoseconds the way Go's `Duration.String` does: "1h2m3.5s", "1.5ms", "0s".
    public static func format(nanoseconds: Int64) -> String {
        if nanoseconds == 0 { return "0s" }
        let sign = nanoseconds < 0 ? "-" : ""
        let ns = nanoseconds.magnitude
        if ns < 1_000_000_000 {
            let (unit, scale): (String, UInt64) = ns < 1_000 ? ("ns", 1) : (ns < 1_000_000 ? ("µs", 1_000) : ("ms", 1_000_000))
            return sign + fraction(ns, scale: scale) + unit
        }
        let hours = ns / 3_600_000_000_000
        let minutes = (ns / 60_000_000_000) % 60
        let seconds = fraction(ns % 60_000_000_000, scale: 1_000_000_000) + "s"
        if hours > 0 { return "\(sign)\(hours)h\(minutes)m\(seconds)" }
        if minutes > 0 { return "\(sign)\(minutes)m\(seconds)" }
        return sign + seconds
    }

    private static func fraction(_ value: UInt64, scale: UInt64) -> String {
        let whole = value / scale
        let frac = value % scale
        guard frac > 0 else { return "\(whole)" }
        var digits = String(frac)
        let width = String(scale).count - 1
        digits = String(repeating: "0", count: width - digits.count) + digits
        while digits.hasSuffix("0") { digits.removeLast() }
        return "\(whole).\(digits)"
    }
}
