import Aliases
import Foundation
import Testing
import UserDatabase

@testable import LocalDomains

func makeConfigDirectory(_ files: [String: String]) throws -> String {
    let root = NSTemporaryDirectory() + "chasquid-domains-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: root + "/domains", withIntermediateDirectories: true)
    for (path, text) in files {
        let full = root + "/domains/" + path
        if path.hasSuffix("/") {
            try FileManager.default.createDirectory(atPath: full, withIntermediateDirectories: true)
            continue
        }
        try FileManager.default.createDirectory(
            atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: full, atomically: true, encoding: .utf8)
    }
    return root + "/domains"
}

let plainUser = #"users { key: "%@" value { plain { password: "pw" } } }"#

@Suite struct LocalDomainsTests {
    @Test func loadsEveryDomainWithItsUsersAndAliases() async throws {
        let dir = try makeConfigDirectory([
            "example.com/users": plainUser.replacingOccurrences(of: "%@", with: "ana"),
            "example.com/aliases": "info: ana\n",
            "xn--pingino-q2a.example/aliases": "*: ana@example.com\n",
            "empty.org/": "",
            "a-file-not-a-domain": "ignored",
        ])
        let snapshot = try DomainLoader.load(domainsDirectory: dir, rules: AliasRules())
        #expect(Set(snapshot.domains.keys) == ["example.com", "pingüino.example", "empty.org"])
        #expect(snapshot.domains["pingüino.example"]?.directory == dir + "/xn--pingino-q2a.example")
        #expect(snapshot.isLocal("localhost") && snapshot.isLocal("empty.org") && !snapshot.isLocal("remote.org"))
        #expect(snapshot.userExists("ana", domain: "example.com"))
        #expect(snapshot.domains["example.com"]?.users.authenticate(user: "ana", password: "pw") == true)

        let resolver = snapshot.resolver(rules: AliasRules())
        #expect(try await resolver.resolve("info@example.com") == [Recipient("ana@example.com")])
        #expect(try await resolver.resolve("x@pingüino.example") == [Recipient("ana@example.com")])
        #expect(try await resolver.exists("a.na+x@example.com"))
        #expect(try await !resolver.exists("bob@example.com"))
    }

