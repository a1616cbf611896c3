import ChasquidConfig
import ChasquidProto
import DurableFiles
import Foundation
import Normalization
import UserDatabase

/// chasquid-util: the offline admin commands (COMPAT.md §17). Success goes to
/// stdout with exit 0; errors are one line on stderr with exit 1.
public struct AdminTool {
    let console: any Console
    let arguments: Arguments

    public init(arguments: [String], console: any Console = StandardConsole()) {
        self.arguments = Arguments(arguments)
        self.console = console
    }

    public static let usage = """
        Usage:
          chasquid-util [options] user-add <user@domain> [--password=<password>] [--receive_only]
          chasquid-util [options] user-remove <user@domain>
          chasquid-util [options] authenticate <user@domain> [--password=<password>]
          chasquid-util [options] check-userdb <domain>
          chasquid-util [options] aliases-resolve <address>
          chasquid-util [options] domaininfo-remove <domain>
          chasquid-util [options] print-config
          chasquid-util [options] dkim-keygen <domain> [<selector> <private-key.pem>] [--algo=rsa3072|rsa4096|ed25519]
          chasquid-util [options] dkim-dns <domain> [<selector> <private-key.pem>]

        Options:
          -C=<path>, --config_dir=<path>  Configuration directory (default /etc/chasquid)
          --help                          Show this help
        """

    /// An error that ends the command: its text goes to stderr, exit 1.
    struct Failure: Error {
        var message: String
        init(_ message: String) { self.message = message }
    }

    /// Runs the command and returns the exit status.
    public func run() -> Int32 {
        if arguments.has("--help") {
            console.out(Self.usage)
            return 0
        }
        if arguments.has("--configdir") {
            console.err("Option --configdir is deprecated, use --config_dir instead")
        }
        guard let command = arguments.positional(0) else {
            console.out("Unknown argument \"\"")
            console.err(Self.usage)
            return 1
        }
        do {
            switch command {
            case "user-add": try userAdd()
            case "user-remove": try userRemove()
            case "authenticate": try authenticate()
            case "check-userdb": try checkUserDB()
            case "print-config": try printConfig()
            case "aliases-resolve": try aliasesResolve()
            case "domaininfo-remove": try domaininfoRemove()
            case "dkim-keygen": try dkimKeygen()
            case "dkim-dns": try dkimDNS()
            case "dkim-sign": try dkimSign()
            case "dkim-verify": try dkimVerify()
            default:
                console.out("Unknown argument \"\(command)\"")
                console.err(Self.usage)
                return 1
            }
        } catch {
            console.err(error.message)
            return 1
        }
        return 0
    }

    var configDirectory: String { arguments.configDirectory }

    /// The address argument, split; a missing domain is chasquid's first error.
    private func userAndDomain() throws(Failure) -> (user: String, domain: String) {
        guard let address = arguments.positional(1), address.contains(scalar: "@"), !Address.domain(of: address).isEmpty
        else {
            throw Failure("Domain missing, username should be of the form 'user@domain'")
        }
        let (user, domain) = Address.split(address)
        // The domain names a directory under domains/: never one elsewhere.
        if domain.contains("/") || domain.contains("\0") || domain == "." || domain == ".." {
            throw Failure("Error: invalid domain \"\(domain)\": it names a directory outside domains/")
        }
        return (user, domain)
    }

    private func usersPath(domain: String) -> String {
        configDirectory + "/domains/" + domain + "/users"
    }

    /// The directories under `domains/` that the daemon reads as `domain`:
    /// every entry whose name normalises as it does (`Example.ORG` and
    /// `example.org`), in the daemon's order, the one named exactly as the
    /// normalised domain last (it wins, and new users go there). Empty when
    /// there is none; a name that does not normalise matches only itself.
    private func domainDirectories(_ domain: String) -> [String] {
        let parent = configDirectory + "/domains/"
        guard let normalized = try? Normalize.domain(domain) else {
            return isDirectory(parent + domain) ? [parent + domain] : []
        }
        let entries = (try? DirectoryListing.names(atPath: parent)) ?? []
        let matching = entries.filter { (try? Normalize.domain($0)) == normalized && isDirectory(parent + $0) }
        return (matching.filter { $0 != normalized } + matching.filter { $0 == normalized }).map { parent + $0 }
    }

    /// Where `user-add` writes: the directory the daemon reads for the domain
    /// when there is one (chasquid writes under the name as typed, next to
    /// it; docs/compatibility.md), else a new one named as typed, as
    /// chasquid does. Says so when that is not the name as typed.
    private func directoryForNewUser(_ domain: String) throws(Failure) -> String {
        // chasquid creates it anyway; the daemon then refuses to start, and
        // every reload fails, for all domains.
        do {
            _ = try Normalize.domain(domain)
        } catch {
            throw Failure(
                "Error: invalid domain \"\(domain)\": \(error) (the daemon refuses a domains/ directory of that name)")
        }
        let typed = configDirectory + "/domains/" + domain
        let directory = domainDirectories(domain).last ?? typed
        if !isDirectory(directory) {
            console.out("Creating database")
            do {
                try makeDirectories(directory, mode: 0o755)
            } catch {
                // chasquid's words: `Error creating database dir: mkdir <dir>: permission denied`.
                throw Failure("Error creating database dir: \(error)")
            }
        }
        if directory != typed { console.out("Using \"\(directory)\" for domain \"\(domain)\"") }
        return directory
    }

