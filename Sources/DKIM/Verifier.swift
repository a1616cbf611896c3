import Crypto
import CryptoExtras
import GoCompat

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What a key lookup found.
public enum DKIMKeyLookupResult: Sendable {
    case records([String])
    /// A DNS failure worth retrying (TEMPFAIL).
    case temporaryFailure(String)
    /// A DNS answer that will not change (PERMFAIL): no such name, refused.
    case permanentFailure(String)
}

/// Verifies every signature of a message, up to a limit (RFC 6376 §6),
/// with chasquid's outcomes and texts (COMPAT.md §12.3). Never rejects:
/// the result only goes into Authentication-Results.
public struct DKIMVerifier: Sendable {
    /// chasquid checks at most this many signatures (RFC 6376 §8.4: a
    /// message with many is a cheap way to make a verifier work).
    public static let defaultMaximumSignatures = 5

    public var lookup: @Sendable (String) async -> DKIMKeyLookupResult
    public var maximumSignatures: Int
    /// Seconds since the epoch, for x=.
    public var now: @Sendable () -> Int

    public init(
        maximumSignatures: Int = DKIMVerifier.defaultMaximumSignatures,
        now: @escaping @Sendable () -> Int = { Int(Date().timeIntervalSince1970) },
        lookup: @escaping @Sendable (String) async -> DKIMKeyLookupResult
    ) {
        self.lookup = lookup
        self.maximumSignatures = maximumSignatures
        self.now = now
    }

    public enum State: String, Sendable {
        case success = "SUCCESS"
        case permanentFailure = "PERMFAIL"
        case temporaryFailure = "TEMPFAIL"
    }

    public struct SignatureResult: Sendable, Equatable {
        public var state: State
        /// Why it failed; empty on success.
        public var error: String
        /// The cryptographic check itself failed (dkim=fail, not permerror).
        public var isVerificationFailure: Bool
        public var domain: String
        public var selector: String
        /// The b= value, without whitespace; empty when it had none usable.
        public var signature: String
    }

    public struct Result: Sendable, Equatable {
        public var found: Int { results.count }
        public var valid: Int { results.filter { $0.state == .success }.count }
        public var results: [SignatureResult]

        /// The DKIM part of an Authentication-Results value (RFC 8601
        /// §2.7.1), in chasquid's form: items start with ";", properties on
        /// the same or the next line, each line ending in CRLF.
        public var authenticationResults: String {
            guard !results.isEmpty else { return ";dkim=none\r\n" }
            var out = ""
            for result in results {
                switch result.state {
                case .success:
                    out += ";dkim=pass"
                case .temporaryFailure:
                    out += ";dkim=temperror  reason=\(goQuoted(result.error))\r\n"
                case .permanentFailure:
                    let kind = result.isVerificationFailure ? "fail" : "permerror"
                    out += ";dkim=\(kind)  reason=\(goQuoted(result.error))\r\n"
                }
                if !result.signature.isEmpty { out += "  header.b=\(result.signature.prefix(12))" }
                out += "  header.d=\(result.domain)\r\n"
            }
            return out
        }
    }

    /// Verifies a CRLF message; throws only when it cannot be parsed.
    public func verify(crlf message: [UInt8]) async throws(DKIMMessage.Invalid) -> Result {
        let parsed = try DKIMMessage(crlf: message)
        let signatureFields = parsed.fields.indices.filter { parsed.fields[$0].name.lowercased() == "dkim-signature" }
        var results: [SignatureResult] = []
        for index in signatureFields.prefix(maximumSignatures) {
            results.append(await verify(field: index, in: parsed))
        }
        return Result(results: results)
    }

    func verify(field index: Int, in message: DKIMMessage) async -> SignatureResult {
        let field = message.fields[index]
        var result = SignatureResult(
            state: .permanentFailure, error: "", isVerificationFailure: false, domain: "", selector: "", signature: "")
        let signature: DKIMSignatureHeader
        do {
            signature = try DKIMSignatureHeader(parsing: String(decoding: field.value, as: UTF8.self))
        } catch {
            result.error = error.description
            return result
        }
        result.domain = signature.domain
        result.selector = signature.selector
        result.signature = signature.encodedSignature
        if let expiration = signature.expiration, expiration < now() {
            result.error = "signature expired"
            return result
        }

        let name = "\(signature.selector)._domainkey.\(signature.domain)"
        let records: [String]
        switch await lookup(name) {
        case .records(let found): records = found
        case .temporaryFailure(let why):
            result.state = .temporaryFailure
            result.error = why
            return result
        case .permanentFailure(let why):
            result.error = why
            return result
        }
        // Every record that parses as a key is tried (chasquid's choice; RFC
        // 6376 leaves several records undefined).
        let keys = records.compactMap { try? DKIMKeyRecord(parsing: $0) }.filter {
            $0.serves(signature.algorithm) && !$0.publicKey.isEmpty
        }

        // Body: canonicalized, cut to l=, hashed, compared with bh=.
        var hasher = DKIMBodyHasher(canonicalization: signature.bodyCanonicalization, limit: signature.bodyLength)
        hasher.feed(message.body)
        let bodyHash = hasher.finish()
        if let length = signature.bodyLength, length > hasher.canonicalLength {
            result.error = "body shorter than l="
            return result
        }
        guard bodyHash == signature.bodyHash else {
            result.error = "body hash mismatch (got \(Data(bodyHash).base64EncodedString()))"
            result.isVerificationFailure = true
            return result
        }

        var hashed: [UInt8] = []
        for selected in message.selected(byNames: signature.signedHeaders, excluding: index) {
            hashed += signature.headerCanonicalization.header(selected)
        }
        let own = DKIMMessage.Field(name: field.name, source: DKIMSignatureHeader.removingSignature(from: field.source))
        hashed += signature.headerCanonicalization.header(own).dropLast(2)
        let digest = SHA256.hash(data: hashed)

        for key in keys {
            if key.isStrict, let identity = signature.identity {
                let identityDomain = identity.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false).last ?? ""
                guard identityDomain.lowercased() == signature.domain.lowercased() else { continue }
            }
            if Self.isValid(signature.signature, digest: digest, key: key) {
                result.state = .success
                return result
            }
        }
        result.error = "verification failed"
        result.isVerificationFailure = true
        return result
    }

    static func isValid(_ signature: [UInt8], digest: SHA256Digest, key: DKIMKeyRecord) -> Bool {
        switch key.keyType {
        case "rsa":
            // RFC 8301 §3.2: verifiers accept 1024 bits and up.
            guard let publicKey = try? _RSA.Signing.PublicKey(unsafeDERRepresentation: key.publicKey) else { return false }
            return publicKey.isValidSignature(
                _RSA.Signing.RSASignature(rawRepresentation: signature), for: digest, padding: .insecurePKCS1v1_5)
        case "ed25519":
            guard let publicKey = try? Curve25519.Signing.PublicKey(rawRepresentation: key.publicKey) else { return false }
            return publicKey.isValidSignature(signature, for: Data(digest))
        default:
            return false
        }
    }
}
