import Foundation
import NIOSSL

/// The roots that verify outgoing TLS, found as Go's crypto/x509 finds
/// them on Linux (chasquid's behaviour, so an admin's CA setup carries
/// over):
/// - the first readable file of `SSL_CERT_FILE`, or else of Go's list of
///   distribution bundles;
/// - plus every file in each directory of `SSL_CERT_DIR` (`:`-separated),
///   or else of `/etc/ssl/certs` and `/etc/pki/tls/certs`, each read as
///   PEM: no hashed names needed, so a CA dropped in as `ca.pem` counts.
/// Symlinks to a name in the same directory (the hash links) are skipped,
/// as Go skips them; a block that does not parse is skipped, not fatal.
public enum TrustStore {
    public static let defaultFiles = [
        "/etc/ssl/certs/ca-certificates.crt",  // Debian, Ubuntu, Gentoo
        "/etc/pki/tls/certs/ca-bundle.crt",  // Fedora, RHEL 6
        "/etc/ssl/ca-bundle.pem",  // OpenSUSE
        "/etc/pki/tls/cacert.pem",  // OpenELEC
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  // CentOS, RHEL 7
        "/etc/ssl/cert.pem",  // Alpine
    ]
    public static let defaultDirectories = ["/etc/ssl/certs", "/etc/pki/tls/certs"]

    /// The trust roots for an environment: the library's default when
    /// neither variable is set (the same system store), else Go's search.
    public static func roots(environment: [String: String]) -> NIOSSLTrustRoots {
        let file = environment["SSL_CERT_FILE"] ?? ""
        let directories = environment["SSL_CERT_DIR"] ?? ""
        if file.isEmpty && directories.isEmpty { return .default }
        return .certificates(
            certificates(
                files: file.isEmpty ? defaultFiles : [file],
                directories: directories.isEmpty ? defaultDirectories : directories.split(separator: ":").map(String.init)))
    }

    /// Every certificate found: the first readable file, then each file in
    /// each directory.
    public static func certificates(files: [String], directories: [String]) -> [NIOSSLCertificate] {
        var found: [NIOSSLCertificate] = []
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            found += parsePEM(data)
            break
        }
        for directory in directories {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { continue }
            for name in names.sorted() {
                let path = directory + "/" + name
                if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: path), !target.contains("/") {
                    continue
                }
                if let data = FileManager.default.contents(atPath: path) { found += parsePEM(data) }
            }
        }
        return found
    }

    /// The CERTIFICATE blocks of a PEM text, each parsed alone, so one bad
    /// block costs only itself (Go's AppendCertsFromPEM).
    static func parsePEM(_ data: Data) -> [NIOSSLCertificate] {
        let text = String(decoding: data, as: UTF8.self)
        let begin = "-----BEGIN CERTIFICATE-----"
        let end = "-----END CERTIFICATE-----"
        var certificates: [NIOSSLCertificate] = []
        var rest = text[...]
        while let start = rest.range(of: begin) {
            guard let stop = rest.range(of: end, range: start.upperBound..<rest.endIndex) else { break }
            let block = String(rest[start.lowerBound..<stop.upperBound]) + "\n"
            if let parsed = try? NIOSSLCertificate.fromPEMBytes(Array(block.utf8)) { certificates += parsed }
            rest = rest[stop.upperBound...]
        }
        return certificates
    }
}
