import Foundation
import MTASTS
import NIOSSL
import X509

/// Why a certificate chain that failed verification is wrong, in words an
/// admin can act on: the names it covers, its validity dates, its issuer.
enum CertificateDiagnosis {
    static func findings(chain: [NIOSSLCertificate], host: String, now: Date) -> [String] {
        guard let leafCertificate = chain.first, let der = try? leafCertificate.toDERBytes(),
            let leaf = try? Certificate(derEncoded: der)
        else {
            return ["the server presented no certificate that could be read"]
        }
        var findings: [String] = []
        let names = dnsNames(leaf)
        // RFC 6125 §6.4 matching: literal, or one leftmost wildcard label.
        if !names.contains(where: { STSPolicy.matches(host, pattern: $0) }) {
            let covered = names.isEmpty ? "no DNS names" : names.joined(separator: ", ")
            findings.append("it is for \(covered), not \(host); get one that names \(host)")
        }
        if leaf.notValidAfter < now {
            findings.append("it expired on \(day(leaf.notValidAfter)); renew it (e.g. certbot renew)")
        }
        if leaf.notValidBefore > now {
            findings.append("it is not valid until \(day(leaf.notValidBefore)); check the server's clock")
        }
        if leaf.issuer == leaf.subject {
            findings.append("it is self-signed; use one from a public CA (e.g. Let's Encrypt)")
        } else if chain.count == 1 {
            findings.append(
                "the server sends no intermediate certificate (issuer \(leaf.issuer)); use fullchain.pem, not cert.pem")
        } else if findings.isEmpty {
            findings.append("its issuer (\(leaf.issuer)) is not trusted here")
        }
        return findings
    }

    static func dnsNames(_ certificate: Certificate) -> [String] {
        guard let alternatives = try? certificate.extensions.subjectAlternativeNames else { return [] }
        return alternatives.compactMap {
            if case .dnsName(let name) = $0 { return name }
            return nil
        }
    }

    static func day(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd"
        return formatter.string(from: date)
    }
}
