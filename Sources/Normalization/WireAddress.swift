import IDNA

/// Addresses for servers that do not speak SMTPUTF8 (RFC 6531): the domain
/// goes out as A-labels; a non-ASCII local part cannot be expressed at all.
/// Outgoing delivery calls this when the peer lacks SMTPUTF8.
public enum WireAddress {
    public enum Failure: Error, Equatable, Sendable, CustomStringConvertible {
        /// The local part is not ASCII: a permanent failure (chasquid uses 599).
        case nonASCIILocalPart(String)
        case invalidDomain(String, UTS46.Error)

        public var description: String {
            switch self {
            case .nonASCIILocalPart(let address):
                "local part of \"\(address)\" is not ASCII and the server does not support SMTPUTF8"
            case .invalidDomain(let address, let error): "domain of \"\(address)\" cannot be sent as ASCII: \(error)"
            }
        }
    }

    /// `user@domain` with the domain as A-labels; `<>` passes through.
    public static func ascii(_ address: String) throws(Failure) -> String {
        if address == "<>" || address.isEmpty { return address }
        let (user, domain) = Address.split(address)
        guard user.unicodeScalars.allSatisfy(\.isASCII) else { throw .nonASCIILocalPart(address) }
        if domain.isEmpty { return user }
        do {
            return user + "@" + (try UTS46.toASCII(domain))
        } catch {
            throw .invalidDomain(address, error)
        }
    }

    /// True when the address needs SMTPUTF8 to be sent as it is.
    public static func needsSMTPUTF8(_ address: String) -> Bool {
        !address.unicodeScalars.allSatisfy(\.isASCII)
    }
}
