import Crypto
import CryptoExtras
import DKIM
import DNS
import Foundation
import GoCompat
import Normalization

#if canImport(Glibc)
import Glibc
#endif

/// chasquid-util's DKIM commands (COMPAT.md §17; chasquid's docs/dkim.md):
/// `dkim-keygen`, `dkim-dns`, and the test helpers `dkim-sign` and
/// `dkim-verify`, which read a message on stdin.
extension AdminTool {
    func keyPath(domain: String, selector: String) -> String {
        (configDirectory + "/domains/" + domain + "/" + DKIMKey.filePrefix + selector + DKIMKey.fileSuffix)
            .replacingOccurrences(of: "//", with: "/")
    }

    /// The selector given, or the first `dkim:*.pem` of the domain, by
    /// name, as chasquid's glob finds it.
    func selector(_ given: String?, domain: String) throws(Failure) -> String {
        if let given { return given }
        return try firstSelector(domain: domain)
    }

    func firstSelector(domain: String) throws(Failure) -> String {
        let directory = configDirectory + "/domains/" + domain
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
        guard let selector = names.lazy.compactMap(DKIMKey.selector(fromFileName:)).first else {
            throw Failure("No DKIM keys found in \(goQuoted(directory + "/dkim:*.pem"))")
        }
        return selector
    }

