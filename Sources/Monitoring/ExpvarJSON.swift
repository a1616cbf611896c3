import Instrumentation

/// `/debug/vars` in Go's expvar layout: one `"name": value` per line, sorted
/// by name, maps as `{"key": value, …}` with sorted keys.
public enum ExpvarJSON {
    public enum Extra: Sendable {
        case string(String)
        case strings([String])
        case ints([(String, Int64)])
    }

    public static func render(_ values: [String: ExpvarStore.Value], extra: [String: Extra]) -> String {
        var entries: [(String, String)] = []
        for (name, value) in values {
            let text: String
            switch value {
            case .int(let v): text = String(v)
            case .double(let v): text = format(v)
            case .map(let map):
                text = "{" + map.keys.sorted().map { "\(quote($0)): \(map[$0]!)" }.joined(separator: ", ") + "}"
            }
            entries.append((name, text))
        }
        for (name, value) in extra {
            let text: String
            switch value {
            case .string(let s): text = quote(s)
            case .strings(let list): text = "[" + list.map(quote).joined(separator: ",") + "]"
            case .ints(let pairs): text = "{" + pairs.map { "\(quote($0.0)):\($0.1)" }.joined(separator: ",") + "}"
            }
            entries.append((name, text))
        }
        entries.sort { $0.0 < $1.0 }
        return "{\n" + entries.map { "\(quote($0.0)): \($0.1)" }.joined(separator: ",\n") + "\n}\n"
    }

    /// Go's `strconv.FormatFloat(f, 'g', -1, 64)` for the values we have:
    /// whole numbers without a fraction.
    static func format(_ value: Double) -> String {
        if value.isFinite, value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "<": out += "\\u003c"
            case ">": out += "\\u003e"
            case "&": out += "\\u0026"
            default:
                if scalar.value < 0x20 {
                    out += "\\u00" + String(scalar.value, radix: 16).leftPadded(to: 2)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
