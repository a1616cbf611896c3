import Crypto
import CryptoExtras
import DNS
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
    /// All of one message's key lookups must end within this; the rest are
    /// TEMPFAIL (nil: no limit of our own).
    public var lookupBudget: Duration?
    /// Seconds since the epoch, for x=.
    public var now: @Sendable () -> Int

    public init(
        maximumSignatures: Int = DKIMVerifier.defaultMaximumSignatures,
        lookupBudget: Duration? = nil,
        now: @escaping @Sendable () -> Int = { Int(Date().timeIntervalSince1970) },
        lookup: @escaping @Sendable (String) async -> DKIMKeyLookupResult
    ) {
        self.lookup = lookup
        self.maximumSignatures = maximumSignatures
        self.lookupBudget = lookupBudget
        self.now = now
    }

    /// Key lookups over DNS (RFC 6376 §6.1.2): a timeout or SERVFAIL is
    /// TEMPFAIL, anything lasting (no such name, refused) PERMFAIL.
    public static func lookup(using dns: any DNSLookup) -> @Sendable (String) async -> DKIMKeyLookupResult {
        { name in
            do throws(DNSError) {
                let records = try await dns.txt(name)
                // No TXT at the name is the same answer as no name (Go's
                // resolver, chasquid's: "no such host").
                return records.isEmpty ? .permanentFailure("lookup \(name): no such host") : .records(records)
            } catch {
                return error.isTemporary ? .temporaryFailure("\(error)") : .permanentFailure("\(error)")
            }
        }
    }

    /// One lookup, cut at `deadline` (the lookup task is cancelled then).
    func lookup(_ name: String, before deadline: ContinuousClock.Instant?) async -> DKIMKeyLookupResult {
        guard let deadline else { return await lookup(name) }
        let lookup = self.lookup
        return await withTaskGroup(of: DKIMKeyLookupResult?.self) { group in
            group.addTask { await lookup(name) }
            group.addTask {
                try? await Task.sleep(until: deadline, clock: .continuous)
                return nil
            }
            defer { group.cancelAll() }
            let first = await group.next() ?? nil
            return first ?? .temporaryFailure("lookup \(name): timed out")
        }
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
        var verification = prepare(fields: parsed)
        verification.feedBody(parsed.body)
        return await verification.finish()
    }

    /// A verification of a message read in parts: its header fields now,
    /// its body fed in chunks (each signature's body hash computed as it
    /// streams), the keys looked up at `finish`.
    public func prepare(fields message: DKIMMessage) -> Verification {
        let indices = message.fields.indices.filter { message.fields[$0].name.lowercased() == "dkim-signature" }
        let signatures = indices.prefix(maximumSignatures).map { index in
            let value = String(decoding: message.fields[index].value, as: UTF8.self)
            return (index, Swift.Result { () throws(DKIMSignatureHeader.Invalid) in try DKIMSignatureHeader(parsing: value) })
        }
        return Verification(verifier: self, message: message, signatures: signatures)
    }

    public struct Verification: Sendable {
        let verifier: DKIMVerifier
        let message: DKIMMessage
        let signatures: [(Int, Swift.Result<DKIMSignatureHeader, DKIMSignatureHeader.Invalid>)]
        /// One hasher per canonicalization and l= the signatures ask for.
        var hashers: [HashKey: DKIMBodyHasher] = [:]

        struct HashKey: Hashable, Sendable {
            var canonicalization: DKIMCanonicalization
            var limit: Int?
        }

        init(
            verifier: DKIMVerifier, message: DKIMMessage,
            signatures: [(Int, Swift.Result<DKIMSignatureHeader, DKIMSignatureHeader.Invalid>)]
        ) {
            self.verifier = verifier
            self.message = message
            self.signatures = signatures
            for case (_, .success(let signature)) in signatures {
                let key = HashKey(canonicalization: signature.bodyCanonicalization, limit: signature.bodyLength)
                hashers[key] = DKIMBodyHasher(canonicalization: key.canonicalization, limit: key.limit)
            }
        }

        public var found: Int { signatures.count }

        /// Whether any signature needs the body hashed; with none (no
        /// signature, or none that parsed) the body need not be read.
        public var needsBody: Bool { !hashers.isEmpty }

        public mutating func feedBody(_ bytes: some Collection<UInt8>) {
            for key in hashers.keys { hashers[key]!.feed(bytes) }
        }

        public mutating func finish() async -> Result {
            var hashes: [HashKey: (hash: [UInt8], length: Int)] = [:]
            for (key, var hasher) in hashers {
                let hash = hasher.finish()
                hashes[key] = (hash, hasher.canonicalLength)
            }
            let deadline = verifier.lookupBudget.map { ContinuousClock.now + $0 }
            var results: [SignatureResult] = []
            for (index, parsed) in signatures {
                results.append(
                    await verifier.verify(field: index, parsed: parsed, in: message, bodyHashes: hashes, deadline: deadline))
            }
            return Result(results: results)
        }
    }

    func verify(
        field index: Int, parsed: Swift.Result<DKIMSignatureHeader, DKIMSignatureHeader.Invalid>, in message: DKIMMessage,
        bodyHashes: [Verification.HashKey: (hash: [UInt8], length: Int)], deadline: ContinuousClock.Instant? = nil
    ) async -> SignatureResult {
        let field = message.fields[index]
        var result = SignatureResult(
            state: .permanentFailure, error: "", isVerificationFailure: false, domain: "", selector: "", signature: "")
        let signature: DKIMSignatureHeader
        switch parsed {
        case .success(let success): signature = success
        case .failure(let error):
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
        switch await lookup(name, before: deadline) {
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

        // Body: canonicalized, cut to l=, hashed (as it streamed), compared with bh=.
        let key = Verification.HashKey(canonicalization: signature.bodyCanonicalization, limit: signature.bodyLength)
        let (bodyHash, canonicalLength) = bodyHashes[key] ?? ([], 0)
        if let length = signature.bodyLength, length > canonicalLength {
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
