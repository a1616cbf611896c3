#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A `DKIM-Signature` field's value (RFC 6376 §3.5), checked as §6.1.1
/// asks:
///
///     sig-v-tag = %x76 [FWS] "=" [FWS] 1*DIGIT            ; "1"
///     sig-a-tag = %x61 [FWS] "=" [FWS] sig-a-tag-k "-" sig-a-tag-h
///     sig-c-tag = %x63 [FWS] "=" [FWS] sig-c-tag-alg ["/" sig-c-tag-alg]
///     sig-d-tag = %x64 [FWS] "=" [FWS] domain-name
///     sig-h-tag = %x68 [FWS] "=" [FWS] hdr-name *([FWS] ":" [FWS] hdr-name)
///     sig-l-tag = %x6c [FWS] "=" [FWS] 1*76DIGIT
///     sig-s-tag = %x73 [FWS] "=" [FWS] selector
///     sig-t-tag / sig-x-tag = ... 1*12DIGIT Error texts are chasquid's, as they end up in
/// `Authentication-Results: ... reason="..."`.
public struct DKIMSignatureHeader: Sendable, Equatable {
    public enum Algorithm: String, Sendable {
        case rsaSHA256 = "rsa-sha256"
        case ed25519SHA256 = "ed25519-sha256"

        var keyType: String {
            switch self {
            case .rsaSHA256: "rsa"
            case .ed25519SHA256: "ed25519"
            }
        }
    }

