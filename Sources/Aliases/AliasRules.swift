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
        let separator = user.unicodeScalars.firstIndex(where: isSuffixSeparator) ?? user.endIndex
        return Self.normalizedUser(withoutDrops(user[..<separator]) + user[separator...]) + "@" + domain
    }

    /// Cuts the user at the first suffix separator, removes every drop
    /// character, and normalises: `Jo.e+x@d` becomes `joe@d`.
    public func removeDropsAndSuffix(_ address: String) -> String {
        let (user, domain) = Address.split(address)
        let separator = user.unicodeScalars.firstIndex(where: isSuffixSeparator) ?? user.endIndex
        return Self.normalizedUser(withoutDrops(user[..<separator])) + "@" + domain
    }

    // Per Unicode scalar, as chasquid's per-rune rules: a `Character` may
    // fuse a separator or a drop character with its neighbour.
    private func isSuffixSeparator(_ scalar: Unicode.Scalar) -> Bool {
        suffixSeparators.unicodeScalars.contains(scalar)
    }

    private func withoutDrops(_ text: Substring) -> String {
        let drops = dropCharacters.unicodeScalars
        // Most addresses have none: no scalar-by-scalar rebuild for them.
        guard text.unicodeScalars.contains(where: { drops.contains($0) }) else { return String(text) }
        return String(text.unicodeScalars.filter { !drops.contains($0) })
    }

    /// chasquid keeps a user that fails normalisation as it is.
    static func normalizedUser(_ user: String) -> String {
        (try? Normalize.user(user)) ?? user
    }
}
