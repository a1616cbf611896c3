import Normalization

/// Why an address could not be resolved. Any of these fails the whole
/// resolution (COMPAT.md §9.2).
public enum ResolveError: Error, CustomStringConvertible, Sendable, Equatable {
    case recursionLimitExceeded
    case hookFailed(String)
    case userCheckFailed(String)

    public var description: String {
        switch self {
        case .recursionLimitExceeded: "recursion limit exceeded"
        case .hookFailed(let reason): reason
        case .userCheckFailed(let reason): reason
        }
    }
}

/// Resolves addresses through the aliases of the local domains, recursively,
/// to the final recipients (COMPAT.md §9.2).
///
/// A value: it holds one consistent snapshot of the aliases, and the two
/// things it asks the outside world are closures, so it can be tested alone.
public struct Resolver: Sendable {
    /// Extra recipients for an address, from `hooks/alias-resolve`, or nil
    /// when no hook is installed. Errors fail the lookup.
    public typealias Hook = @Sendable (_ address: String) async throws -> [Recipient]
    /// Whether `user` exists at `domain` (users database, then Dovecot).
    public typealias UserExists = @Sendable (_ user: String, _ domain: String) async throws -> Bool

    /// At depth 10 resolution fails, so at most nine chained expansions succeed.
    public static let recursionLimit = 10

    public var rules: AliasRules
    public var localDomains: Set<String>
    public var aliases: [String: [Recipient]]
    public var hook: Hook?
    public var userExists: UserExists

    public init(
        rules: AliasRules,
        localDomains: Set<String>,
        aliases: [String: [Recipient]],
        hook: Hook? = nil,
        userExists: @escaping UserExists
    ) {
        self.rules = rules
        self.localDomains = localDomains
        self.aliases = aliases
        self.hook = hook
        self.userExists = userExists
    }

    /// The final recipients for `address`.
    public func resolve(_ address: String) async throws(ResolveError) -> [Recipient] {
        try await resolve(address, depth: 0)
    }

    /// Whether the aliases (not the users database) know `address`: an exact
    /// lookup, a cleaned one, or the domain's catch-all. A failing hook counts
    /// as no result. For local addresses only.
    public func aliasExists(_ address: String) async -> Bool {
        if let found = try? await lookup(address), !found.isEmpty { return true }
        let cleaned = rules.removeDropsAndSuffix(address)
        if let found = try? await lookup(cleaned), !found.isEmpty { return true }
        if let found = try? await lookup("*@" + Address.domain(of: cleaned)), !found.isEmpty { return true }
        return false
    }

    /// RCPT-time existence (COMPAT.md §9.2, last paragraph): the aliases, or
    /// failing them the cleaned user in the users database.
    public func exists(_ address: String) async throws(ResolveError) -> Bool {
        if await aliasExists(address) { return true }
        let (user, domain) = Address.split(rules.removeDropsAndSuffix(address))
        do {
            return try await userExists(user, domain)
        } catch {
            throw .userCheckFailed("\(error)")
        }
    }

    private func lookup(_ address: String) async throws(ResolveError) -> [Recipient] {
        // Keys were stored with drop characters removed before any suffix.
        var found = aliases[rules.removeDropCharacters(address)] ?? []
        if let hook {
            do {
                // The hook sees the address as it came, for the most freedom.
                found += try await hook(address)
            } catch {
                throw .hookFailed("\(error)")
            }
        }
        return found
    }

    private func resolve(_ address: String, depth: Int) async throws(ResolveError) -> [Recipient] {
        if depth >= Self.recursionLimit { throw .recursionLimitExceeded }
        let (user, domain) = Address.split(address)
        guard localDomains.contains(domain) else { return [Recipient(address)] }

        // An exact match first, so aliases with suffixes in them win.
        var found = try await lookup(address)
        let cleaned = rules.removeDropsAndSuffix(address)
        if found.isEmpty {
            found = try await lookup(cleaned)
        }
        if found.isEmpty {
            // chasquid 1.18 checks the uncleaned user here, so `user+tag` of a
            // real user went to the catch-all; we check the cleaned one
            // (COMPAT.md §22.6).
            let exists: Bool
            do {
                exists = try await userExists(Address.user(of: cleaned), domain)
            } catch {
                throw .userCheckFailed("\(error)")
            }
            if exists { return [Recipient(cleaned)] }
            found = try await lookup("*@" + domain)
            // No catch-all either: return the address, and let delivery report
            // the missing user, so one bad entry does not fail the others.
            if found.isEmpty { return [Recipient(cleaned)] }
        }

        var result: [Recipient] = []
        for var recipient in found {
            if recipient.kind == .pipe {
                result.append(recipient)
                continue
            }
            // "*: *@other" keeps the user as it was written at this depth.
            if Address.user(of: recipient.address) == "*" {
                recipient.address = user + "@" + Address.domain(of: recipient.address)
            }
            if recipient.kind == .forward {
                result.append(recipient)
                continue
            }
            result += try await resolve(recipient.address, depth: depth + 1)
        }
        return result
    }
}