    public var algorithm: Algorithm
    public var signature: [UInt8]
    public var bodyHash: [UInt8]
    public var headerCanonicalization: DKIMCanonicalization
    public var bodyCanonicalization: DKIMCanonicalization
    public var domain: String
    public var signedHeaders: [String]
    public var identity: String?
    public var bodyLength: Int?
    public var selector: String
    public var timestamp: Int?
    public var expiration: Int?
    /// The b= value as written, whitespace removed (for `header.b=`).
    public var encodedSignature: String

    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// Without any SP, HTAB, CR or LF, per scalar ("\r\n" is one Character,
    /// and a lone CR or LF counts too).
    static func withoutFWS(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.filter { !" \t\r\n".unicodeScalars.contains($0) }))
    }

    /// Parses and checks the value (everything after `DKIM-Signature:`).
    public init(parsing value: String) throws(Invalid) {
        let tags: DKIMTagList
        do {
            tags = try DKIMTagList(parsing: value)
        } catch {
            throw Invalid(error.description)
        }
        guard tags["v"] == "1" else { throw Invalid("invalid version") }

        let a = tags["a"] ?? ""
        guard let dash = a.firstIndex(of: "-") else { throw Invalid("invalid a= tag") }
        guard ["rsa", "ed25519"].contains(a[..<dash]) else { throw Invalid("unsupported key type: \(a)") }
        // SHA-1 must not be used (RFC 8301 §3.1).
        guard let algorithm = Algorithm(rawValue: a) else { throw Invalid("unsupported hash: \(a)") }
        self.algorithm = algorithm

        encodedSignature = Self.withoutFWS(tags["b"] ?? "")
        guard let b = Data(base64Encoded: encodedSignature) else {
            throw Invalid("invalid signature: failed to decode b")
        }
        signature = Array(b)
        guard let bh = Data(base64Encoded: Self.withoutFWS(tags["bh"] ?? "")) else {
            throw Invalid("invalid signature: failed to decode bh")
        }
        bodyHash = Array(bh)

        // c= is "header/body" or "header" (body then simple); default simple/simple.
        let c = tags["c"] ?? ""
        if c.isEmpty {
            headerCanonicalization = .simple
            bodyCanonicalization = .simple
        } else {
            let parts = c.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard let header = DKIMCanonicalization(rawValue: parts[0]) else {
                throw Invalid("invalid signature: failed to parse c: header: unknown canonicalization")
            }
            let bodyName = parts.count > 1 && !parts[1].isEmpty ? parts[1] : "simple"
            guard let body = DKIMCanonicalization(rawValue: bodyName) else {
                throw Invalid("invalid signature: failed to parse c: body: unknown canonicalization")
            }
            headerCanonicalization = header
            bodyCanonicalization = body
        }

        domain = tags["d"] ?? ""
        signedHeaders = (tags["h"].map(Self.withoutFWS) ?? "").split(separator: ":").map(String.init)
        identity = tags["i"]
        selector = tags["s"] ?? ""

        func number(_ tag: String) throws(Invalid) -> Int? {
            guard let text = tags[tag] else { return nil }
            // Up to 18 digits, so it fits; larger is no valid time or length.
            guard (1...18).contains(text.count), text.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let value = Int(text)
            else { throw Invalid("invalid signature: failed to parse \(tag)") }
            return value
        }
        bodyLength = try number("l")
        timestamp = try number("t")
        expiration = try number("x")

        if let q = tags["q"], !Self.withoutFWS(q).split(separator: ":").contains("dns/txt") {
            throw Invalid("invalid signature: no dns/txt query method in q")
        }
        // d= and s= name a DNS name to ask: sub-domain *("." sub-domain)
        // (RFC 6376 §3.5, A-labels only), never text that would make the
        // query something else.
        if !domain.isEmpty, !Self.isDomainName(domain) { throw Invalid("invalid tag: d= is not a domain name") }
        if !selector.isEmpty, !Self.isDomainName(selector) { throw Invalid("invalid tag: s= is not a selector") }
        if signature.isEmpty { throw Invalid("missing required tag: b=") }
        if bodyHash.isEmpty { throw Invalid("missing required tag: bh=") }
        if domain.isEmpty { throw Invalid("missing required tag: d=") }
        if signedHeaders.isEmpty { throw Invalid("missing required tag: h=") }
        // Real signatures name a few dozen fields; more is only work.
        guard signedHeaders.count <= Self.maximumSignedFields else { throw Invalid("invalid tag: h= names too many fields") }
        if selector.isEmpty { throw Invalid("missing required tag: s=") }
        guard signedHeaders.contains(where: { $0.lowercased() == "from" }) else {
            throw Invalid("invalid tag: h= does not contain 'from'")
        }
        if let identity {
            let identityDomain = (identity.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false).last.map(String.init) ?? "")
                .lowercased()
            let d = domain.lowercased()
            guard identityDomain == d || identityDomain.hasSuffix("." + d) else {
                throw Invalid("invalid tag: i= is not a subdomain of d=")
            }
        }
        if let timestamp, let expiration, expiration < timestamp {
            throw Invalid("invalid signature: x= is before t=")
        }
    }

    public static let maximumSignedFields = 512

    /// Labels of letters, digits, hyphens (and underscores, which some
    /// selectors carry), none empty, none starting or ending with a hyphen.
    static func isDomainName(_ name: String) -> Bool {
        guard name.utf8.count <= 253 else { return false }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        return labels.allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63 && label.first != "-" && label.last != "-"
                && label.utf8.allSatisfy { ($0 | 0x20) >= 0x61 && ($0 | 0x20) <= 0x7A || (0x30...0x39).contains($0) || $0 == 0x2D || $0 == 0x5F }
        }
    }

    /// The field's source with the b= value removed (RFC 6376 §3.5: "the
    /// value of the b= tag (including all surrounding whitespace) MUST be
    /// deleted"), found by walking the tag list, never by a pattern that
    /// could also match inside another tag's value.
    static func removingSignature(from source: [UInt8]) -> [UInt8] {
        guard let colon = source.firstIndex(of: UInt8(ascii: ":")) else { return source }
        var out = Array(source[...colon])
        var start = colon + 1
        while start <= source.count {
            let end = source[start...].firstIndex(of: UInt8(ascii: ";")) ?? source.count
            let spec = source[start..<end]
            if let equals = spec.firstIndex(of: UInt8(ascii: "=")),
                withoutFWS(String(decoding: spec[..<equals], as: UTF8.self)) == "b"
            {
                out += source[start...equals]
            } else {
                out += spec
            }
            if end < source.count { out.append(UInt8(ascii: ";")) }
            start = end + 1
        }
        return out
    }
}
