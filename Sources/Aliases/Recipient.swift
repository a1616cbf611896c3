/// Where an alias sends mail: an address, a command, or an address reached
/// through given servers.
public struct Recipient: Sendable, Hashable, CustomStringConvertible {
    /// The kinds, spelled as chasquid prints them (`aliases-resolve`, local RPC).
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        case email = "(email)"
        case pipe = "(pipe)"
        case forward = "(forward)"
    }

    /// The address, or for `.pipe` the command line.
    public var address: String
    public var kind: Kind
    /// For `.forward`: the servers to send through, in order.
    public var via: [String]

    public init(_ address: String, kind: Kind = .email, via: [String] = []) {
        self.address = address
        self.kind = kind
        self.via = via
    }

    public var description: String {
        kind == .forward ? "\(kind.rawValue) \(address) via \(via.joined(separator: "/"))" : "\(kind.rawValue) \(address)"
    }
}
