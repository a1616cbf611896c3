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

    /// The trust roots for an environment, always by Go's search (with
    /// neither variable set, over the distributions' default places), so a
    /// CA file dropped into /etc/ssl/certs counts as it does for chasquid.
    public static func roots(environment: [String: String]) -> NIOSSLTrustRoots {
        let paths = searchPaths(environment: environment)
        return .certificates(certificates(files: paths.files, directories: paths.directories))
    }

    /// Where Go looks: `SSL_CERT_FILE` replaces the file list and
    /// `SSL_CERT_DIR` (`:`-separated) the directory list.
    public static func searchPaths(environment: [String: String]) -> (files: [String], directories: [String]) {
        let file = environment["SSL_CERT_FILE"] ?? ""
        let directories = environment["SSL_CERT_DIR"] ?? ""
        return (
            file.isEmpty ? defaultFiles : [file],
            directories.isEmpty ? defaultDirectories : directories.split(separator: ":").map(String.init)
        )
    }

    /// Larger files are no certificate store (the whole Mozilla bundle is
    /// about 200 KiB).
    static let maximumFileSize = 16 << 20

    /// Every certificate found, once: the first readable file, then each
    /// file in each directory. Only regular files are read (a FIFO or a
    /// device there would block start-up), up to maximumFileSize.
    public static func certificates(files: [String], directories: [String]) -> [NIOSSLCertificate] {
        var found: [NIOSSLCertificate] = []
        var seen = Set<NIOSSLCertificate>()
        func add(_ data: Data) {
            for certificate in parsePEM(data) where seen.insert(certificate).inserted {
                found.append(certificate)
            }
        }
        for file in files {
            guard let data = readRegularFile(file) else { continue }
            add(data)
            break
        }
        for directory in directories {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { continue }
            for name in names.sorted() {
                let path = directory + "/" + name
                if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: path), !target.contains("/") {
                    continue
                }
                if let data = readRegularFile(path) { add(data) }
            }
        }
        return found
    }

    /// The contents of a regular file (symlinks followed) of at most
    /// maximumFileSize bytes; nil for anything else.
    static func readRegularFile(_ path: String) -> Data? {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, Int(info.st_size) <= maximumFileSize else {
            return nil
        }
        return FileManager.default.contents(atPath: path)
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
