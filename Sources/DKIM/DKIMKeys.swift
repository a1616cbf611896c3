import Crypto
import CryptoExtras

import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A DKIM private key as chasquid keeps it: `domains/<domain>/dkim:<selector>.pem`,
/// PKCS#8 PEM ("PRIVATE KEY"), RSA of at least 2048 bits or Ed25519.
public struct DKIMKey: Sendable {
    public enum Algorithm: String, Sendable {
        case rsa
        case ed25519
    }

    public enum Material: Sendable {
        case rsa(_RSA.Signing.PrivateKey)
        case ed25519(Curve25519.Signing.PrivateKey)
    }

    public var selector: String
    public var path: String
    public var material: Material

    public var algorithm: Algorithm {
        switch material {
        case .rsa: .rsa
        case .ed25519: .ed25519
        }
    }

    public struct LoadError: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// The public key as the record's `p=` carries it: the
    /// SubjectPublicKeyInfo DER for RSA (what chasquid and opendkim
    /// publish), the raw 32 bytes for Ed25519 (RFC 8463 §4.2).
    public var publicKeyBytes: [UInt8] {
        switch material {
        case .rsa(let key): Array(key.publicKey.derRepresentation)
        case .ed25519(let key): Array(key.publicKey.rawRepresentation)
        }
    }

    /// The forms of the public key a record may carry and still be this
    /// key: for RSA also the bare PKCS#1 RSAPublicKey, RFC 6376's literal
    /// wording, which some tools publish.
    public var publishedForms: [[UInt8]] {
        switch material {
        case .rsa(let key): [publicKeyBytes, Array(key.publicKey.pkcs1DERRepresentation)]
        case .ed25519: [publicKeyBytes]
        }
    }

    /// The TXT record value to publish at `<selector>._domainkey.<domain>`,
    /// in chasquid-util dkim-dns's form.
    public var recordValue: String {
        "v=DKIM1; k=\(algorithm.rawValue); p=\(Data(publicKeyBytes).base64EncodedString())"
    }

    public init(selector: String, path: String, material: Material) {
        self.selector = selector
        self.path = path
        self.material = material
    }

    /// Parses a PEM key file's text.
    public init(selector: String, path: String, pem: String) throws(LoadError) {
        self.selector = selector
        self.path = path
        guard pem.contains("-----BEGIN PRIVATE KEY-----") else {
            throw LoadError(description: "\(path): not a PKCS#8 \"PRIVATE KEY\" PEM block")
        }
        if let key = try? Curve25519.Signing.PrivateKey(pemRepresentation: pem) {
            material = .ed25519(key)
        } else if let key = try? _RSA.Signing.PrivateKey(pemRepresentation: pem) {
            material = .rsa(key)
        } else {
            throw LoadError(description: "\(path): not an RSA (of at least 2048 bits) or Ed25519 private key")
        }
    }

    /// The file name prefix and suffix around the selector.
    public static let filePrefix = "dkim:"
    public static let fileSuffix = ".pem"

    /// The selector a file name holds, if it is a key file's name.
    public static func selector(fromFileName name: String) -> String? {
        guard name.hasPrefix(filePrefix), name.hasSuffix(fileSuffix),
            name.count > filePrefix.count + fileSuffix.count
        else { return nil }
        return String(name.dropFirst(filePrefix.count).dropLast(fileSuffix.count))
    }

    /// Every key file in a domain's directory, by selector; a file that does
    /// not load is reported, not skipped. A missing directory has no keys.
    public static func load(directory: String) -> [Result<DKIMKey, LoadError>] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        return names.sorted().compactMap { name -> Result<DKIMKey, LoadError>? in
            guard let selector = selector(fromFileName: name) else { return nil }
            let path = directory + "/" + name
            guard let data = FileManager.default.contents(atPath: path) else {
                let why = access(path, R_OK) != 0 && errno == EACCES ? "permission denied" : "cannot be read"
                return .failure(LoadError(description: "open \(path): \(why)"))
            }
            return Result { () throws(LoadError) -> DKIMKey in
                try DKIMKey(selector: selector, path: path, pem: String(decoding: data, as: UTF8.self))
            }
        }
    }
}
