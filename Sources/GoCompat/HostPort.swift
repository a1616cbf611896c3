/// A `host:port` endpoint as Go's `net.SplitHostPort` reads one, with the
/// port optional: `host`, `host:port`, `[v6]`, `[v6]:port` and `:port`
/// (empty host). An IPv6 address without brackets has no port.
///
/// The one parser for the daemon's endpoints: listening addresses, the test
/// DNS server, and `via` hosts of forwarding aliases.
public struct HostPort: Equatable, Sendable {
    public var host: String
    public var port: Int?

    public init(host: String, port: Int?) {
        self.host = host
        self.port = port
    }

    /// nil when the text is not an endpoint: an unclosed bracket, something
    /// other than `:port` after one, or a port outside 0…65535.
    public init?(_ text: String) {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.isEmpty {
                port = nil
            } else {
                guard rest.hasPrefix(":"), let number = Self.port(rest.dropFirst()) else { return nil }
                port = number
            }
            return
        }
        guard let colon = text.firstIndex(of: ":") else {
            host = text
            port = nil
            return
        }
        if text[text.index(after: colon)...].contains(":") {
            // Two colons or more: an IPv6 address, which needs brackets for a port.
            host = text
            port = nil
            return
        }
        guard let number = Self.port(text[text.index(after: colon)...]) else { return nil }
        host = String(text[..<colon])
        port = number
    }

    private static func port(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.allSatisfy(\.isASCII), text.allSatisfy(\.isNumber), let number = Int(text),
            (0...65535).contains(number)
        else { return nil }
        return number
    }
}
