import Crypto
import CryptoExtras
import Foundation
import Normalization
import Testing

@testable import DKIM

/// Tests/Fixtures/dkim, found from this file's path.
func dkimFixtures(file: String = #filePath) -> String {
    var url = URL(fileURLWithPath: file)
    while url.pathComponents.count > 1, url.lastPathComponent != "Tests" { url.deleteLastPathComponent() }
    return url.appendingPathComponent("Fixtures/dkim").standardized.path
}

func fixture(_ path: String) -> [UInt8]? {
    FileManager.default.contents(atPath: dkimFixtures() + "/" + path).map(Array.init)
}

/// Bare LF to CRLF, existing CRLF kept (as chasquid's tests do).
func toCRLF(_ bytes: [UInt8]) -> [UInt8] { CRLFConverter.convert(bytes) }

/// A `.dns` file of chasquid's cases: `name: value` lines, `\`-newline
/// continuations, TEMPERROR / PERMERROR / NOTFOUND.
func lookup(fromDNSFile text: String?) -> @Sendable (String) async -> DKIMKeyLookupResult {
    var records: [String: [String]] = [:]
    for line in (text ?? "").replacingOccurrences(of: "\\\n", with: "").split(separator: "\n") {
        let line = line.trimmingCharacters(in: .whitespaces)
        guard !line.isEmpty, !line.hasPrefix("#"), let colon = line.firstIndex(of: ":") else { continue }
        let name = line[..<colon].trimmingCharacters(in: .whitespaces)
        records[name, default: []].append(line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
    }
    let table = records
    return { name in
        switch table[name] {
        case ["TEMPERROR"]: .temporaryFailure("lookup : temporary error (for testing)")
        case ["PERMERROR"]: .permanentFailure("lookup : permanent error (for testing)")
        case ["NOTFOUND"]: .permanentFailure("lookup \(name): no such host")
        case let found?: .records(found)
        case nil: .permanentFailure("lookup \(name): no such host")
        }
    }
}

struct ChasquidCase: Sendable, CustomTestStringConvertible {
    var name: String
    var testDescription: String { name }
}

let chasquidCases: [ChasquidCase] = {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: dkimFixtures() + "/chasquid")) ?? []
    return names.filter { $0.hasSuffix(".msg") }.sorted().map { ChasquidCase(name: String($0.dropLast(4))) }
}()

struct ExpectedResult: Decodable {
    struct One: Decodable {
        var Error: String?
        var Domain: String
        var Selector: String
        var B: String
        var State: String
    }
    var Found: Int
    var Valid: Int
    var Results: [One]
}

@Suite struct ChasquidVectorTests {
    @Test func theCasesAreThere() {
        #expect(chasquidCases.count == 11)
    }

