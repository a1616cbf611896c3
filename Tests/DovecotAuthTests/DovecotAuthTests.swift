import Foundation
import Glibc
import TestSupport
import Testing

@testable import DovecotAuth

/// Dovecot 2.3's greetings, as a real one sends them.
let userdbGreeting = "VERSION\t1\t1\nSPID\t4242\n"
let clientGreeting = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t4242\nCUID\t1\nCOOKIE\tabc\nDONE\n"

func userdb(at path: String, known: Set<String>) throws -> ScriptedSocket {
    try ScriptedSocket(path: path, greeting: userdbGreeting) { line in
        let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        guard fields.first == "USER", fields.count >= 3 else { return nil }
        return known.contains(fields[2]) ? "USER\t1\t\(fields[2])\tuid=1\n" : "NOTFOUND\t1\n"
    }
}

func client(at path: String, passwords: [String: String]) throws -> ScriptedSocket {
    try ScriptedSocket(path: path, greeting: clientGreeting) { line in
        guard line.hasPrefix("AUTH\t"), let resp = line.split(separator: "\t").first(where: { $0.hasPrefix("resp=") })
        else { return nil }
        let decoded = Data(base64Encoded: String(resp.dropFirst(5))).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let parts = decoded.split(separator: "\0", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, parts[0] == parts[1], passwords[parts[1]] == parts[2] else { return "FAIL\t1\tuser=x\n" }
        return "OK\t1\tuser=\(parts[1])\n"
    }
}

@Suite struct DovecotAuthTests {
    let dir = TempDir(prefix: "dovecot-")

    func pair(users: Set<String> = ["ana@d.org"], passwords: [String: String] = ["ana@d.org": "secret"]) throws
        -> (ScriptedSocket, ScriptedSocket, DovecotAuth)
    {
        let u = try userdb(at: dir.path + "/userdb", known: users)
        let c = try client(at: dir.path + "/client", passwords: passwords)
        return (u, c, DovecotAuth(userdbPath: u.path, clientPath: c.path))
    }

    @Test func existsAsksTheUserdbSocketInDovecotsWords() async throws {
        let (u, c, auth) = try pair()
        defer { u.stop(); c.stop() }
        #expect(try await auth.exists("ana@d.org"))
        #expect(u.transcript == "VERSION\t1\t1\nUSER\t1\tana@d.org\tservice=smtp\n")
        #expect(try await auth.exists("luis@d.org") == false)
    }

    @Test func authenticateSendsPlainMarkedSecured() async throws {
        let (u, c, auth) = try pair()
        defer { u.stop(); c.stop() }
        #expect(try await auth.authenticate(user: "ana@d.org", password: "secret"))
        let encoded = Data("ana@d.org\0ana@d.org\0secret".utf8).base64EncodedString()
        #expect(
            c.transcript
                == "VERSION\t1\t1\nCPID\t\(getpid())\n"
                + "AUTH\t1\tPLAIN\tservice=smtp\tsecured\tno-penalty\tnologin\tresp=\(encoded)\n")
        #expect(try await auth.authenticate(user: "ana@d.org", password: "wrong") == false)
        #expect(try await auth.authenticate(user: "luis@d.org", password: "secret") == false)
    }

    /// A tab or newline would add protocol fields or commands: refused
    /// before anything is sent.
    @Test(arguments: ["ana\t@d.org", "ana@d.org\nUSER\t2\tx", "ana @d.org", "ana\u{2003}@d.org"])
    func whiteSpaceInANameIsRefused(name: String) async throws {
        let (u, c, auth) = try pair()
        defer { u.stop(); c.stop() }
        await #expect(throws: DovecotAuth.Failure("username not safe (contains spaces)")) {
            try await auth.exists(name)
        }
        await #expect(throws: DovecotAuth.Failure("username not safe (contains spaces)")) {
            try await auth.authenticate(user: name, password: "p")
        }
        #expect(u.transcript.isEmpty && c.transcript.isEmpty)
    }

    /// Dovecot down or confused is an error, never "no such user": the
    /// caller makes it a temporary reply.
    @Test func aMissingSocketIsAnErrorNotANo() async throws {
        let auth = DovecotAuth(userdbPath: dir.path + "/none-u", clientPath: dir.path + "/none-c")
        await #expect {
            try await auth.exists("ana@d.org")
        } throws: { error in
            "\(error)" == "dial unix \(dir.path)/none-u: connect: no such file or directory"
        }
        await #expect(throws: DovecotAuth.Failure.self) { try await auth.authenticate(user: "a@d", password: "p") }
    }

    @Test func anUnexpectedReplyIsAnError() async throws {
        let u = try ScriptedSocket(path: dir.path + "/u", greeting: userdbGreeting) { _ in "FAIL\t1\treason=x\n" }
        let c = try ScriptedSocket(path: dir.path + "/c", greeting: clientGreeting) { line in
            line.hasPrefix("AUTH") ? "CONT\t1\t\n" : nil
        }
        defer { u.stop(); c.stop() }
        let auth = DovecotAuth(userdbPath: u.path, clientPath: c.path)
        await #expect(throws: DovecotAuth.Failure("invalid response: \"FAIL\\t1\\treason=x\"")) {
            try await auth.exists("ana@d.org")
        }
        await #expect(throws: DovecotAuth.Failure("invalid response: \"CONT\\t1\\t\"")) {
            try await auth.authenticate(user: "ana@d.org", password: "p")
        }
    }

    @Test func aWrongGreetingOrAClosedConnectionIsAnError() async throws {
        let wrong = try ScriptedSocket(path: dir.path + "/w", greeting: "VERSION\t2\t0\nSPID\t1\n") { _ in nil }
        let closing = try ScriptedSocket(path: dir.path + "/x", greeting: clientGreeting) { line in
            line.hasPrefix("AUTH") ? "<close>" : nil
        }
        defer { wrong.stop(); closing.stop() }
        let auth = DovecotAuth(userdbPath: wrong.path, clientPath: closing.path)
        await #expect(throws: DovecotAuth.Failure("error receiving version: got \"VERSION\\t2\\t0\"")) {
            try await auth.exists("ana@d.org")
        }
        await #expect(throws: DovecotAuth.Failure("error receiving response: EOF")) {
            try await auth.authenticate(user: "ana@d.org", password: "p")
        }
    }

    @Test func aDovecotThatNeverAnswersTimesOut() async throws {
        let silent = try ScriptedSocket(path: dir.path + "/s", greeting: "") { _ in nil }
        defer { silent.stop() }
        let auth = DovecotAuth(
            userdbCandidates: [silent.path], clientCandidates: [silent.path], timeout: .milliseconds(200))
        await #expect(throws: DovecotAuth.Failure("error receiving version: read: i/o timeout")) {
            try await auth.exists("ana@d.org")
        }
    }

    /// The first candidate of each list that is a socket wins; a file that
    /// is not a socket is passed over; and detection is retried on each use
    /// until both are found (a Dovecot started after us).
    @Test func autodetectionTakesTheFirstSocketsAndRetries() async throws {
        let plainFile = dir.path + "/not-a-socket"
        _ = FileManager.default.createFile(atPath: plainFile, contents: Data())
        let auth = DovecotAuth(
            userdbCandidates: [plainFile, dir.path + "/u1", dir.path + "/u2"],
            clientCandidates: [dir.path + "/c1", dir.path + "/c2"])
        await #expect(throws: DovecotAuth.Failure.self) { try await auth.exists("ana@d.org") }
        #expect(auth.description.contains("|"))

        let u2 = try userdb(at: dir.path + "/u2", known: ["ana@d.org"])
        let c1 = try client(at: dir.path + "/c1", passwords: [:])
        defer { u2.stop(); c1.stop() }
        #expect(try await auth.exists("ana@d.org"))
        #expect(auth.description == "DovecotAuth(\"\(dir.path)/u2\", \"\(dir.path)/c1\")")
        // Found once, kept: a socket appearing earlier in the list later
        // does not move it.
        let u1 = try userdb(at: dir.path + "/u1", known: [])
        defer { u1.stop() }
        #expect(try await auth.exists("ana@d.org"))
    }

    @Test func theDefaultsAreChasquids() {
        let auth = DovecotAuth(userdbPath: "", clientPath: "/c")
        #expect(auth.userdbCandidates == ["/var/run/dovecot/auth-chasquid-userdb", "/var/run/dovecot/auth-userdb"])
        #expect(auth.clientCandidates == ["/c"])
        #expect(
            DovecotAuth(userdbPath: "/u", clientPath: "/c").description == "DovecotAuth(\"/u\", \"/c\")")
    }
}

