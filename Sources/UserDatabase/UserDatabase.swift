import ChasquidProto
import Crypto
import CryptoExtras
import DurableFiles
import Foundation
import Normalization
import SwiftProtobuf

/// Why a users database could not be used.
public enum UserDatabaseError: Error, CustomStringConvertible, Sendable, Equatable {
    case notFound(path: String)
    case unreadable(path: String, reason: String)
    case malformed(path: String, reason: String)
    case invalidUsername(String)
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case .notFound(let path): "open \(path): no such file or directory"
        // The reason is Go's `open <path>: <errno>`, which names the file.
        case .unreadable(_, let reason): reason
        case .malformed(let path, let reason): "parsing \(path): \(reason)"
        case .invalidUsername(let name): "invalid username \"\(name)\""
        case .writeFailed(let path, let reason): "writing \(path): \(reason)"
        }
    }
}

/// One domain's users database: `domains/<domain>/users` (COMPAT.md §6, §7).
///
/// A value type: a loaded database never changes under a reader. Keys are
/// normalised users without `@domain`.
public struct UserDatabase: Sendable {
    public let path: String
    public private(set) var entries: [String: Userdb_Password]

    /// scrypt parameters for new passwords, as chasquid uses them.
    public static let scryptLogN: UInt64 = 14
    public static let scryptR: Int32 = 8
    public static let scryptP: Int32 = 1
    public static let scryptKeyLength: Int32 = 32
    public static let saltLength = 16

    /// An empty database that will be written to `path`.
    public init(path: String) {
        self.path = path
        self.entries = [:]
    }