    @Test(arguments: chasquidCases)
    func verifies(_ testCase: ChasquidCase) async throws {
        let base = "chasquid/" + testCase.name
        let message = toCRLF(try #require(fixture(base + ".msg")))
        let dns = fixture(base + ".dns").map { String(decoding: $0, as: UTF8.self) }
        let verifier = DKIMVerifier(now: { 1_700_000_000 }, lookup: lookup(fromDNSFile: dns))
        let errorText = fixture(base + ".error").map { String(decoding: $0, as: UTF8.self) } ?? "<nil>"
        guard let expectedData = fixture(base + ".result") else {
            // No result: the message does not parse, with the given error.
            await #expect(throws: DKIMMessage.Invalid(description: errorText)) { try await verifier.verify(crlf: message) }
            return
        }
        let expected = try JSONDecoder().decode(ExpectedResult.self, from: Data(expectedData))
        let result = try await verifier.verify(crlf: message)
        #expect(result.found == expected.Found)
        #expect(result.valid == expected.Valid)
        #expect(result.results.count == expected.Results.count)
        for (got, want) in zip(result.results, expected.Results) {
            #expect(got.state.rawValue == want.State)
            #expect(got.domain == want.Domain)
            #expect(got.selector == want.Selector)
            #expect(got.signature == want.B)
            // chasquid's texts, whole.
            if let error = want.Error, !error.isEmpty {
                #expect(got.error == error)
            } else {
                #expect(got.error.isEmpty)
            }
        }
    }

    @Test func authenticationResultsInChasquidsForm() async throws {
        let message = toCRLF(try #require(fixture("chasquid/05-dns_temp_error.msg")))
        let dns = fixture("chasquid/05-dns_temp_error.dns").map { String(decoding: $0, as: UTF8.self) }
        let result = try await DKIMVerifier(lookup: lookup(fromDNSFile: dns)).verify(crlf: message)
        #expect(
            result.authenticationResults
                == ";dkim=temperror  reason=\"lookup : temporary error (for testing)\"\r\n"
                + "  header.b=/gCrinpcQOoI  header.d=football.example.com\r\n"
                + ";dkim=pass  header.b=F45dVWDfMbQD  header.d=football.example.com\r\n")
        #expect(DKIMVerifier.Result(results: []).authenticationResults == ";dkim=none\r\n")
    }
}

struct DkimpyVectors: Decodable {
    struct Verify: Decodable {
        var message: String
        var dns: [String: String]
        var expected: [String]
        var source: String
    }
    struct Sign: Decodable {
        var message: String
        var private_key: String
        var algorithm: String
        var domain: String
        var selector: String
        var identity: String
        var timestamp: Int
        var h_tag_text: String
        var signed_headers: [String]
        var expected_bh: String
        var expected_b: String
    }
    var verify: [Verify]
    var sign: [Sign]
}

@Suite struct DkimpyVectorTests {
    static func vectors() throws -> DkimpyVectors {
        try JSONDecoder().decode(DkimpyVectors.self, from: Data(try #require(fixture("dkimpy/vectors.json"))))
    }

    @Test func verifyVectors() async throws {
        let vectors = try Self.vectors()
        #expect(vectors.verify.count == 7)
        for vector in vectors.verify {
            let message = toCRLF(try #require(fixture("dkimpy/" + vector.message)))
            let table = vector.dns
            let verifier = DKIMVerifier(now: { 1_700_000_000 }) { name in .records(table[name].map { [$0] } ?? []) }
            let result = try await verifier.verify(crlf: message)
            #expect(result.results.map { $0.state == .success ? "pass" : "fail" } == vector.expected, "\(vector.source): \(result)")
        }
    }

    /// RFC 8463 Appendix A.3, reproduced byte for byte: same tags, same h=.
    @Test func rfc8463SignaturesAreReproduced() throws {
        for vector in try Self.vectors().sign {
            let keyText = String(decoding: try #require(fixture("dkimpy/" + vector.private_key)), as: UTF8.self)
            let material: DKIMKey.Material
            if vector.algorithm == "ed25519-sha256" {
                let seed = try #require(Data(base64Encoded: keyText.trimmingCharacters(in: .whitespacesAndNewlines)))
                material = .ed25519(try Curve25519.Signing.PrivateKey(rawRepresentation: seed))
            } else {
                material = .rsa(try _RSA.Signing.PrivateKey(unsafePEMRepresentation: keyText))
            }
            let signer = DKIMSigner(
                domain: vector.domain, key: DKIMKey(selector: vector.selector, path: vector.private_key, material: material))
            let message = try DKIMMessage(crlf: toCRLF(try #require(fixture("dkimpy/" + vector.message))))
            #expect(Data(SHA256.hash(data: DKIMCanonicalization.relaxed.body(message.body))).base64EncodedString() == vector.expected_bh)
            let template =
                "v=1; a=\(vector.algorithm); c=relaxed/relaxed;\r\n d=\(vector.domain); i=\(vector.identity);\r\n"
                + " q=dns/txt; s=\(vector.selector); t=\(vector.timestamp); h=\(vector.h_tag_text);\r\n"
                + " bh=\(vector.expected_bh);\r\n b="
            let b = try signer.signature(of: message, names: vector.signed_headers, template: template)
            #expect(b == vector.expected_b, "\(vector.algorithm)")
        }
    }
}

@Suite struct SignAndVerifyTests {
    static let message = Array(
        ("From: Joe <joe@example.com>\r\nTo: a@b.test\r\nSubject:  Hello   there \r\nDate: Thu, 3 Dec 2026 12:00:00 +0000\r\n"
            + "Message-ID: <1@example.com>\r\n\r\nBody line  with  spaces \r\n\r\n\r\n").utf8)

    static func ed25519Key() throws -> DKIMKey {
        let pem = DKIMKeyTests.pkcs8PEM(ed25519Seed: DKIMKeyTests.rfc8463Private)
        return try DKIMKey(selector: "sel", path: "k.pem", pem: pem)
    }

    @Test func oursVerifiesAndHasChasquidsShape() async throws {
        let key = try Self.ed25519Key()
        let value = try DKIMSigner(domain: "example.com", key: key).sign(crlf: Self.message, now: 1_764_000_000)
        #expect(value.hasPrefix("v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\nd=example.com; s=sel; t=1764000000;\r\n"))
        #expect(value.contains("h=from:subject:date:to:message-id:from:subject:date:to:cc:message-id;\r\n"))
        let signed = Array(("DKIM-Signature: " + value.replacingOccurrences(of: "\r\n", with: "\r\n\t") + "\r\n").utf8) + Self.message
        let record = key.recordValue
        let verifier = DKIMVerifier { name in name == "sel._domainkey.example.com" ? .records([record]) : .records([]) }
        let result = try await verifier.verify(crlf: signed)
        #expect(result.valid == 1, "\(result)")

        // Any change to a signed field or the body fails it.
        let tampered = Array(String(decoding: signed, as: UTF8.self).replacingOccurrences(of: "Hello", with: "Hellp").utf8)
        #expect(try await verifier.verify(crlf: tampered).results.first?.isVerificationFailure == true)
        // An added From (oversigned) fails it too.
        let added = Array("From: evil@x.test\r\n".utf8) + signed
        #expect(try await verifier.verify(crlf: added).valid == 0)
    }

    @Test func rsaSignatureVerifies() async throws {
        let generated = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let key = try DKIMKey(selector: "r", path: "r.pem", pem: generated.pkcs8PEMRepresentation)
        let value = try DKIMSigner(domain: "example.com", key: key).sign(crlf: Self.message, now: 1)
        let signed = Array(("DKIM-Signature: " + value.replacingOccurrences(of: "\r\n", with: "\r\n\t") + "\r\n").utf8) + Self.message
        let record = key.recordValue
        let result = try await DKIMVerifier { _ in .records([record]) }.verify(crlf: signed)
        #expect(result.valid == 1)
    }

    @Test func expiredSignaturesArePermanentErrors() async throws {
        let header = "DKIM-Signature: v=1; a=ed25519-sha256; d=example.com; s=s; h=from; bh=AAAA; b=AAAA; t=10; x=20\r\n"
        let message = Array((header + "From: a@example.com\r\n\r\nx\r\n").utf8)
        let result = try await DKIMVerifier(now: { 30 }) { _ in .records([]) }.verify(crlf: message)
        #expect(result.results.first?.error == "signature expired")
        #expect(result.authenticationResults.hasPrefix(";dkim=permerror  reason=\"signature expired\""))
    }
}

@Suite struct CanonicalizationTests {
    /// RFC 6376 §3.4.5's example.
    @Test func rfcExample() throws {
        let message = try DKIMMessage(crlf: Array("A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n".utf8))
        #expect(message.fields.map { String(decoding: DKIMCanonicalization.relaxed.header($0), as: UTF8.self) } == ["a:X\r\n", "b:Y Z\r\n"])
        #expect(String(decoding: DKIMCanonicalization.relaxed.body(message.body), as: UTF8.self) == " C\r\nD E\r\n")
        #expect(message.fields.map { String(decoding: DKIMCanonicalization.simple.header($0), as: UTF8.self) } == ["A: X\r\n", "B : Y\t\r\n\tZ  \r\n"])
        #expect(String(decoding: DKIMCanonicalization.simple.body(message.body), as: UTF8.self) == " C \r\nD \t E\r\n")
    }

    @Test func emptyBodies() {
        #expect(DKIMCanonicalization.simple.body([]) == [0x0D, 0x0A])
        #expect(DKIMCanonicalization.relaxed.body(Array("\r\n\r\n".utf8)) == [])
        // A last line without CRLF gets one.
        #expect(DKIMCanonicalization.relaxed.body(Array("x".utf8)) == Array("x\r\n".utf8))
    }

    /// Chunk boundaries anywhere (inside a CRLF, a WSP run, trailing empty
    /// lines) give the same hash as the whole body.
    @Test(arguments: [DKIMCanonicalization.simple, .relaxed])
    func streamingMatchesWholeBodies(_ canonicalization: DKIMCanonicalization) {
        let bodies = [
            "", "\r\n", "\r\n\r\n", "x", "a \t b  \r\n\r\n c\t\r\n\r\n\r\n", "lone\rcr\r\n", "end cr\r",
            "  \r\n  \r\n", "tab\t\r\n\t\r\nz", "\n\nbare lf\n",
        ]
        for body in bodies {
            let bytes = Array(body.utf8)
            let whole = Array(SHA256.hash(data: canonicalization.body(bytes)))
            for size in 1...4 {
                var hasher = DKIMBodyHasher(canonicalization: canonicalization)
                var index = 0
                while index < bytes.count {
                    hasher.feed(bytes[index..<min(index + size, bytes.count)])
                    index += size
                }
                #expect(hasher.finish() == whole, "\(body.debugDescription) in chunks of \(size)")
            }
        }
    }

    @Test func lengthLimitCutsTheCanonicalBody() {
        var hasher = DKIMBodyHasher(canonicalization: .relaxed, limit: 3)
        hasher.feed(Array("abcdef\r\n".utf8))
        #expect(hasher.finish() == Array(SHA256.hash(data: Array("abc".utf8))))
        #expect(hasher.canonicalLength == 8)
    }

    @Test func bRemovalWalksTheTagList() {
        let source = Array("DKIM-Signature: v=1; bh=AAA=; b=XYZ\r\n  W==; h=from".utf8)
        #expect(String(decoding: DKIMSignatureHeader.removingSignature(from: source), as: UTF8.self) == "DKIM-Signature: v=1; bh=AAA=; b=; h=from")
    }
}

@Suite struct HostileInputTests {
    static func signedMessage() throws -> (message: [UInt8], record: String, key: DKIMKey) {
        let key = try SignAndVerifyTests.ed25519Key()
        let value = try DKIMSigner(domain: "example.com", key: key).sign(crlf: SignAndVerifyTests.message, now: 1)
        let signed = Array(("DKIM-Signature: " + value.replacingOccurrences(of: "\r\n", with: "\r\n\t") + "\r\n").utf8)
            + SignAndVerifyTests.message
        return (signed, key.recordValue, key)
    }

    static func verify(_ message: [UInt8], record: String) async throws -> DKIMVerifier.SignatureResult? {
        try await DKIMVerifier { _ in .records([record]) }.verify(crlf: message).results.first
    }

    @Test func aLoneCRAddedToASignedFieldBreaksTheSignature() async throws {
        let (signed, record, _) = try Self.signedMessage()
        #expect(try await Self.verify(signed, record: record)?.state == .success)
        let text = String(decoding: signed, as: UTF8.self)
        let withCR = Array(text.replacingOccurrences(of: "Subject:  Hello   there \r\n", with: "Subject:  Hello   there \r\r\n").utf8)
        #expect(try await Self.verify(withCR, record: record)?.state == .permanentFailure)
    }

    @Test func keyRecordsThatDoNotServeTheSignatureFail() async throws {
        let (signed, record, _) = try Self.signedMessage()
        for bad in [record + "; h=sha1", record + "; s=tlsrpt", record.replacingOccurrences(of: "k=ed25519", with: "k=rsa")] {
            let result = try await Self.verify(signed, record: bad)
            #expect(result?.error == "verification failed", "\(bad)")
        }
        let revoked = try await Self.verify(signed, record: "v=DKIM1; k=ed25519; p=")
        #expect(revoked?.error == "verification failed")
    }

    @Test func noKeyAtTheNameIsPermerror() async throws {
        let (signed, _, _) = try Self.signedMessage()
        let result = try await DKIMVerifier { name in .permanentFailure("lookup \(name): no such host") }.verify(crlf: signed)
        #expect(result.authenticationResults.hasPrefix(";dkim=permerror  reason=\"lookup sel._domainkey.example.com: no such host\""))
    }

    @Test func headerSyntaxProblems() {
        let cases: [(String, String)] = [
            ("v=1; a=ed25519-sha256; a=rsa-sha256", "invalid tag: duplicate tag"),
            ("v=1; a=; d=x; s=y; h=from; bh=AAAA; b=AAAA", "invalid a= tag"),
            ("v=1; a=rsa-sha1; d=x; s=y; h=from; bh=AAAA; b=AAAA", "unsupported hash: rsa-sha1"),
            ("v=1; a=dsa-sha256; d=x; s=y; h=from; bh=AAAA; b=AAAA", "unsupported key type: dsa-sha256"),
            ("v=1; a=rsa-sha256; d=x; s=y; h=to; bh=AAAA; b=AAAA", "invalid tag: h= does not contain 'from'"),
            ("v=1; a=rsa-sha256; d=x.test; i=a@y.test; s=y; h=from; bh=AAAA; b=AAAA", "invalid tag: i= is not a subdomain of d="),
            ("v=1; a=rsa-sha256; d=legit.com(.evil.com; s=y; h=from; bh=AAAA; b=AAAA", "invalid tag: d= is not a domain name"),
            ("v=1; a=rsa-sha256; d=x; s=y; h=from; bh=AAAA; b=AAAA; l=99999999999999999999", "invalid signature: failed to parse l"),
            ("v=1; a=rsa-sha256; d=x; s=y; h=from; bh=AAAA; b=AAAA; q=http", "invalid signature: no dns/txt query method in q"),
        ]
        for (value, error) in cases {
            #expect(throws: DKIMSignatureHeader.Invalid(error), "\(value)") { try DKIMSignatureHeader(parsing: value) }
        }
    }

    @Test func bInsideAnotherTagIsNotTheSignature() {
        let source = Array("DKIM-Signature: v=1; z=From:x|b=q; bh=AA; b=XYZ".utf8)
        #expect(String(decoding: DKIMSignatureHeader.removingSignature(from: source), as: UTF8.self) == "DKIM-Signature: v=1; z=From:x|b=q; bh=AA; b=")
    }

    @Test func lLongerThanTheBodyIsPermerror() async throws {
        let (signed, record, _) = try Self.signedMessage()
        let text = String(decoding: signed, as: UTF8.self).replacingOccurrences(of: "c=relaxed/relaxed;", with: "c=relaxed/relaxed; l=100000;")
        #expect(try await Self.verify(Array(text.utf8), record: record)?.error == "body shorter than l=")
    }

    @Test func aSignatureNeverSignsItselfEvenWhenNamed() throws {
        let message = try DKIMMessage(crlf: Array("DKIM-Signature: v=1\r\nFrom: a\r\n\r\n".utf8))
        let picked = message.selected(byNames: ["from", "dkim-signature"], excluding: 0)
        #expect(picked.map(\.name) == ["From"])
    }

    @Test func manyTagsOrFieldsAreRefusedQuickly() {
        let manyTags = (0..<10_000).map { "a\($0)=x" }.joined(separator: ";")
        #expect(throws: DKIMTagList.Invalid(description: "invalid tag: too many tags")) { try DKIMTagList(parsing: manyTags) }
        let manyFields = "v=1; a=rsa-sha256; d=x; s=y; bh=AAAA; b=AAAA; h=from" + String(repeating: ":to", count: 600)
        #expect(throws: DKIMSignatureHeader.Invalid("invalid tag: h= names too many fields")) { try DKIMSignatureHeader(parsing: manyFields) }
    }

    @Test func exactCanonicalBodies() {
        let relaxed: [(String, String)] = [
            ("a \t b  \r\n\r\n c\t\r\n\r\n\r\n", "a b\r\n\r\n c\r\n"),
            ("x  ", "x \r\n"),
            ("  \r\n  \r\n", ""),
            ("lone\rcr\r\n", "lone\rcr\r\n"),
            ("", ""),
        ]
        for (body, want) in relaxed {
            #expect(String(decoding: DKIMCanonicalization.relaxed.body(Array(body.utf8)), as: UTF8.self) == want, "\(body.debugDescription)")
        }
        let simple: [(String, String)] = [("a  \r\n\r\n\r\n", "a  \r\n"), ("", "\r\n"), ("\r\n\r\n", "\r\n"), ("x", "x\r\n")]
        for (body, want) in simple {
            #expect(String(decoding: DKIMCanonicalization.simple.body(Array(body.utf8)), as: UTF8.self) == want, "\(body.debugDescription)")
        }
    }
}
