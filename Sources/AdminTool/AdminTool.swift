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
        return Address.split(address)
    }

    private func usersPath(domain: String) -> String {
        configDirectory + "/domains/" + domain + "/users"
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
        let domainDirectory = configDirectory + "/domains/" + domain
        if !isDirectory(domainDirectory) {
            console.out("Creating database")
            do {
                try FileManager.default.createDirectory(
                    atPath: domainDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            } catch {
                throw Failure("Error creating directory \"\(domainDirectory)\": \(error.localizedDescription)")
            }
        }
        var db: UserDatabase
        do {
            db = try UserDatabase.loadIfPresent(path: usersPath(domain: domain))
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

    private func loadExisting(domain: String) throws(Failure) -> UserDatabase {
        do {
            return try UserDatabase.load(path: usersPath(domain: domain))
        } catch {
            throw Failure("Error loading database: \(error)")
        }
    }

    private func userRemove() throws(Failure) {
        let (user, domain) = try userAndDomain()
        var db = try loadExisting(domain: domain)
        let name = try normalizedUser(user)
        guard db.removeUser(name) else { throw Failure("Unknown user") }
        do {
            try db.write()
        } catch {
            throw Failure("Error writing database: \(error)")
        }
        console.out("Removed user")
    }

    private func authenticate() throws(Failure) {
        let (user, domain) = try userAndDomain()
        let db = try loadExisting(domain: domain)
        let name = try normalizedUser(user)
        let given = try password()
        guard db.authenticate(user: name, password: given) else { throw Failure("Authentication failed") }
        console.out("Authentication succeeded")
    }

    private func checkUserDB() throws(Failure) {
        guard let domain = arguments.positional(1) else { throw Failure("Error: missing domain parameter") }
        let path = usersPath(domain: domain)
        guard fileExists(path) else { throw Failure("Error: file \"\(path)\" does not exist") }
        let db = try loadExisting(domain: domain)
        console.out("Database loaded (\(db.count) users)")
    }

    func loadConfig() throws(Failure) -> Config {
        let path = configDirectory + "/chasquid.conf"
        do {
            return try Configuration.load(path: path)
        } catch {
            if error.line == nil && error.field == nil && !fileExists(path) {
                throw Failure("Error loading config: failed to read config at \"\(path)\": \(error.message)")
            }
            throw Failure("Error loading config: parsing config: \(error)")
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
