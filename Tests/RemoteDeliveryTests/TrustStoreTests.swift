import Foundation
import NIOSSL
import Testing

@testable import RemoteDelivery

/// Outgoing TLS roots found as Go's crypto/x509 finds them on Linux.
@Suite struct TrustStoreTests {
    static let caOne = """
-----BEGIN CERTIFICATE-----
MIIBgzCCASmgAwIBAgIUHDFD1Yz0awkRnVPp2olgM3fsNnMwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLVGVzdCBDQSBvbmUwIBcNMjYxMjAyMDg1MDA0WhgPMjEyNjEx
MDgwODUwMDRaMBYxFDASBgNVBAMMC1Rlc3QgQ0Egb25lMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEIZUfIm6XMYCj4pqBxii+pPs2C+eNXFhh6Jgz6su21RYnqanM
og08NV7fy69+M8XFTjD3iabOKkY/nZKRO4aIiKNTMFEwHQYDVR0OBBYEFKDg9egD
Xw5xa7tG9P+4eoiNd1nEMB8GA1UdIwQYMBaAFKDg9egDXw5xa7tG9P+4eoiNd1nE
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAI5ZZM+MECbdbvqj
oRYTvVDrV1BKPZYr3fZaIsASYElfAiBoL8gA9L1YsuEpTBo6O7n6FqEQ+Xr2vWb6
i4E69zuqjA==
-----END CERTIFICATE-----
"""
    static let caTwo = """
-----BEGIN CERTIFICATE-----
MIIBgjCCASmgAwIBAgIUShuMAF9w+3aJbcGdlk82gSfWAo8wCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLVGVzdCBDQSB0d28wIBcNMjYxMjAyMDg1MDA0WhgPMjEyNjEx
MDgwODUwMDRaMBYxFDASBgNVBAMMC1Rlc3QgQ0EgdHdvMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEq49b6wKRQ57tZ5fEKtMPsP3wsDD0t02Ohpwj7vv+9nYR/9jA
eoC7B6NUmwVKQPZ+zCPd6j7T+PEfE0MGrN9j3aNTMFEwHQYDVR0OBBYEFJIMFRGD
j1Ouyh7v+pyxm+X7RXbAMB8GA1UdIwQYMBaAFJIMFRGDj1Ouyh7v+pyxm+X7RXbA
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgXO29meyYd/i5ssEt
egUH4ufbp6dNGmgK8T/TOMqfgKsCIDhx440f/6t//ewH3LStUcUhXg0lPapnglPM
4HwUD0ry
-----END CERTIFICATE-----
"""

    func scratch() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("truststore-\(UUID())").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func names(_ certificates: [NIOSSLCertificate]) -> Set<String> {
        Set(certificates.map { "\($0)" })
    }

    /// Any file name in a directory counts, not only OpenSSL's hashed ones.
    @Test func everyFileInTheDirectoryIsRead() throws {
        let directory = try scratch()
        try Self.caOne.write(toFile: directory + "/ca.pem", atomically: true, encoding: .utf8)
        try "not a certificate\n".write(toFile: directory + "/README", atomically: true, encoding: .utf8)
        let found = TrustStore.certificates(files: [], directories: [directory])
        #expect(found.count == 1)
        #expect(found.first.map { "\($0)" }?.contains("Test CA one") == true)
    }

    @Test func directoriesAreColonSeparatedAndAddToTheFile() throws {
        let one = try scratch(), two = try scratch(), bundle = try scratch() + "/bundle.pem"
        try Self.caOne.write(toFile: one + "/a.crt", atomically: true, encoding: .utf8)
        try Self.caTwo.write(toFile: two + "/b", atomically: true, encoding: .utf8)
        try Self.caOne.write(toFile: bundle, atomically: true, encoding: .utf8)
        guard case .certificates(let roots) = TrustStore.roots(
            environment: ["SSL_CERT_DIR": "\(one):\(two)", "SSL_CERT_FILE": bundle])
        else {
            Issue.record("expected explicit certificates")
            return
        }
        // caOne from the bundle (found again in `one`, kept once), caTwo
        // only from the second directory.
        #expect(roots.count == 2)
        let second = try NIOSSLCertificate.fromPEMBytes(Array(Self.caTwo.utf8))
        #expect(roots.contains(second[0]))
    }

    /// Only the first readable file of the list is used, as in Go.
    @Test func firstReadableFileWins() throws {
        let directory = try scratch()
        try Self.caOne.write(toFile: directory + "/one.pem", atomically: true, encoding: .utf8)
        try Self.caTwo.write(toFile: directory + "/two.pem", atomically: true, encoding: .utf8)
        let found = TrustStore.certificates(
            files: [directory + "/missing.pem", directory + "/two.pem", directory + "/one.pem"], directories: [])
        #expect(found.count == 1)
        #expect(found.first.map { "\($0)" }?.contains("Test CA two") == true)
    }

    /// Hash links to a name in the same directory are skipped (no double
    /// reading); a bad block costs only itself.
    @Test func sameDirectoryLinksSkippedAndBadBlocksIgnored() throws {
        let directory = try scratch()
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        try (broken + Self.caOne).write(toFile: directory + "/ca.pem", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: directory + "/1a2b3c4d.0", withDestinationPath: "ca.pem")
        #expect(TrustStore.certificates(files: [], directories: [directory]).count == 1)
    }

    /// With neither variable, Go's own lists, not the TLS library's
    /// hashed-directory lookup.
    @Test func withNeitherVariableGosDefaultPlacesAreSearched() {
        let paths = TrustStore.searchPaths(environment: ["PATH": "/bin"])
        #expect(paths.files == TrustStore.defaultFiles)
        #expect(paths.directories == ["/etc/ssl/certs", "/etc/pki/tls/certs"])
        let given = TrustStore.searchPaths(environment: ["SSL_CERT_FILE": "/x/ca.pem", "SSL_CERT_DIR": "/a:/b"])
        #expect(given.files == ["/x/ca.pem"])
        #expect(given.directories == ["/a", "/b"])
    }

    /// The same certificate in the bundle and as a file of the directory
    /// (as Debian's /etc/ssl/certs has it) is kept once.
    @Test func aCertificateFoundTwiceIsKeptOnce() throws {
        let directory = try scratch()
        try (Self.caOne + Self.caTwo).write(toFile: directory + "/bundle.crt", atomically: true, encoding: .utf8)
        try Self.caOne.write(toFile: directory + "/one.pem", atomically: true, encoding: .utf8)
        #expect(TrustStore.certificates(files: [directory + "/bundle.crt"], directories: [directory]).count == 2)
    }

    /// Only regular files are read: a FIFO in the directory would block.
    @Test func aFIFOInTheDirectoryIsSkipped() throws {
        let directory = try scratch()
        try Self.caOne.write(toFile: directory + "/ca.pem", atomically: true, encoding: .utf8)
        #expect(mkfifo(directory + "/pipe", 0o644) == 0)
        #expect(TrustStore.certificates(files: [directory + "/pipe"], directories: [directory]).count == 1)
    }
}
