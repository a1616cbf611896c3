import Aliases
import DurableFiles
import Foundation
import Normalization
import Synchronization
import UserDatabase

/// One local domain and what was read for it.
public struct LocalDomain: Sendable {
    /// The normalised name: the one addresses are compared against.
    public var name: String
    /// The directory under `domains/` (the name as it is on disk).
    public var directory: String
    public var users: UserDatabase
    public var aliases: [String: [Recipient]]
}

/// Every local domain, read together: a reader always sees one consistent
/// reading of all files, never a mix of old and new.
public struct DomainSnapshot: Sendable {
    public let domains: [String: LocalDomain]
    /// `localhost` is always local, even without a directory.
    public let names: Set<String>
    /// All aliases of all domains, as one table (keys carry their domain).
    /// Built once per reading: every RCPT and every queued message use it.
    public let allAliases: [String: [Recipient]]

    public init(domains: [String: LocalDomain]) {
        self.domains = domains
        names = Set(domains.keys).union(["localhost"])
        allAliases = domains.values.reduce(into: [:]) { $0.merge($1.aliases) { _, new in new } }
    }

    public func isLocal(_ domain: String) -> Bool { domain == "localhost" || domains[domain] != nil }

    public func userExists(_ user: String, domain: String) -> Bool {
        domains[domain]?.users.exists(user) ?? false
    }

    /// A resolver over this snapshot. `extraUserExists` is consulted when the
    /// users database does not know a user (Dovecot, in the daemon).
    public func resolver(
        rules: AliasRules,
        hook: Resolver.Hook? = nil,
        extraUserExists: Resolver.UserExists? = nil
    ) -> Resolver {
        let snapshot = self
        return Resolver(rules: rules, localDomains: names, aliases: allAliases, hook: hook) { user, domain in
            if snapshot.userExists(user, domain: domain) { return true }
            return try await extraUserExists?(user, domain) ?? false
        }
    }
}

/// Why the domains could not be read. Each names the file.
public enum LocalDomainsError: Error, CustomStringConvertible, Sendable, Equatable {
    case unreadableDirectory(path: String, reason: String)
    case empty(path: String)
    case invalidName(String, reason: String)
    case users(UserDatabaseError)
    case aliases(AliasesFileError)
    case unreadableAliases(path: String, reason: String)

    public var description: String {
        switch self {
        case .unreadableDirectory(let path, let reason): "Error reading \"\(path)\" directory: \(reason)"
        case .empty(let path): "No entries found in \"\(path)\""
        case .invalidName(let name, let reason): "Invalid name \"\(name)\": \(reason)"
        // chasquid's words (an unreadable file: `users file error: open
        // domains/d/users: permission denied`).
        case .users(let e): "users file error: \(e)"
        case .aliases(let e): "aliases file error: \(e)"
        case .unreadableAliases(_, let reason): "aliases file error: \(reason)"
        }
    }
}

/// Reads `domains/` (COMPAT.md §2): each directory declares a local domain,
/// with optional `users` and `aliases` files.
public enum DomainLoader {
    public static func load(domainsDirectory: String, rules: AliasRules) throws(LocalDomainsError) -> DomainSnapshot {
        let entries: [String]
        do {
            entries = try DirectoryListing.names(atPath: domainsDirectory)
        } catch {
            throw .unreadableDirectory(path: domainsDirectory, reason: error.description)
        }
        if entries.isEmpty { throw .empty(path: domainsDirectory) }
        var domains: [String: LocalDomain] = [:]
        for entry in entries {
            // Every name must normalise, files included; then files are skipped.
            let name: String
            do {
                name = try Normalize.domain(entry)
            } catch {
                throw .invalidName(entry, reason: error.description)
            }
            let directory = (domainsDirectory.hasSuffix("/") ? String(domainsDirectory.dropLast()) : domainsDirectory) + "/" + entry
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue
            else { continue }
            domains[name] = try loadDomain(name: name, directory: directory, rules: rules)
        }
        return DomainSnapshot(domains: domains)
    }

    static func loadDomain(name: String, directory: String, rules: AliasRules) throws(LocalDomainsError) -> LocalDomain {
        let users: UserDatabase
        do {
            users = try UserDatabase.loadIfPresent(path: directory + "/users")
        } catch {
            throw .users(error)
        }
        let aliasesPath = directory + "/aliases"
        var aliases: [String: [Recipient]] = [:]
        if FileManager.default.fileExists(atPath: aliasesPath) {
            let text: String
            do {
                text = String(decoding: try readFile(aliasesPath), as: UTF8.self)
            } catch {
                throw .unreadableAliases(path: aliasesPath, reason: error.description)
            }
            do {
                aliases = try AliasesFile.parse(text, domain: name, rules: rules, path: aliasesPath)
            } catch {
                throw .aliases(error)
            }
        }
        return LocalDomain(name: name, directory: directory, users: users, aliases: aliases)
    }
}

/// The live set of local domains. Reloads read everything into a new
/// snapshot and swap it in whole; a failed reload keeps the previous one.
public final class LocalDomainStore: Sendable {
    public let domainsDirectory: String
    public let rules: AliasRules
    private let current: Mutex<DomainSnapshot>

    /// chasquid reloads users and aliases this often (and on SIGHUP).
    public static let reloadInterval: Duration = .seconds(30)

    public init(domainsDirectory: String, rules: AliasRules) throws(LocalDomainsError) {
        self.domainsDirectory = domainsDirectory
        self.rules = rules
        self.current = Mutex(try DomainLoader.load(domainsDirectory: domainsDirectory, rules: rules))
    }

    public var snapshot: DomainSnapshot { current.withLock { $0 } }

    /// Reads the users and aliases again, for the domains known at start-up
    /// plus any new directory.
    public func reload() throws(LocalDomainsError) {
        let fresh = try DomainLoader.load(domainsDirectory: domainsDirectory, rules: rules)
        current.withLock { $0 = fresh }
    }

    /// Reloads every `interval` until the task is cancelled. A failed reload
    /// is reported to `onError`, and the last good snapshot stays in use.
    public func reloadPeriodically(
        every interval: Duration = reloadInterval,
        onError: @Sendable (LocalDomainsError) -> Void
    ) async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return
            }
            do {
                try reload()
            } catch {
                onError(error)
            }
        }
    }
}