    func loadKey(path: String, selector: String) throws(Failure) -> DKIMKey {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = String(cString: strerror(errno))
            throw Failure("Error reading private key from \(goQuoted(path)): open \(path): \(reason.lowercased())")
        }
        // chasquid's checks, in its order: a PEM block, of type PRIVATE KEY
        // (PKCS#8), that parses.
        let text = String(decoding: data, as: UTF8.self)
        guard let begin = text.range(of: "-----BEGIN "), let end = text[begin.upperBound...].range(of: "-----") else {
            throw Failure("Error decoding PEM block")
        }
        let type = String(text[begin.upperBound..<end.lowerBound])
        guard type.uppercased() == "PRIVATE KEY" else { throw Failure("Unsupported key type: \(type)") }
        do {
            return try DKIMKey(selector: selector, path: path, pem: text)
        } catch {
            throw Failure("Error parsing private key: \(error)")
        }
    }

    /// chasquid-util's DNS line: name, tab, TXT, tab, the quoted value.
    static func dnsLine(domain: String, key: DKIMKey) -> String {
        "\(key.selector)._domainkey.\(domain)\tTXT\t\"\(key.recordValue)\""
    }

    func dkimDNS() throws(Failure) {
        guard let domain = arguments.positional(1), !domain.isEmpty else {
            throw Failure("Error: missing domain parameter")
        }
        let selector = try selector(arguments.positional(2), domain: domain)
        let path = arguments.positional(3) ?? keyPath(domain: domain, selector: selector)
        console.out(Self.dnsLine(domain: domain, key: try loadKey(path: path, selector: selector)))
    }

    func dkimKeygen() throws(Failure) {
        guard let domain = arguments.positional(1), !domain.isEmpty else {
            throw Failure("Error: missing domain parameter")
        }
        let selector = arguments.positional(2) ?? Self.todaySelector()
        let path = arguments.positional(3) ?? keyPath(domain: domain, selector: selector)
        if FileManager.default.fileExists(atPath: path) || (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) != nil {
            throw Failure("Error: key already exists at \(goQuoted(path))")
        }
        let material: DKIMKey.Material
        let pem: String
        do {
            switch arguments.options["--algo"] ?? "" {
            case "", "rsa3072":
                let key = try _RSA.Signing.PrivateKey(keySize: .bits3072)
                (material, pem) = (.rsa(key), key.pkcs8PEMRepresentation)
            case "rsa4096":
                let key = try _RSA.Signing.PrivateKey(keySize: .bits4096)
                (material, pem) = (.rsa(key), key.pkcs8PEMRepresentation)
            case "ed25519":
                let key = Curve25519.Signing.PrivateKey()
                (material, pem) = (.ed25519(key), key.pemRepresentation)
            case let other:
                throw Failure("Error: unsupported algorithm \(goQuoted(other))")
            }
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure("Error generating key: \(error)")
        }
        // O_EXCL: never overwrite, even a file made since the check above.
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o660)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno)).lowercased()
            throw Failure("Error creating key file \(goQuoted(path)): open \(path): \(reason)")
        }
        var bytes = Array((pem.hasSuffix("\n") ? pem : pem + "\n").utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else {
                close(fd)
                throw Failure("Error PEM-encoding key: write \(path): \(String(cString: strerror(errno)).lowercased())")
            }
            bytes = bytes.dropFirst(written)
        }
        guard fsync(fd) == 0, close(fd) == 0 else {
            throw Failure("Error PEM-encoding key: close \(path): \(String(cString: strerror(errno)).lowercased())")
        }
        console.out("Key written to \(goQuoted(path))\n")
        console.out(Self.dnsLine(domain: domain, key: DKIMKey(selector: selector, path: path, material: material)))
    }

    /// Today in UTC as YYYYMMDD, chasquid's default selector.
    static func todaySelector() -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd"
        return formatter.string(from: Date())
    }

    func dkimSign() throws(Failure) {
        let message = CRLFConverter.convert(console.readInput())
        let domain: String
        if let given = arguments.positional(1) { domain = given } else { domain = try Self.fromDomain(message) }
        let selector = try selector(arguments.positional(2), domain: domain)
        let path = arguments.positional(3) ?? keyPath(domain: domain, selector: selector)
        let key = try loadKey(path: path, selector: selector)
        let value: String
        do {
            value = try DKIMSigner(domain: domain, key: key).sign(crlf: message, now: Int(Date().timeIntervalSince1970))
        } catch {
            throw Failure("Error signing message: \(error)")
        }
        console.write("DKIM-Signature: " + value.replacingOccurrences(of: "\r\n", with: "\r\n\t") + "\r\n")
    }

    func dkimVerify() throws(Failure) {
        let message = CRLFConverter.convert(console.readInput())
        let lookup: @Sendable (String) async -> DKIMKeyLookupResult
        if let txt = arguments.options["--txt"] {
            lookup = { _ in .records([txt]) }
        } else {
            lookup = DKIMVerifier.lookup(using: StubResolver(configuration: .system()))
        }
        let verifier = DKIMVerifier(lookup: lookup)
        let outcome = BlockingResult<Result<DKIMVerifier.Result, DKIMMessage.Invalid>>()
        Task {
            do throws(DKIMMessage.Invalid) {
                outcome.set(.success(try await verifier.verify(crlf: message)))
            } catch {
                outcome.set(.failure(error))
            }
        }
        let result: DKIMVerifier.Result
        switch outcome.wait() {
        case .success(let found): result = found
        case .failure(let error): throw Failure("Error verifying message: \(error)")
        }
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let hostname = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        console.out(
            "Authentication-Results: \(hostname)\r\n\t" + result.authenticationResults.replacingOccurrences(of: "\r\n", with: "\r\n\t"))
    }

    /// The domain of the From: address, when dkim-sign is not told one.
    static func fromDomain(_ message: [UInt8]) throws(Failure) -> String {
        let parsed: DKIMMessage
        do { parsed = try DKIMMessage(crlf: message) } catch { throw Failure("Error parsing message: \(error)") }
        guard let from = parsed.fields.first(where: { $0.name.lowercased() == "from" }) else {
            throw Failure("Error parsing From: header: mail: no address")
        }
        var text = String(decoding: from.value, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "")
        if let open = text.lastIndex(of: "<"), let close = text.lastIndex(of: ">"), open < close {
            text = String(text[text.index(after: open)..<close])
        }
        guard let at = text.lastIndex(of: "@") else { throw Failure("Error parsing From: header: mail: missing @ in addr-spec") }
        return text[text.index(after: at)...].trimmingCharacters(in: .whitespaces)
    }
}

/// A value handed from a task to the thread that waits for it (the
/// command line is synchronous).
final class BlockingResult<Value: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var value: Value?

    func set(_ newValue: Value) {
        condition.lock()
        value = newValue
        condition.signal()
        condition.unlock()
    }

    func wait() -> Value {
        condition.lock()
        defer { condition.unlock() }
        while value == nil { condition.wait() }
        return value!
    }
}
