/// chasquid-util's command line (COMPAT.md §17): arguments starting with `-`
/// are options, `name` or `name=value`, matched literally (dashes included);
/// everything else is positional, the first being the subcommand. Options may
/// come anywhere.
public struct Arguments: Equatable, Sendable {
    public var positional: [String] = []
    public var options: [String: String] = [:]

    /// Options that also take their value as the next argument (`-C /etc/x`),
    /// as chasquid 1.0 did (COMPAT.md §22.13).
    static let optionsWithSeparateValue: Set<String> = ["-C", "--config_dir", "--configdir"]

    public init(_ arguments: [String]) {
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("-") else {
                positional.append(argument)
                continue
            }
            if let equals = argument.firstIndex(of: "=") {
                options[String(argument[..<equals])] = String(argument[argument.index(after: equals)...])
            } else if Self.optionsWithSeparateValue.contains(argument), index < arguments.count {
                options[argument] = arguments[index]
                index += 1
            } else {
                options[argument] = ""
            }
        }
    }

    public func has(_ option: String) -> Bool { options[option] != nil }

    public func positional(_ index: Int) -> String? {
        index < positional.count ? positional[index] : nil
    }

    /// The config dir, with chasquid's precedence: `--configdir` (deprecated)
    /// beats `-C`, which beats `--config_dir`.
    public var configDirectory: String {
        options["--configdir"] ?? options["-C"] ?? options["--config_dir"] ?? "/etc/chasquid"
    }
}
