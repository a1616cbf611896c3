import Crypto
import CryptoExtras
import Foundation
import Testing

@testable import DKIM

@Suite struct DKIMKeyTests {
    /// RFC 8463 §A.2's Ed25519 key, wrapped in PKCS#8 as chasquid keeps it.
    static let rfc8463Private = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
    static let rfc8463Public = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="

    static func pkcs8PEM(ed25519Seed base64: String) -> String {
        let prefix: [UInt8] = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]
        let der = Data(prefix + Array(Data(base64Encoded: base64)!))
        return "-----BEGIN PRIVATE KEY-----\n\(der.base64EncodedString())\n-----END PRIVATE KEY-----\n"
    }

    @Test func ed25519RecordIsTheRFCsPublicKey() throws {
        let key = try DKIMKey(selector: "brisbane", path: "k.pem", pem: Self.pkcs8PEM(ed25519Seed: Self.rfc8463Private))
        #expect(key.algorithm == .ed25519)
        #expect(key.recordValue == "v=DKIM1; k=ed25519; p=\(Self.rfc8463Public)")
    }

    @Test func rsaRecordIsTheSubjectPublicKeyInfo() throws {
        let generated = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let key = try DKIMKey(selector: "s", path: "k.pem", pem: generated.pkcs8PEMRepresentation)
        #expect(key.algorithm == .rsa)
        #expect(key.publicKeyBytes == Array(generated.publicKey.derRepresentation))
        #expect(key.recordValue.hasPrefix("v=DKIM1; k=rsa; p=MII"))
        // A record with the bare PKCS#1 key is the same key.
        #expect(key.publishedForms.contains(Array(generated.publicKey.pkcs1DERRepresentation)))
    }

    @Test func otherPEMBlocksAreRefusedNamingTheFile() throws {
        let generated = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        // PKCS#1 ("RSA PRIVATE KEY") is not what chasquid reads.
        #expect(throws: DKIMKey.LoadError.self) {
            try DKIMKey(selector: "s", path: "/x/dkim:s.pem", pem: generated.pemRepresentation)
        }
        do {
            _ = try DKIMKey(selector: "s", path: "/x/dkim:s.pem", pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            Issue.record("a garbage key loaded")
        } catch {
            #expect(error.description.hasPrefix("/x/dkim:s.pem: "))
        }
    }

    @Test func selectorsFromFileNames() {
        #expect(DKIMKey.selector(fromFileName: "dkim:20240101.pem") == "20240101")
        #expect(DKIMKey.selector(fromFileName: "dkim:.pem") == nil)
        #expect(DKIMKey.selector(fromFileName: "users") == nil)
        #expect(DKIMKey.selector(fromFileName: "dkim:s.pem~") == nil)
    }

    @Test func loadsADirectoryReportingBadFiles() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dkimkeys-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Self.pkcs8PEM(ed25519Seed: Self.rfc8463Private).write(toFile: directory + "/dkim:good.pem", atomically: true, encoding: .utf8)
        try "junk".write(toFile: directory + "/dkim:bad.pem", atomically: true, encoding: .utf8)
        try "".write(toFile: directory + "/aliases", atomically: true, encoding: .utf8)
        let loaded = DKIMKey.load(directory: directory)
        #expect(loaded.count == 2)
        guard case .failure(let error) = loaded[0], case .success(let key) = loaded[1] else {
            Issue.record("unexpected \(loaded)")
            return
        }
        #expect(error.description.contains("dkim:bad.pem"))
        #expect(key.selector == "good")
        #expect(DKIMKey.load(directory: directory + "/none").isEmpty)
    }
}

@Suite struct DKIMRecordTests {
    @Test func tagLists() throws {
        let list = try DKIMTagList(parsing: " v = DKIM1 ;k=rsa;\r\n\tp=AB CD; ")
        #expect(list.tags.map(\.name) == ["v", "k", "p"])
        #expect(list["p"] == "AB CD")
        #expect(throws: DKIMTagList.Invalid.self) { try DKIMTagList(parsing: "a=1; a=2") }
        #expect(throws: DKIMTagList.Invalid.self) { try DKIMTagList(parsing: "a=1; novalue") }
        #expect(throws: DKIMTagList.Invalid.self) { try DKIMTagList(parsing: "1a=1") }
        #expect(try DKIMTagList(parsing: "").tags.isEmpty)
    }

    @Test func keyRecords() throws {
        let record = try DKIMKeyRecord(parsing: "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQH\r\n Og7hcvPapiMlrwIaaPcHURo=")
        #expect(record.keyType == "ed25519")
        #expect(Data(record.publicKey).base64EncodedString() == DKIMKeyTests.rfc8463Public)
        #expect(try DKIMKeyRecord(parsing: "p=").publicKey.isEmpty)
        #expect(try DKIMKeyRecord(parsing: "k=ED25519; p=11qYAYKxCrfVS/7TyWQH\nOg7hcvPapiMlrwIaaPcHURo=").keyType == "ed25519")
        #expect(try DKIMKeyRecord(parsing: "p=11qYAYKxCrfVS/7TyWQH\rOg7hcvPapiMlrwIaaPcHURo=").publicKey.count == 32)
        #expect(try DKIMKeyRecord(parsing: "p=AAAA").keyType == "rsa")
        #expect(throws: DKIMTagList.Invalid.self) { try DKIMKeyRecord(parsing: "k=rsa; v=DKIM1; p=AAAA") }
        #expect(throws: DKIMTagList.Invalid.self) { try DKIMKeyRecord(parsing: "v=DKIM1; k=rsa") }
        #expect(throws: DKIMTagList.Invalid.self) { try DKIMKeyRecord(parsing: "v=DKIM1; p=!!") }
    }
}
