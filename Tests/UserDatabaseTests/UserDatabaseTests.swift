import ChasquidProto
import Foundation
import Testing

@testable import UserDatabase

func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "chasquid-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@Suite struct UserDatabaseTests {
    @Test func scryptUsersAuthenticateAfterARoundTrip() throws {
        let path = try temporaryDirectory() + "/users"
        var db = UserDatabase(path: path)
        try db.addUser("ñandú", password: "secreto")
        try db.addUser("juan", password: "pässwörd ñ")
        try db.write()

        let back = try UserDatabase.load(path: path)
        #expect(back.count == 2)
        #expect(back.authenticate(user: "ñandú", password: "secreto"))
        #expect(!back.authenticate(user: "ñandú", password: "Secreto"))
        #expect(!back.authenticate(user: "ñandú", password: ""))
        #expect(back.authenticate(user: "juan", password: "pässwörd ñ"))
        #expect(!back.authenticate(user: "nobody", password: "secreto"))
        guard case .scrypt(let s) = back.entries["juan"]?.scheme else {
            Issue.record("not scrypt")
            return
        }
        #expect(s.logN == 14 && s.r == 8 && s.p == 1 && s.keyLen == 32 && s.salt.count == 16 && s.encrypted.count == 32)
    }

    /// A hash chasquid wrote (Debian's chasquid-util 1.11, password "secreto").
    @Test func readsAFileWrittenByChasquid() throws {
        let path = try temporaryDirectory() + "/users"
        let text = #"""
            users: {
              key: "ñandú"
              value: {
                scrypt: {
                  logN: 14
                  r: 8
                  p: 1
                  keyLen: 32
                  salt: "\xbe\x00j\xdf\xe2\x07FP\xcaE#\xf7\xa9\x9eX@"
                  encrypted: "\xa1\xb5$U\xb3UT\x90\x99>>υ\xcey:g\xd9ͼ4\xe0\xf7\x82\x11w\xab\xe8\xe5\xbdȐ"
                }
              }
            }
            """#
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let db = try UserDatabase.load(path: path)
        #expect(db.authenticate(user: "ñandú", password: "secreto"))
        #expect(!db.authenticate(user: "ñandú", password: "secret"))
    }

    @Test func plainAndDeniedSchemes() throws {
        let path = try temporaryDirectory() + "/users"
        let text = """
            users { key: "plainuser" value { plain { password: "pw" } } }
            users { key: "receiver" value { denied {} } }
            users { key: "noscheme" value {} }
            """
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let db = try UserDatabase.load(path: path)
        #expect(db.authenticate(user: "plainuser", password: "pw"))
        #expect(!db.authenticate(user: "plainuser", password: "pw2"))
        // Denied and scheme-less users exist (they receive mail) but never log in.
        #expect(db.exists("receiver") && db.exists("noscheme"))
        #expect(!db.authenticate(user: "receiver", password: ""))
        #expect(!db.authenticate(user: "noscheme", password: ""))
    }

    @Test func deniedUsersAreWrittenAsDenied() throws {
        let path = try temporaryDirectory() + "/users"
        var db = UserDatabase(path: path)
        try db.addDeniedUser("listas")
        try db.write()
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("denied {"))
        #expect(try UserDatabase.load(path: path).exists("listas"))
    }

    @Test func unNormalisedNamesAreRefused() throws {
        var db = UserDatabase(path: "/unused")
        #expect(throws: UserDatabaseError.invalidUsername("Juan")) { try db.addUser("Juan", password: "x") }
        #expect(throws: UserDatabaseError.invalidUsername("a b")) { try db.addDeniedUser("a b") }
    }

    @Test func removeUser() throws {
        var db = UserDatabase(path: "/unused")
        try db.addDeniedUser("a")
        let first = db.removeUser("a")
        let second = db.removeUser("a")
        #expect(first && !second)
        #expect(db.count == 0)
    }

    @Test func missingAndMalformedFiles() throws {
        let dir = try temporaryDirectory()
        #expect(throws: UserDatabaseError.notFound(path: dir + "/users")) { try UserDatabase.load(path: dir + "/users") }
        #expect(try UserDatabase.loadIfPresent(path: dir + "/users").count == 0)
        try "users { key: \"a\" value { bogus {} } }".write(toFile: dir + "/users", atomically: true, encoding: .utf8)
        #expect {
            try UserDatabase.load(path: dir + "/users")
        } throws: { error in
            if case .malformed(let path, _) = error as! UserDatabaseError { return path == dir + "/users" }
            return false
        }
    }

    /// An admin's typo is named with its line, in words (issue 19).
    @Test func anUnknownFieldIsNamedWithItsLine() throws {
        let dir = try temporaryDirectory()
        let text = "# users\nusers {\n  key: \"a # not a comment: b\"\n  value {\n    plaintext { password: \"x\" }\n  }\n}\n"
        try text.write(toFile: dir + "/users", atomically: true, encoding: .utf8)
        #expect(
            throws: UserDatabaseError.malformed(
                path: dir + "/users",
                reason: "line 5: unknown field \"plaintext\" (expected: users { key: \"name\" value { scrypt { ... } } })")
        ) { try UserDatabase.load(path: dir + "/users") }
        try "users { key: \"a\" value { scrypt { logN: x } } }".write(toFile: dir + "/users", atomically: true, encoding: .utf8)
        #expect {
            try UserDatabase.load(path: dir + "/users")
        } throws: { error in
            guard case .malformed(_, let reason) = error as! UserDatabaseError else { return false }
            return reason.hasPrefix("malformed") && !reason.contains("Text")
        }
    }

    /// Written files stay readable by chasquid's strict Go parser: known
    /// field names only, zero values omitted, bytes escaped.
    @Test func serialisedFormIsConservative() throws {
        var db = UserDatabase(path: "/unused")
        try db.addUser("ñandú", password: "x")
        let text = db.serialized()
        #expect(text.contains("key: \"ñandú\""))
        for field in ["logN: 14", "r: 8", "p: 1", "keyLen: 32", "salt: \"", "encrypted: \""] {
            #expect(text.contains(field))
        }
        #expect(!text.contains("plain"))
    }

    @Test func hostileScryptParametersAreRefusedNotRun() {
        var s = Userdb_Scrypt()
        s.logN = 40
        s.r = 8
        s.p = 1
        s.keyLen = 32
        #expect(UserDatabase.derive(password: [1], parameters: s) == nil)
        s.logN = 14
        s.keyLen = 0
        #expect(UserDatabase.derive(password: [1], parameters: s) == nil)
    }

    @Test func constantTimeComparison() {
        #expect(constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEqual([1, 2], [1, 2, 3]))
        #expect(constantTimeEqual([], []))
    }
}
