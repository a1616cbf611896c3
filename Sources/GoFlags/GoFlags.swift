/// Command-line flags in Go's `flag` package syntax, which chasquid's
/// programs use and admins' unit files depend on: `-name` and `--name` are
/// the same; values as `-name=v` or `-name v`; booleans as `-name` or
/// `-name=true`. Parsing stops at the first non-flag argument or at `--`.
public struct GoFlags: Sendable {
    public enum Kind: Sendable, Equatable {
        case bool, string, int
    }

    public struct Definition: Sendable {
        public var name: String
        public var kind: Kind
        public var defaultValue: String
        public var usage: String

        public init(_ name: String, _ kind: Kind, _ defaultValue: String, _ usage: String) {
            self.name = name
            self.kind = kind
            self.defaultValue = defaultValue
            self.usage = usage
        }
    }

    public struct Failure: Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
    }

    public let definitions: [Definition]
    public private(set) var values: [String: String] = [:]
    /// Flags given on the command line, in order.
    public private(set) var setNames: [String] = []
    public private(set) var arguments: [String] = []

    public init(_ definitions: [Definition]) {
        self.definitions = definitions
        for d in definitions { values[d.name] = d.defaultValue }
    }

    public mutating func parse(_ args: [String]) throws(Failure) {
        var index = 0
        while index < args.count {
            let arg = args[index]
            guard arg.hasPrefix("-"), arg != "-" else { break }
            index += 1
            if arg == "--" { break }
            var body = arg.dropFirst()
            if body.hasPrefix("-") { body = body.dropFirst() }
            guard !body.isEmpty, !body.hasPrefix("-"), !body.hasPrefix("=") else {
                throw Failure(description: "bad flag syntax: \(arg)")
            }
            var name = String(body)
            var value: String?
            if let equals = body.firstIndex(of: "=") {
                name = String(body[..<equals])
                value = String(body[body.index(after: equals)...])
            }
            guard let definition = definitions.first(where: { $0.name == name }) else {
                throw Failure(description: "flag provided but not defined: -\(name)")
            }
            switch definition.kind {
            case .bool:
                let v = value ?? "true"
                guard let parsed = Self.parseBool(v) else {
                    throw Failure(description: "invalid boolean value \"\(v)\" for -\(name)")
                }
                values[name] = parsed ? "true" : "false"
            case .string, .int:
                if value == nil {
                    guard index < args.count else { throw Failure(description: "flag needs an argument: -\(name)") }
                    value = args[index]
                    index += 1
                }
                if definition.kind == .int && Int(value!) == nil {
                    throw Failure(description: "invalid value \"\(value!)\" for flag -\(name): parse error")
                }
                values[name] = value!
            }
            setNames.append(name)
        }
        arguments = Array(args[index...])
    }

    static func parseBool(_ s: String) -> Bool? {
        switch s {
        case "1", "t", "T", "true", "TRUE", "True": true
        case "0", "f", "F", "false", "FALSE", "False": false
        default: nil
        }
    }

    public func string(_ name: String) -> String { values[name] ?? "" }
    public func bool(_ name: String) -> Bool { values[name] == "true" }
    public func int(_ name: String) -> Int { Int(values[name] ?? "") ?? 0 }
    public func isSet(_ name: String) -> Bool { setNames.contains(name) }

    /// chasquid's `/debug/flags`: `-name=value` for the flags that were set,
    /// a blank line, then the rest; each group sorted by name, as Go's
    /// `flag.Visit` goes.
    public var debugText: String {
        let set = Set(setNames)
        let names = definitions.map(\.name).sorted()
        let line = { (name: String) in "-\(name)=\(values[name] ?? "")\n" }
        return names.filter(set.contains).map(line).joined() + "\n"
            + names.filter { !set.contains($0) }.map(line).joined()
    }

    /// Go's usage text: `  -name type` then the indented description.
    public var usage: String {
        definitions.sorted { $0.name < $1.name }.map { d in
            let type = d.kind == .bool ? "" : (d.kind == .int ? " int" : " string")
            var text = "  -\(d.name)\(type)\n    \t\(d.usage)"
            if !d.defaultValue.isEmpty && d.defaultValue != "false" && d.defaultValue != "0" {
                text += d.kind == .string ? " (default \"\(d.defaultValue)\")" : " (default \(d.defaultValue))"
            }
            return text
        }.joined(separator: "\n")
    }
}
