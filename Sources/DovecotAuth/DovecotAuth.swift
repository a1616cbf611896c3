#if canImport(Glibc)
import Glibc
#endif
import BlockingWork
import Foundation
import GoCompat
import StreamSocket
import Synchronization

/// Dovecot's authentication service as a fallback users database
/// (COMPAT.md §14): "does this user exist" over the auth-userdb socket and
/// PLAIN authentication over the auth-client socket, one connection per
/// question, each bounded by `timeout`.
///
/// Any failure to get an answer (no socket, Dovecot down, a reply we do not
/// understand) is an error, never "no": the caller turns it into a
/// temporary reply, so Dovecot being restarted never bounces mail.
public final class DovecotAuth: Sendable, CustomStringConvertible {
    public struct Failure: Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// Where Debian's and chasquid's documented Dovecot configs put the
    /// sockets, in the order chasquid tries them.
    public static let defaultUserdbPaths = ["/var/run/dovecot/auth-chasquid-userdb", "/var/run/dovecot/auth-userdb"]
    public static let defaultClientPaths = ["/var/run/dovecot/auth-chasquid-client", "/var/run/dovecot/auth-client"]
    public static let defaultTimeout: Duration = .seconds(5)

    /// The candidates for each socket: the configured path alone, or the defaults.
    let userdbCandidates: [String]
    let clientCandidates: [String]
    public let timeout: Duration
    /// The pair found, once found. Until then every use looks again, so a
    /// Dovecot started after us is picked up (chasquid ≥ 1.7).
    private let found: Mutex<(userdb: String, client: String)?>

    /// `userdbPath`/`clientPath` empty means "autodetect".
    public convenience init(userdbPath: String, clientPath: String, timeout: Duration = defaultTimeout) {
        self.init(
            userdbCandidates: userdbPath.isEmpty ? Self.defaultUserdbPaths : [userdbPath],
            clientCandidates: clientPath.isEmpty ? Self.defaultClientPaths : [clientPath],
            // Both given: nothing to detect, as chasquid.
            given: userdbPath.isEmpty || clientPath.isEmpty ? nil : (userdbPath, clientPath),
            timeout: timeout)
    }

    init(
        userdbCandidates: [String], clientCandidates: [String], given: (String, String)? = nil,
        timeout: Duration = defaultTimeout
    ) {
        self.userdbCandidates = userdbCandidates
        self.clientCandidates = clientCandidates
        self.timeout = timeout
        found = Mutex(given.map { (userdb: $0.0, client: $0.1) })
    }

    /// chasquid's `DovecotAuth("<userdb>", "<client>")`, with the paths in use
    /// (or the candidates, until they are found).
    public var description: String {
        let paths = found.withLock { $0 }
        let userdb = paths?.userdb ?? userdbCandidates.joined(separator: "|")
        let client = paths?.client ?? clientCandidates.joined(separator: "|")
        return "DovecotAuth(\"\(userdb)\", \"\(client)\")"
    }

    /// The sockets to use: the first pair of candidates that are both Unix
    /// sockets. Checked without connecting, as Dovecot may still be starting.
    public func sockets() throws(Failure) -> (userdb: String, client: String) {
        if let paths = found.withLock({ $0 }) { return paths }
        for userdb in userdbCandidates where Self.isSocket(userdb) {
            for client in clientCandidates where Self.isSocket(client) {
                found.withLock { $0 = (userdb, client) }
                return (userdb, client)
            }
        }
        throw Failure(
            "dovecot sockets not found (userdb: \(userdbCandidates.joined(separator: ", ")); "
                + "client: \(clientCandidates.joined(separator: ", ")))")
    }

    /// Whether the sockets are there now (chasquid's start-up check); not
    /// connecting, as Dovecot may be configured right but still starting.
    public func check() throws(Failure) {
        let (userdb, client) = try sockets()
        guard Self.isSocket(userdb) else { throw Failure("userdb is not an unix socket") }
        guard Self.isSocket(client) else { throw Failure("client is not an unix socket") }
    }