    /// Loads `path`; a missing file is `.notFound`.
    public static func load(path: String) throws(UserDatabaseError) -> UserDatabase {
        let bytes: [UInt8]
        do {
            bytes = try readFile(path)
        } catch {
            if error.isNotFound { throw .notFound(path: path) }
            throw .unreadable(path: path, reason: error.description)
        }
        var db = UserDatabase(path: path)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .malformed(path: path, reason: "the file is not valid UTF-8")
        }
        do {
            db.entries = try Userdb_ProtoDB(textFormatString: text).users
        } catch {
            throw .malformed(path: path, reason: Self.explain(error, in: text))
        }
        return db
    }

    /// The field names of the users file's messages (proto/userdb.proto).
    static let fieldNames: Set<String> = [
        "users", "key", "value", "scrypt", "plain", "denied", "logN", "r", "p", "keyLen", "salt", "encrypted", "password",
    ]

    /// swift-protobuf's error in words (`unknownField` is "unknown field"),
    /// with the line and name of the first unknown field, since its errors
    /// carry no position.
    static func explain(_ error: any Error, in text: String) -> String {
        let name = "\(error)"
        var words = ""
        for character in name {
            if character.isUppercase { words += " " + character.lowercased() } else { words.append(character) }
        }
        if name == "unknownField", let (line, field) = firstUnknownField(in: text) {
            return "line \(line): unknown field \"\(field)\" (expected: users { key: \"name\" value { scrypt { ... } } })"
        }
        return words
    }

    /// The first name used as a field (before `:`, `{` or `<`) that the
    /// users file does not have, skipping strings and comments.
    static func firstUnknownField(in text: String) -> (line: Int, name: String)? {
        let bytes = Array(text.utf8)
        var line = 1
        var i = 0
        func isNameStart(_ b: UInt8) -> Bool { (b | 0x20) >= 0x61 && (b | 0x20) <= 0x7A || b == 0x5F }
        while i < bytes.count {
            let b = bytes[i]
            switch b {
            case UInt8(ascii: "\n"):
                line += 1
                i += 1
            case UInt8(ascii: "#"):
                while i < bytes.count && bytes[i] != UInt8(ascii: "\n") { i += 1 }
            case UInt8(ascii: "\""), UInt8(ascii: "'"):
                i += 1
                while i < bytes.count && bytes[i] != b && bytes[i] != UInt8(ascii: "\n") {
                    i += bytes[i] == UInt8(ascii: "\\") ? 2 : 1
                }
                i += 1
            case _ where isNameStart(b):
                let start = i
                while i < bytes.count && (isNameStart(bytes[i]) || (0x30...0x39).contains(bytes[i])) { i += 1 }
                let word = String(decoding: bytes[start..<i], as: UTF8.self)
                var j = i
                while j < bytes.count && (bytes[j] == 0x20 || bytes[j] == 0x09) { j += 1 }
                if j < bytes.count && [UInt8(ascii: ":"), UInt8(ascii: "{"), UInt8(ascii: "<")].contains(bytes[j])
                    && !fieldNames.contains(word)
                {
                    return (line, word)
                }
            default:
                i += 1
            }
        }
        return nil
    }

    /// Loads `path`; a missing file is an empty database, as the server treats it.
    public static func loadIfPresent(path: String) throws(UserDatabaseError) -> UserDatabase {
        do {
            return try load(path: path)
        } catch .notFound {
            return UserDatabase(path: path)
        }
    }

    public var count: Int { entries.count }

    /// The user names, sorted.
    public var names: [String] { entries.keys.sorted() }

    /// Adds `other`'s users (the daemon reading two directories of one
    /// domain); a user in both takes `other`'s entry.
    public mutating func merge(_ other: UserDatabase) {
        entries.merge(other.entries) { _, new in new }
    }

    /// True if `user` (normalised) is in the database, receive-only users included.
    public func exists(_ user: String) -> Bool { entries[user] != nil }

    /// Checks a password. `user` must already be normalised. Never true for
    /// denied users or entries without a scheme; the comparison takes the
    /// same time wherever the first differing byte is.
    public func authenticate(user: String, password: String) -> Bool {
        guard let entry = entries[user] else { return false }
        switch entry.scheme {
        case .scrypt(let s):
            guard let derived = Self.derive(password: Array(password.utf8), parameters: s) else { return false }
            return constantTimeEqual(derived, Array(s.encrypted))
        case .plain(let p):
            return constantTimeEqual(Array(password.utf8), Array(p.password))
        case .denied, nil:
            return false
        }
    }

    /// Adds or replaces `user` with an scrypt hash of `password`.
    public mutating func addUser(_ user: String, password: String) throws(UserDatabaseError) {
        let name = try Self.checkedName(user)
        var salt = [UInt8](repeating: 0, count: Self.saltLength)
        var rng = SystemRandomNumberGenerator()
        for i in salt.indices { salt[i] = UInt8.random(in: 0...255, using: &rng) }
        var s = Userdb_Scrypt()
        s.logN = Self.scryptLogN
        s.r = Self.scryptR
        s.p = Self.scryptP
        s.keyLen = Self.scryptKeyLength
        s.salt = Data(salt)
        guard let derived = Self.derive(password: Array(password.utf8), parameters: s) else {
            preconditionFailure("scrypt failed with fixed, valid parameters")
        }
        s.encrypted = Data(derived)
        var entry = Userdb_Password()
        entry.scrypt = s
        entries[name] = entry
    }

    /// Adds or replaces `user` as receive-only: it gets mail, never logs in.
    public mutating func addDeniedUser(_ user: String) throws(UserDatabaseError) {
        let name = try Self.checkedName(user)
        var entry = Userdb_Password()
        entry.denied = Userdb_Denied()
        entries[name] = entry
    }

    /// Removes `user`; false if it was not there.
    @discardableResult
    public mutating func removeUser(_ user: String) -> Bool {
        entries.removeValue(forKey: user) != nil
    }

    /// The file's text, readable by chasquid's strict parser.
    public func serialized() -> String {
        var db = Userdb_ProtoDB()
        db.users = entries
        return db.textFormatString()
    }

    /// Writes the database atomically (0660 for a new file; an existing file
    /// keeps its owner and mode).
    public func write() throws(UserDatabaseError) {
        do {
            try AtomicFile.write(Array(serialized().utf8), to: path, mode: 0o660)
        } catch {
            throw .writeFailed(path: path, reason: error.description)
        }
    }

    private static func checkedName(_ user: String) throws(UserDatabaseError) -> String {
        guard let normalized = try? Normalize.user(user), normalized == user else {
            throw .invalidUsername(user)
        }
        return normalized
    }

    /// scrypt with the stored parameters; nil when they are out of the range
    /// we are willing to spend memory and time on (a corrupt or hostile file).
    static func derive(password: [UInt8], parameters s: Userdb_Scrypt) -> [UInt8]? {
        guard (1...22).contains(s.logN), (1...64).contains(s.r), (1...16).contains(s.p),
            (1...1024).contains(s.keyLen)
        else { return nil }
        guard
            let key = try? KDF.Scrypt.deriveKey(
                from: password, salt: Array(s.salt), outputByteCount: Int(s.keyLen),
                rounds: 1 << Int(s.logN), blockSize: Int(s.r), parallelism: Int(s.p))
        else { return nil }
        return key.withUnsafeBytes { Array($0) }
    }
}

/// Compares in time that depends only on the lengths, which are not secret.
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for i in a.indices { difference |= a[i] ^ b[i] }
    return difference == 0
}
