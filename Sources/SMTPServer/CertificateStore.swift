import DurableFiles
import Foundation
import NIOCore
import NIOSSL
import Normalization
import Synchronization

/// The server's certificates, one per directory under `certs/` (certbot's
/// layout: `fullchain.pem` and `privkey.pem`), and the TLS contexts made from
/// them. A TLS client's SNI name picks the certificate; without SNI, or with
/// a name we have none for, the one covering `hostname` is used, and the
/// first one loaded when none does (chasquid always takes the first, which
/// gives clients that send no SNI the alphabetically first domain's
/// certificate; docs/compatibility.md).
///
/// `reload` reads the directory again (on SIGHUP, after certbot renewed):
/// new connections get the new certificates, live ones keep theirs.
public final class CertificateStore: Sendable {
    public struct Entry: Sendable {
        public var directory: String
        /// Lower-case DNS names: the directory's name and the certificate's SANs.
        public var names: [String]
        public var context: NIOSSLContext
    }

    public let certsDirectory: String
    /// The server's `hostname`, lowercased: whose certificate a client
    /// without SNI gets.
    public let hostname: String
    private let current: Mutex<[Entry]>

    public var entries: [Entry] { current.withLock { $0 } }

    public struct LoadError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Loads `certsDirectory`. Entries without both PEM files are skipped
    /// (reported in `skipped`); a pair that fails to load is an error.
    public init(certsDirectory: String, hostname: String = "", skipped: (String) -> Void = { _ in }) throws(LoadError) {
        self.certsDirectory = certsDirectory
        var hostname = hostname.lowercased()
        if hostname.hasSuffix(".") { hostname.removeLast() }
        self.hostname = hostname
        current = Mutex(try Self.load(certsDirectory, skipped: skipped))
    }

    /// Loads the directory again; on error the current certificates stay.
    public func reload(skipped: (String) -> Void = { _ in }) throws(LoadError) {
        let fresh = try Self.load(certsDirectory, skipped: skipped)
        current.withLock { $0 = fresh }
    }

    private static func load(_ certsDirectory: String, skipped: (String) -> Void) throws(LoadError) -> [Entry] {
        let fm = FileManager.default
        let names: [String]
        do {
            names = try DirectoryListing.names(atPath: certsDirectory)
        } catch {
            throw LoadError(description: "Error reading \"\(certsDirectory)\" directory: \(error)")
        }
        if names.isEmpty { throw LoadError(description: "No entries found in \"\(certsDirectory)\"") }
        var entries: [Entry] = []
        let parent = certsDirectory.hasSuffix("/") ? String(certsDirectory.dropLast()) : certsDirectory
        for name in names {
            let directory = parent + "/" + name
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else { continue }
            let chainPath = directory + "/fullchain.pem"
            let keyPath = directory + "/privkey.pem"
            guard fm.fileExists(atPath: chainPath), fm.fileExists(atPath: keyPath) else {
                skipped("Skipping \(directory): missing fullchain.pem or privkey.pem")
                continue
            }
            // The library only says which step failed, in its own words:
            // each step's error names the file and the usual cause.
            func fail(_ reason: String) -> LoadError {
                LoadError(description: "Error loading certificate in \(directory): \(reason)")
            }
            do {
                // A file the daemon's user cannot read is the usual cause.
                try DirectoryListing.checkReadable(chainPath)
                try DirectoryListing.checkReadable(keyPath)
            } catch {
                throw fail("\(error)")
            }
            // Go's words where chasquid has them (tls.LoadX509KeyPair's),
            // with the file named; else the library's.
            let chain: [NIOSSLCertificate]
            let noCertificate = fail("tls: failed to find any PEM data in certificate input (\(chainPath))")
            do {
                chain = try NIOSSLCertificate.fromPEMFile(chainPath)
            } catch NIOSSLError.failedToLoadCertificate {
                throw noCertificate
            } catch {
                throw fail("\(chainPath): not a valid PEM certificate chain: \(error)")
            }
            if chain.isEmpty { throw noCertificate }
            let key: NIOSSLPrivateKey
            do {
                key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
            } catch {
                throw fail("tls: failed to find any PEM data in key input (\(keyPath), or the key is encrypted)")
            }
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
            configuration.minimumTLSVersion = .tlsv12
            let context: NIOSSLContext
            do {
                context = try NIOSSLContext(configuration: configuration)
            } catch NIOSSLError.failedToLoadPrivateKey {
                // OpenSSL refuses a key that is not the leaf certificate's.
                throw fail(
                    "tls: private key does not match public key (\(keyPath) is not the key of the first certificate in \(chainPath))"
                )
            } catch {
                throw fail("\(error)")
            }
            var dnsNames = [name.lowercased()]
            for san in chain[0]._subjectAlternativeNames() where san.nameType == .dnsName {
                let dnsName = String(decoding: Array(san.contents), as: UTF8.self).lowercased()
                if !dnsNames.contains(dnsName) { dnsNames.append(dnsName) }
            }
            entries.append(Entry(directory: directory, names: dnsNames, context: context))
        }
        if entries.isEmpty { throw LoadError(description: "At least one valid certificate is needed") }
        return entries
    }

    /// The certificate for a client's SNI name (an exact match, then a
    /// wildcard, then the default), and the name itself when it
    /// is one we may adopt: a valid hostname (LDH labels of 1-63 octets, at
    /// most 253 in all) that a certificate covers exactly or by wildcard,
    /// lowercased and without a final dot; else the default certificate and
    /// nil.
    public func selection(forServerName serverName: String?) -> (context: NIOSSLContext, certifiedName: String?) {
        let entries = self.entries
        guard var name = serverName?.lowercased(), !name.isEmpty else { return (defaultEntry(in: entries).context, nil) }
        if name.hasSuffix(".") { name.removeLast() }
        guard let entry = Self.entry(covering: name, in: entries) else { return (defaultEntry(in: entries).context, nil) }
        return (entry.context, Self.isHostname(name) ? name : nil)
    }

    /// The certificate covering `hostname`, else the first one loaded.
    func defaultEntry(in entries: [Entry]) -> Entry {
        (hostname.isEmpty ? nil : Self.entry(covering: hostname, in: entries)) ?? entries[0]
    }

    /// The directory of the certificate a client without SNI gets.
    public var defaultDirectory: String { defaultEntry(in: entries).directory }

    static func entry(covering name: String, in entries: [Entry]) -> Entry? {
        if let exact = entries.first(where: { $0.names.contains(name) }) { return exact }
        guard let dot = name.firstIndex(ofScalar: ".") else { return nil }
        let wildcard = "*" + name[dot...]
        return entries.first { $0.names.contains(wildcard) }
    }

    static func isHostname(_ name: String) -> Bool {
        guard name.utf8.count <= 253 else { return false }
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                && label.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }
        }
    }
}
