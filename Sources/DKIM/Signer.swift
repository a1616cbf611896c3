import Crypto
import CryptoExtras

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Signs messages as chasquid does (COMPAT.md §12.3): rsa-sha256 or
/// ed25519-sha256, relaxed/relaxed, `t=`, no `x=`; h= lists each present
/// field of RFC 6376 §5.4.1's list plus Message-ID, once per instance, and
/// then oversigns From, Subject, Date, To, Cc and Message-ID so none can be
/// added after signing.
public struct DKIMSigner: Sendable {
    public var domain: String
    public var key: DKIMKey

    public init(domain: String, key: DKIMKey) {
        self.domain = domain
        self.key = key
    }

    static let fieldsToSign = [
        "From", "Reply-To", "Subject", "Date", "To", "Cc",
        "Resent-Date", "Resent-From", "Resent-To", "Resent-Cc",
        "In-Reply-To", "References",
        "List-Id", "List-Help", "List-Unsubscribe", "List-Subscribe", "List-Post", "List-Owner", "List-Archive",
        "Message-ID",
    ]
    static let oversigned = ["From", "Subject", "Date", "To", "Cc", "Message-ID"]

    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// The value of the `DKIM-Signature` field for a CRLF message, folded
    /// with CRLF and two spaces (the caller indents or converts), without
    /// the field name.
    public func sign(crlf message: [UInt8], now: Int) throws -> String {
        let parsed: DKIMMessage
        do { parsed = try DKIMMessage(crlf: message) } catch { throw Failure(description: error.description) }
        var hasher = DKIMBodyHasher(canonicalization: .relaxed)
        hasher.feed(parsed.body)
        return try sign(fields: parsed, relaxedBodyHash: hasher.finish(), now: now)
    }

    /// The same for a message read in parts: its header fields, and the
    /// relaxed body hash computed as the body streamed by.
    public func sign(fields parsed: DKIMMessage, relaxedBodyHash bodyHash: [UInt8], now: Int) throws -> String {
        var names: [String] = []
        for name in Self.fieldsToSign {
            names += Array(repeating: name, count: parsed.bottomUp(name).count)
        }
        names += Self.oversigned

        let algorithm: DKIMSignatureHeader.Algorithm = key.algorithm == .rsa ? .rsaSHA256 : .ed25519SHA256
        var value = "v=1; a=\(algorithm.rawValue); c=relaxed/relaxed;\r\n"
        value += "d=\(domain); s=\(key.selector); t=\(now);\r\n"
        value += "h=\(Self.wrapped(names.map { $0.lowercased() }));\r\n"
        value += "bh=\(Data(bodyHash).base64EncodedString());\r\n"
        value += "b="
        let signature = try self.signature(of: parsed, names: names, template: value + ";")
        return value + Self.broken(signature) + ";"
    }

    /// The b= value for a field `template` (the whole value, with an empty
    /// b=) that signs the fields `names` selects. What is hashed: those
    /// fields, then this field without its CRLF (RFC 6376 §3.7), relaxed;
    /// its line breaks are taken as folds.
    func signature(of message: DKIMMessage, names: [String], template: String) throws -> String {
        var hashed: [UInt8] = []
        for field in message.selected(byNames: names) {
            hashed += DKIMCanonicalization.relaxed.header(field)
        }
        let own = DKIMMessage.Field(
            name: "DKIM-Signature",
            source: Array(("DKIM-Signature: " + template.replacingOccurrences(of: "\r\n", with: "\r\n\t")).utf8))
        hashed += DKIMCanonicalization.relaxed.header(own).dropLast(2)
        return Data(try key.sign(digest: SHA256.hash(data: hashed))).base64EncodedString()
    }

    /// h= names joined by ":", wrapped before 70 columns with CRLF and two
    /// spaces, as chasquid wraps them.
    static func wrapped(_ names: [String]) -> String {
        var out = ""
        var line = ""
        for (index, name) in names.enumerated() {
            if line.count + 1 + name.count > 70 {
                out += line + "\r\n  "
                line = ""
            }
            if index > 0 { line += ":" }
            line += name
        }
        return out + line
    }

    /// A base64 value in 70-character lines, continued with two spaces.
    static func broken(_ text: String) -> String {
        var pieces: [Substring] = []
        var rest = Substring(text)
        while rest.count > 70 {
            pieces.append(rest.prefix(70))
            rest = rest.dropFirst(70)
        }
        pieces.append(rest)
        return pieces.joined(separator: "\r\n  ")
    }
}

extension DKIMKey {
    /// Signs the header hash (RFC 6376 §3.3: RSASSA-PKCS1-v1_5 over the
    /// SHA-256 digest; RFC 8463: PureEdDSA over the 32 digest bytes).
    func sign(digest: SHA256Digest) throws -> [UInt8] {
        switch material {
        case .rsa(let key):
            return Array(try key.signature(for: digest, padding: .insecurePKCS1v1_5).rawRepresentation)
        case .ed25519(let key):
            return Array(try key.signature(for: Data(digest)))
        }
    }
}
