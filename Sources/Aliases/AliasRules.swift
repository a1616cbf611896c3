import Normalization

/// The two address-cleaning rules from the config: characters that start a
/// suffix (`user+tag`) and characters that do not count (`u.ser`).
public struct AliasRules: Sendable, Equatable {
    public var suffixSeparators: String
    public var dropCharacters: String

    public init(suffixSeparators: String = "+", dropCharacters: String = ".") {
        self.suffixSeparators = suffixSeparators
        self.dropCharacters = dropCharacters
    }

    /// Removes drop characters before the first suffix separator only, then
    /// normalises the user; the suffix stays as it is. This is the form
    /// aliases keys are stored in, so lookups use it too.
    public func removeDropCharacters(_ address: String) -> String {
        let (user, domain) = Address.split(address)
        let separator = user.firstIndex { suffixSeparators.contains($0) } ?? user.endIndex
        let head = user[..<separator].filter { !dropCharacters.contains($0) }
        return Self.normalizedUser(head + user[separator...]) + "@" + domain
    }

    /// Cuts the user at the first suffix separator, removes every drop
    /// character, and normalises: `Jo.e+x@d` becomes `joe@d`.
    public func removeDropsAndSuffix(_ address: String) -> String {
        let (user, domain) = Address.split(address)
        let head = user.prefix { !suffixSeparators.contains($0) }
        return Self.normalizedUser(head.filter { !dropCharacters.contains($0) }) + "@" + domain
    }

    /// chasquid keeps a user that fails normalisation as it is.
    static func normalizedUser(_ user: String) -> String {
        (try? Normalize.user(user)) ?? user
    }
}