extension DovecotAuthTests {
    @Test func theStartupCheckLooksForBothSockets() throws {
        let u = try userdb(at: dir.path + "/cu", known: [])
        defer { u.stop() }
        #expect(throws: DovecotAuth.Failure("client is not an unix socket")) {
            try DovecotAuth(userdbPath: u.path, clientPath: dir.path + "/missing").check()
        }
        #expect(throws: DovecotAuth.Failure("userdb is not an unix socket")) {
            try DovecotAuth(userdbPath: dir.path + "/missing", clientPath: u.path).check()
        }
        try DovecotAuth(userdbPath: u.path, clientPath: u.path).check()
    }
}

extension DovecotAuthTests {
    /// A line split across reads after an earlier line of the same read
    /// was taken: the reader must join the halves (it once lost its place).
    @Test func aLineSplitAcrossReadsIsJoined() async throws {
        let c = try ScriptedSocket(path: dir.path + "/split", greeting: "VERSION\t1\t2\nMECH\tPL") { line in
            guard line.hasPrefix("CPID") else { return line.hasPrefix("AUTH") ? "OK\t1\tuser=a\n" : nil }
            usleep(100_000)  // so the rest comes in a read of its own
            return "AIN\nDONE\n"
        }
        defer { c.stop() }
        let auth = DovecotAuth(userdbPath: c.path, clientPath: c.path)
        #expect(try await auth.authenticate(user: "a@d.org", password: "p"))
    }
}

extension DovecotAuthTests {
    /// A Dovecot that trickles its reply a few bytes every 100 ms never
    /// trips a per-call timeout; the exchange's deadline still ends it.
    @Test func aTricklingDovecotIsBoundedAsAWhole() async throws {
        let slow = try ScriptedSocket(path: dir.path + "/slow", greeting: userdbGreeting) { line in
            line.hasPrefix("USER") ? Array(repeating: "USER", count: 20).joined(separator: "<pause>") + "\n" : nil
        }
        defer { slow.stop() }
        let auth = DovecotAuth(
            userdbCandidates: [slow.path], clientCandidates: [slow.path], given: (slow.path, slow.path),
            timeout: .milliseconds(500))
        // Each write comes within 100 ms, so per-call timeouts alone would
        // let the 2 s reply through and answer true.
        await #expect(throws: DovecotAuth.Failure("error receiving response: read: i/o timeout")) {
            try await auth.exists("ana@d.org")
        }
    }
}