    private func normalizedUser(_ user: String) throws(Failure) -> String {
        do {
            return try Normalize.user(user)
        } catch {
            throw Failure("Error normalizing user: \(error)")
        }
    }

    /// `--password=…` (even empty, as chasquid takes it), or asked twice on
    /// the terminal.
    private func password() throws(Failure) -> String {
        if let given = arguments.options["--password"] { return given }
        guard let first = console.readPassword(prompt: "Password: "),
            let second = console.readPassword(prompt: "Confirm password: ")
        else { throw Failure("Error reading password") }
        guard first == second else { throw Failure("Passwords don't match") }
        return first
    }

    private func userAdd() throws(Failure) {
        let (user, domain) = try userAndDomain()
        let domainDirectory = try directoryForNewUser(domain)
        var db: UserDatabase
        do {
            db = try UserDatabase.loadIfPresent(path: domainDirectory + "/users")
        } catch {
            throw Failure("Error loading database: \(error)")
        }
        let name = try normalizedUser(user)
        let receiveOnly = arguments.has("--receive_only")
        if receiveOnly && arguments.has("--password") {
            throw Failure("Cannot specify both --receive_only and --password")
        }
        do {
            if receiveOnly {
                try db.addDeniedUser(name)
            } else {
                try db.addUser(name, password: try password())
            }
            try db.write()
        } catch let error as Failure {
            throw error
        } catch {
            throw Failure("Error adding user: \(error)")
        }
        console.out("Added user")
    }

    private func loadExisting(path: String) throws(Failure) -> UserDatabase {
        do {
            return try UserDatabase.load(path: path)
        } catch {
            throw Failure("Error loading database: \(error)")
        }
    }

    /// The users files the daemon reads for `domain`, in its order (the last
    /// wins); the name as typed when no directory matches, so the error
    /// names the file chasquid would.
    private func usersFiles(_ domain: String) -> [String] {
        let found = domainDirectories(domain).map { $0 + "/users" }.filter(fileExists)
        return found.isEmpty ? [usersPath(domain: domain)] : found
    }

    /// The resolved addresses that are in a local domain (a directory under
    /// `domains/`) whose users files do not have them, read as the daemon
    /// reads them, each domain's files once. None when Dovecot may know
    /// users we cannot see; an unreadable file counts as having everyone.
    func addressesWithoutUser(_ addresses: [String], config: Config) -> [String] {
        if config.dovecotAuth { return [] }
        var users: [String: Set<String>?] = [:]  // nil: not local, or unreadable
        return addresses.filter { address in
            let (user, domain) = Address.split(address)
            if users[domain] == nil {
                let files = domainDirectories(domain).map { $0 + "/users" }
                var names: Set<String>? = files.isEmpty ? nil : []
                for file in files {
                    guard let db = try? UserDatabase.loadIfPresent(path: file) else {
                        names = nil
                        break
                    }
                    names?.formUnion(db.names)
                }
                users[domain] = .some(names)
            }
            guard let names = users[domain] ?? nil else { return false }
            return !names.contains((try? Normalize.user(user)) ?? user)
        }
    }

    private func userRemove() throws(Failure) {
        let (user, domain) = try userAndDomain()
        var databases: [UserDatabase] = []
        for path in usersFiles(domain) { databases.append(try loadExisting(path: path)) }
        let name = try normalizedUser(user)
        // From every directory of the domain, or the daemon would still know it.
        var removed = false
        for var db in databases where db.removeUser(name) {
            removed = true
            do {
                try db.write()
            } catch {
                throw Failure("Error writing database: \(error)")
            }
        }
        guard removed else { throw Failure("Unknown user") }
        console.out("Removed user")
    }

    private func authenticate() throws(Failure) {
        let (user, domain) = try userAndDomain()
        var databases: [UserDatabase] = []
        for path in usersFiles(domain) { databases.append(try loadExisting(path: path)) }
        let name = try normalizedUser(user)
        let given = try password()
        // The entry the daemon uses: the last directory that has the user.
        guard let db = databases.last(where: { $0.exists(name) }), db.authenticate(user: name, password: given) else {
            throw Failure("Authentication failed")
        }
        console.out("Authentication succeeded")
    }

    private func checkUserDB() throws(Failure) {
        guard let domain = arguments.positional(1) else { throw Failure("Error: missing domain parameter") }
        let paths = usersFiles(domain)
        guard fileExists(paths[0]) else { throw Failure("Error: file \"\(paths[0])\" does not exist") }
        var users = Set<String>()
        for path in paths { users.formUnion(try loadExisting(path: path).names) }
        console.out("Database loaded (\(users.count) users)")
    }

    /// `data_dir` as the daemon resolves it: relative to the config
    /// directory, whatever the caller's working directory (chasquid-util
    /// took it relative to the caller's; docs/compatibility.md).
    func dataDirectory(_ config: Config) -> String {
        config.dataDir.hasPrefix("/") ? config.dataDir : configDirectory + "/" + config.dataDir
    }

    func loadConfig() throws(Failure) -> Config {
        let path = configDirectory + "/chasquid.conf"
        do {
            return try Configuration.load(path: path)
        } catch {
            throw Failure("Error loading config: \(error.loadingDescription)")
        }
    }

    private func printConfig() throws(Failure) {
        let config = try loadConfig()
        // Configuration.render ends in a blank line; `out` adds the last newline.
        var text = Configuration.render(config)
        text.removeLast()
        console.out(text)
    }
}