    static func isSocket(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFSOCK
    }

    /// Whether Dovecot knows `user` (`user@domain`, or a bare `user`).
    public func exists(_ user: String) async throws(Failure) -> Bool {
        guard Self.isSafe(user) else { throw Failure("username not safe (contains spaces)") }
        let socketPath = try sockets().userdb
        let timeout = self.timeout
        return try await Self.offThread { () throws -> Bool in
            let connection = try StreamSocket.connect(network: .unix, address: socketPath, timeout: timeout)
            connection.deadline = .now + timeout
            // Dovecot speaks first: VERSION\t1\t<minor>, then SPID\t<pid>.
            try Self.expect(connection, prefix: "VERSION\t1", what: "version")
            try Self.expect(connection, prefix: "SPID\t", what: "SPID")
            try connection.write("VERSION\t1\t1\nUSER\t1\t\(user)\tservice=smtp\n")
            let reply = try Self.readReply(connection)
            if reply.hasPrefix("USER\t1\t") { return true }
            if reply.hasPrefix("NOTFOUND\t") { return false }
            throw Failure("invalid response: \(goQuoted(reply))")
        }
    }

    /// Whether `password` is `user`'s, by PLAIN over the client socket.
    public func authenticate(user: String, password: String) async throws(Failure) -> Bool {
        guard Self.isSafe(user) else { throw Failure("username not safe (contains spaces)") }
        let socketPath = try sockets().client
        let timeout = self.timeout
        return try await Self.offThread { () throws -> Bool in
            let connection = try StreamSocket.connect(network: .unix, address: socketPath, timeout: timeout)
            connection.deadline = .now + timeout
            try connection.write("VERSION\t1\t1\nCPID\t\(getpid())\n")
            // The server's handshake (its mechanisms, cookie...) ends with DONE.
            while true {
                let line: String
                do { line = try connection.readLine() } catch {
                    throw Failure("error receiving handshake: \(error)")
                }
                if line == "DONE" { break }
            }
            // "secured": the password reached us over TLS, which chasquid
            // requires for AUTH; it saves admins a Dovecot setting.
            let response = Data((user + "\0" + user + "\0" + password).utf8).base64EncodedString()
            try connection.write(
                "AUTH\t1\tPLAIN\tservice=smtp\tsecured\tno-penalty\tnologin\tresp=\(response)\n")
            let reply = try Self.readReply(connection)
            if reply.hasPrefix("OK\t1") { return true }
            if reply.hasPrefix("FAIL\t1") { return false }
            throw Failure("invalid response: \(goQuoted(reply))")
        }
    }

    /// Dovecot's protocol is tab- and line-separated: a name with white
    /// space could add fields or commands, so it is refused [SEC]. The
    /// password goes base64-encoded and needs no check.
    static func isSafe(_ user: String) -> Bool {
        !user.unicodeScalars.contains { $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7F }
    }

    private static func expect(_ connection: StreamSocket, prefix: String, what: String) throws(Failure) {
        let line: String
        do { line = try connection.readLine() } catch { throw Failure("error receiving \(what): \(error)") }
        guard line.hasPrefix(prefix) else { throw Failure("error receiving \(what): got \(goQuoted(line))") }
    }

    private static func readReply(_ connection: StreamSocket) throws(Failure) -> String {
        do { return try connection.readLine() } catch { throw Failure("error receiving response: \(error)") }
    }

    /// The exchange blocks on a socket: on a thread of the pool for what
    /// sessions wait on, so that no concurrency or event-loop thread waits on
    /// Dovecot, and a stalled Dovecot cannot hold up the fsyncs.
    private static func offThread<T: Sendable>(
        _ work: @escaping @Sendable () throws -> T
    ) async throws(Failure) -> T {
        let result: Result<T, Failure> = await BlockingWork.onProcessThread(.session) {
            do { return .success(try work()) } catch let error as Failure { return .failure(error) } catch {
                return .failure(Failure("\(error)"))
            }
        }
        return try result.get()
    }
}
