import Foundation
import IDNA

/// The normalisation rules chasquid applies to users, domains and addresses
/// (COMPAT.md §8). Every module that compares names goes through here, so two
/// spellings of one name always meet, and no two different names ever do.
public enum Normalize {
    public struct Error: Swift.Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// A local part, by PRECIS UsernameCaseMapped (RFC 8265 §3.3): width
    /// mapping, lower case, NFC, then the IdentifierClass check. The empty
    /// string is accepted, as chasquid does.
    public static func user(_ user: String) throws(Error) -> String {
        try Precis.usernameCaseMapped(user)
    }

    /// A domain: lenient Punycode to Unicode (no UTS #46 mapping), then NFC,
    /// then lower case. Bad Punycode is an error.
    public static func domain(_ domain: String) throws(Error) -> String {
        // Fast path: ASCII without Punycode labels only needs lower case.
        if domain.utf8.allSatisfy({ $0 < 0x80 }) && !domain.lowercased().contains("xn--") {
            return String(decoding: domain.utf8.map { (0x41...0x5A).contains($0) ? $0 + 0x20 : $0 }, as: UTF8.self)
        }
        var labels: [String] = []
        for label in domain.split(scalar: ".", omittingEmptySubsequences: false) {
            if label.utf8.count >= 4 && String(decoding: label.utf8.prefix(4), as: UTF8.self).lowercased() == "xn--" {
                do {
                    labels.append(try Punycode.decode(String(label.unicodeScalars.dropFirst(4))))
                } catch {
                    throw Error("idna: invalid label \"\(label)\"")
                }
            } else {
                labels.append(String(label))
            }
        }
        return labels.joined(separator: ".").precomposedStringWithCanonicalMapping.lowercased()
    }

    /// `user@domain`, each side normalised. Split at the first `@`; a missing
    /// domain stays missing.
    public static func address(_ address: String) throws(Error) -> String {
        let (user, domain) = Address.split(address)
        let normalizedUser = try Normalize.user(user)
        if domain.isEmpty { return normalizedUser }
        return normalizedUser + "@" + (try Normalize.domain(domain))
    }

    /// The domain part only; `<>` passes through.
    public static func domainToUnicode(_ address: String) throws(Error) -> String {
        if address == "<>" { return address }
        let (user, domain) = Address.split(address)
        if domain.isEmpty { return address }
        return user + "@" + (try Normalize.domain(domain))
    }
}

/// Splitting addresses, as chasquid's `envelope` package does.
public enum Address {
    /// Splits at the first `@` scalar. Without one, the domain is empty.
    public static func split(_ address: String) -> (user: String, domain: String) {
        guard let at = address.firstIndex(ofScalar: "@") else { return (address, "") }
        return (String(address[..<at]), String(address.suffix(afterScalarAt: at)))
    }

    public static func user(of address: String) -> String { split(address).user }
    public static func domain(of address: String) -> String { split(address).domain }
}