    /// `Example.ORG` (chasquid-util's name as typed) next to `example.org`:
    /// one domain, both directories' users and aliases, the exactly named
    /// one winning a conflict; each merge and skip noted (issue 19).
    @Test func variantDirectoriesAreMergedAndNoted() async throws {
        let dir = try makeConfigDirectory([
            "Example.ORG/users": plainUser.replacingOccurrences(of: "%@", with: "dave"),
            "Example.ORG/aliases": "sales: dave\ninfo: dave\n",
            "example.org/aliases": "info: ana\n",
            "example.org/users": #"users { key: "dave" value { plain { password: "new" } } }"#,
            "README": "notes",
        ])
        let snapshot = try DomainLoader.load(domainsDirectory: dir, rules: AliasRules())
        let domain = try #require(snapshot.domains["example.org"])
        #expect(snapshot.domains.count == 1)
        #expect(domain.directories == [dir + "/Example.ORG", dir + "/example.org"])
        #expect(domain.directory == dir + "/example.org")
        #expect(domain.users.authenticate(user: "dave", password: "new"))
        #expect(!domain.users.authenticate(user: "dave", password: "pw"))
        let resolver = snapshot.resolver(rules: AliasRules())
        #expect(try await resolver.resolve("sales@example.org") == [Recipient("dave@example.org")])
        #expect(try await resolver.resolve("info@example.org") == [Recipient("ana@example.org")])
        #expect(
            snapshot.notes == [
                "\(dir)/README: not a directory, skipped",
                "example.org: 1 user(s) in both \(dir)/Example.ORG and \(dir)/example.org (\"dave\"); using \(dir)/example.org",
                "example.org: \(dir)/Example.ORG and \(dir)/example.org are the same domain; their users and aliases are merged",
            ])
    }

    @Test func aReloadReportsOnlyNewNotes() throws {
        let dir = try makeConfigDirectory(["example.com/": "", "README": "x"])
        let store = try LocalDomainStore(domainsDirectory: dir, rules: AliasRules())
        #expect(try store.reload() == [])
        try "y".write(toFile: dir + "/NOTES", atomically: true, encoding: .utf8)
        #expect(try store.reload() == ["\(dir)/NOTES: not a directory, skipped"])
    }

    @Test func extraUserSourcesAreConsulted() async throws {
        let dir = try makeConfigDirectory(["example.com/": ""])
        let snapshot = try DomainLoader.load(domainsDirectory: dir, rules: AliasRules())
        let resolver = snapshot.resolver(rules: AliasRules(), extraUserExists: { user, _ in user == "dovecotuser" })
        #expect(try await resolver.exists("dovecotuser@example.com"))
        #expect(try await !resolver.exists("other@example.com"))
    }

    @Test func errorsNameTheFile() throws {
        let badAliases = try makeConfigDirectory(["example.com/aliases": "ok: fine\nbroken line\n"])
        #expect {
            try DomainLoader.load(domainsDirectory: badAliases, rules: AliasRules())
        } throws: { error in
            "\(error)".contains("example.com/aliases\" line 2: missing ':'")
        }
        let badUsers = try makeConfigDirectory(["example.com/users": "users { nonsense"])
        #expect {
            try DomainLoader.load(domainsDirectory: badUsers, rules: AliasRules())
        } throws: { error in
            "\(error)".contains("example.com/users")
        }
        let badName = try makeConfigDirectory(["xn--99999999999.com/": ""])
        #expect {
            try DomainLoader.load(domainsDirectory: badName, rules: AliasRules())
        } throws: { error in
            "\(error)".hasPrefix("Invalid name \"xn--99999999999.com\"")
        }
        let empty = try makeConfigDirectory([:])
        #expect(throws: LocalDomainsError.empty(path: empty)) {
            try DomainLoader.load(domainsDirectory: empty, rules: AliasRules())
        }
        #expect(throws: LocalDomainsError.self) {
            try DomainLoader.load(domainsDirectory: "/nonexistent/domains", rules: AliasRules())
        }
    }

    @Test func reloadSwapsInNewFilesAndKeepsTheOldOnError() async throws {
        let dir = try makeConfigDirectory(["example.com/aliases": "a: b\n"])
        let store = try LocalDomainStore(domainsDirectory: dir, rules: AliasRules())
        #expect(store.snapshot.domains["example.com"]?.aliases["a@example.com"] == [Recipient("b@example.com")])

        try "a: c\n".write(toFile: dir + "/example.com/aliases", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: dir + "/new.org", withIntermediateDirectories: false)
        try store.reload()
        #expect(store.snapshot.domains["example.com"]?.aliases["a@example.com"] == [Recipient("c@example.com")])
        #expect(store.snapshot.isLocal("new.org"))

        let before = store.snapshot
        try "broken\n".write(toFile: dir + "/example.com/aliases", atomically: true, encoding: .utf8)
        #expect(throws: LocalDomainsError.self) { try store.reload() }
        #expect(store.snapshot.domains["example.com"]?.aliases == before.domains["example.com"]?.aliases)
    }

    @Test func periodicReloadPicksUpChanges() async throws {
        let dir = try makeConfigDirectory(["example.com/": ""])
        let store = try LocalDomainStore(domainsDirectory: dir, rules: AliasRules())
        let task = Task { await store.reloadPeriodically(every: .milliseconds(50)) { _ in } }
        defer { task.cancel() }
        var db = UserDatabase(path: dir + "/example.com/users")
        try db.addDeniedUser("late")
        try db.write()
        var seen = false
        for _ in 0..<100 where !seen {
            try await Task.sleep(for: .milliseconds(50))
            seen = store.snapshot.userExists("late", domain: "example.com")
        }
        #expect(seen)
    }
}
