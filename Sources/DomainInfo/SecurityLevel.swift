import ChasquidProto

/// How well a domain's mail was protected on a connection (COMPAT.md §13):
/// `PLAIN < TLS_CLIENT < TLS_INSECURE < TLS_SECURE`. Incoming connections are
/// only ever `plain` or `tlsClient`.
public enum SecurityLevel: Int, Comparable, Sendable, CaseIterable, CustomStringConvertible {
    case plain = 0
    case tlsClient = 1
    case tlsInsecure = 2
    case tlsSecure = 3

    public static func < (a: SecurityLevel, b: SecurityLevel) -> Bool { a.rawValue < b.rawValue }

    /// The protobuf enum name, as chasquid logs it: `PLAIN`, `TLS_CLIENT`,
    /// `TLS_INSECURE`, `TLS_SECURE`.
    public var name: String {
        switch self {
        case .plain: "PLAIN"
        case .tlsClient: "TLS_CLIENT"
        case .tlsInsecure: "TLS_INSECURE"
        case .tlsSecure: "TLS_SECURE"
        }
    }

    public var description: String { name }

    /// The level for a protobuf value; nil for a number outside the enum.
    init?(_ proto: Domaininfo_SecLevel) {
        switch proto {
        case .plain: self = .plain
        case .tlsClient: self = .tlsClient
        case .tlsInsecure: self = .tlsInsecure
        case .tlsSecure: self = .tlsSecure
        case .UNRECOGNIZED: return nil
        }
    }

    var proto: Domaininfo_SecLevel {
        switch self {
        case .plain: .plain
        case .tlsClient: .tlsClient
        case .tlsInsecure: .tlsInsecure
        case .tlsSecure: .tlsSecure
        }
    }
}

/// A domain's stored levels.
public struct DomainLevels: Equatable, Sendable {
    public var incoming: SecurityLevel
    public var outgoing: SecurityLevel

    public init(incoming: SecurityLevel, outgoing: SecurityLevel) {
        self.incoming = incoming
        self.outgoing = outgoing
    }
}
