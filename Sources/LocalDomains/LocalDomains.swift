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
    /// The directory under `domains/` (the name as it is on disk) where
    /// new users go: the one named exactly as the domain when there is one.
    public var directory: String
    /// Every directory whose name normalises to this domain
    /// (`Example.ORG` and `example.org`), `directory` last; their users,
    /// aliases and DKIM keys are merged.
    public var directories: [String]
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

    /// What the reading skipped or merged, one line each, for the log.
    public let notes: [String]

    public init(domains: [String: LocalDomain], notes: [String] = []) {
        self.domains = domains
        self.notes = notes
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
        let parent = domainsDirectory.hasSuffix("/") ? String(domainsDirectory.dropLast()) : domainsDirectory
        var notes: [String] = []
        // Normalised name → its directories, in listing order.
        var variants: [(name: String, directories: [String])] = []
        var variantIndex: [String: Int] = [:]
        for entry in entries {
            // Every name must normalise, files included; then files are skipped.
            let name: String
            do {
                name = try Normalize.domain(entry)
            } catch {
                throw .invalidName(entry, reason: error.description)
            }
            let directory = parent + "/" + entry
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue
            else {
                notes.append("\(directory): not a directory, skipped")
                continue
            }
            if let index = variantIndex[name] {
                variants[index].directories.append(directory)
            } else {
                variantIndex[name] = variants.count
                variants.append((name, [directory]))
            }
        }
        var domains: [String: LocalDomain] = [:]
        for (name, found) in variants {
            // The exactly named directory is read last, so its users and
            // aliases win over a variant's; it is also where user-add writes.
            let exact = parent + "/" + name
            let directories = found.filter { $0 != exact } + found.filter { $0 == exact }
            var merged = try loadDomain(name: name, directory: directories[0], rules: rules)
            for directory in directories.dropFirst() {
                let more = try loadDomain(name: name, directory: directory, rules: rules)
                // One line per pair of directories, however many users.
                let both = merged.users.names.filter { more.users.exists($0) }
                if !both.isEmpty {
                    let shown = both.prefix(3).map { "\"\($0)\"" }.joined(separator: ", ") + (both.count > 3 ? ", ..." : "")
                    notes.append(
                        "\(name): \(both.count) user(s) in both \(merged.directory) and \(directory) (\(shown)); using \(directory)"
                    )
                }
                merged.users.merge(more.users)
                merged.aliases.merge(more.aliases) { _, new in new }
                merged.directories.append(directory)
                merged.directory = directory
            }
            if directories.count > 1 {
                notes.append(
                    "\(name): \(directories.joined(separator: " and ")) are the same domain; their users and aliases are merged")
            }
            domains[name] = merged
        }
        return DomainSnapshot(domains: domains, notes: notes)
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
        return LocalDomain(name: name, directory: directory, directories: [directory], users: users, aliases: aliases)
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
    /// plus any new directory. Returns the notes the previous reading did
    /// not have (so a periodic reload logs a new skip or merge once).
    @discardableResult
    public func reload() throws(LocalDomainsError) -> [String] {
        let fresh = try DomainLoader.load(domainsDirectory: domainsDirectory, rules: rules)
        let previous = Set(
            current.withLock { snapshot in
                defer { snapshot = fresh }
                return snapshot.notes
            })
        return fresh.notes.filter { !previous.contains($0) }
    }

    /// Reloads every `interval` until the task is cancelled. A failed reload
    /// is reported to `onError`, and the last good snapshot stays in use.
    public func reloadPeriodically(
        every interval: Duration = reloadInterval,
        onNewNote: @Sendable (String) -> Void = { _ in },
        onError: @Sendable (LocalDomainsError) -> Void
    ) async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return
            }
            do {
                for note in try reload() { onNewNote(note) }
            } catch {
                onError(error)
            }
        }
    }
}
