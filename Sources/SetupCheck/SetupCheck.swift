import DKIM
import DNS
import IDNA
import MTASTS
import NIOCore
import NIOSSL
import SMTPClient
import SMTPCore
import SPF

import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// smtp-check: how the world sees a domain's mail setup. chasquid's
/// checks, in its order and words (COMPAT.md §20), then ours: reverse DNS
/// of each MX against its HELO name, the DKIM records of the keys we hold,
/// and DMARC; each problem with the record that fixes it (docs/smtp-check.md).
public struct SetupCheck: Sendable {
    public struct Options: Sendable {
        public var domain = ""
        public var port = 25
        public var localName = "localhost"
        public var skipTLSCheck = false
        /// Where chasquid's config is, for the DKIM keys (nil: none).
        public var configDirectory: String? = "/etc/chasquid"
        /// The policy host's HTTPS port (443; tests use another).
        public var stsPort = 443
        public var stsTimeout: Duration = .seconds(5)
        public var connectTimeout: Duration = .seconds(30)
        public var replyTimeout: Duration = .seconds(60)
        public init() {}
    }

    public var options: Options
    public var dns: any DNSLookup
    /// Verifies MX and policy-host certificates.
    public var verifyingContext: NIOSSLContext
    /// Looks at a certificate that failed verification, to say why.
    public var lenientContext: NIOSSLContext
    /// Prints one line (smtp-check adds Go's log prefix).
    let log: @Sendable (String) -> Void
    public var now: @Sendable () -> Date = { Date() }

    public init(
        options: Options, dns: any DNSLookup, verifyingContext: NIOSSLContext, lenientContext: NIOSSLContext,
        log: @escaping @Sendable (String) -> Void
    ) {
        self.options = options
        self.dns = dns
        self.verifyingContext = verifyingContext
        self.lenientContext = lenientContext
        // Every line goes out escaped: much of it is what servers sent.
        self.log = { log(Printable.line($0)) }
    }

    /// Runs every check, printing as it goes; the verdict is printed last.
    public func run() async -> Report {
        var report = Report()
        let domain: String
        do {
            domain = try UTS46.toASCII(options.domain)
        } catch {
            log("IDNA conversion failed: \(error)")
            report.fatal = true
            return report
        }

        let policy: STSPolicy?
        switch await checkSTSPolicy(domain: domain, report: &report) {
        case .invalid: return report
        case .none: policy = nil
        case .policy(let valid): policy = valid
        }

        let mxs: [(preference: UInt16, exchange: String)]
        do {
            mxs = try await dns.mx(domain).sorted { $0.preference < $1.preference }
        } catch {
            log("MX lookup: \(error)")
            report.fatal = true
            report.failures.append(
                Problem("\(domain): no MX records", fixes: [Zone.mx(domain)]))
            printVerdict(report)
            return report
        }
        guard !mxs.isEmpty else {
            log("MX lookup returned no results")
            report.fatal = true
            report.failures.append(Problem("\(domain): no MX records", fixes: [Zone.mx(domain)]))
            printVerdict(report)
            return report
        }

        for mx in mxs {
            await checkMX(domain: domain, preference: mx.preference, host: mx.exchange, policy: policy, report: &report)
        }
        await checkDKIM(domain: domain, report: &report)
        await checkDMARC(domain: domain, report: &report)
        printVerdict(report)
        return report
    }

    // MARK: - MTA-STS

    enum STSOutcome {
        case none
        case policy(STSPolicy)
        /// Published but broken: the run stops, as chasquid's does.
        case invalid
    }

    /// `=== STS policy`.
    func checkSTSPolicy(domain: String, report: inout Report) async -> STSOutcome {
        log("=== STS policy")
        let fetcher = STSPolicyFetcher(dns: dns, tlsContext: verifyingContext, port: options.stsPort)
        var outcome = STSOutcome.none
        do {
            let (record, fetched) = try await fetcher.fetch(domain: domain, timeout: options.stsTimeout)
            log("Parsed contents:  [\(fetched.goDescription)]")
            if let problem = record.problem {
                // chasquid fetches the policy anyway; RFC 8461 senders ignore it.
                log("Note: \(problem); RFC 8461 senders ignore such a policy")
                report.warnings.append(
                    Problem("\(domain): \(problem)", fixes: [Zone.txt("_mta-sts." + domain, "v=STSv1; id=\(Self.stsID(now()));")]))
            }
            do {
                try fetched.check()
            } catch {
                log("Invalid: \(error)")
                report.fatal = true
                return .invalid
            }
            log("OK")
            outcome = .policy(fetched)
        } catch {
            log("Not available (\(error))")
        }
        log("")
        return outcome
    }

    // MARK: - One MX

    func checkMX(domain: String, preference: UInt16, host: String, policy: STSPolicy?, report: inout Report) async {
        // chasquid prints the names as Go's resolver gives them: absolute,
        // with the trailing dot.
        let shown = host.hasSuffix(".") ? host : host + "."
        log("=== MX: \(preference < 10 ? " " : "")\(preference)  \(shown)")
        if host.isEmpty || host == "." {
            log("Null MX: \(domain) accepts no mail (RFC 7505)")
            report.failures.append(Problem("\(domain): null MX, the domain accepts no mail"))
            log("")
            return
        }

        let (ips, lookupErrors) = await dns.allAddresses(host)
        if ips.isEmpty {
            let why = lookupErrors.first.map { "\($0)" } ?? "no addresses"
            log("Address lookup: \(why)")
            report.failures.append(Problem("\(shown): no address (\(why))", fixes: [Zone.address(host, "<its IPv4 address>", ipv6: false)]))
            log("")
            return
        }

        let spf = SPFChecker(dns: dns)
        for ip in ips {
            let outcome = await spf.checkHost(ip: ip, domain: domain, sender: "test@" + domain, helo: options.localName)
            log("SPF \(outcome.result.rawValue) for \(ip): \(outcome.reason ?? "<nil>")")
            if outcome.result != .pass {
                report.failures.append(
                    Problem("\(shown): SPF failed (\(ip))", fixes: await spfFixes(domain: domain, outcome: outcome)))
            }
        }

        var heloName: String?
        if options.skipTLSCheck {
            log("TLS check skipped")
        } else {
            heloName = await checkTLS(host: host, shown: shown, ips: ips, report: &report)
        }

        await checkReverseDNS(host: shown, ips: ips, heloName: heloName, report: &report)

        if let policy {
            if !policy.allows(mx: host) {
                log("NOT allowed by STS policy")
                report.failures.append(Problem("\(shown): STS failed"))
            } else {
                log("Allowed by policy")
            }
        }
        log("")
    }

    /// What to publish when SPF does not pass for an MX address: the mail
    /// this MX sends is then refused or marked elsewhere.
    func spfFixes(domain: String, outcome: SPFOutcome) async -> [String] {
        let records = ((try? await dns.txt(domain)) ?? []).filter {
            $0.lowercased() == "v=spf1" || $0.lowercased().hasPrefix("v=spf1 ")
        }
        switch outcome.result {
        case .none:
            return [Zone.txt(domain, "v=spf1 mx -all")]
        case .fail, .softfail, .neutral:
            guard records.count == 1, let record = records.first else { return [Zone.txt(domain, "v=spf1 mx -all")] }
            // Authorising the MX hosts first keeps whatever else the record says.
            let rest = record.dropFirst("v=spf1".count)
            return [Zone.txt(domain, "v=spf1 mx" + rest)]
        case .permerror:
            return [Zone.txt(domain, "v=spf1 mx -all") + "  (one record only, replacing the broken one)"]
        case .temperror, .pass:
            return []
        }
    }

    // MARK: - SMTP and TLS

    /// EHLO and a verified STARTTLS; the server's name from its EHLO reply,
    /// if it answered.
    func checkTLS(host: String, shown: String, ips: [IPAddress], report: inout Report) async -> String? {
        let connection: ClientConnection
        do {
            connection = try await connect(ips: ips)
        } catch {
            log("Connection failed: \(error)")
            report.failures.append(Problem("\(shown): connection failed (\(error))"))
            return nil
        }
        defer { connection.close() }
        let ehlo: Reply
        do {
            ehlo = try await connection.command("EHLO " + options.localName, timeout: options.replyTimeout)
        } catch {
            log("EHLO failed: \(error)")
            report.failures.append(Problem("\(shown): TLS failed"))
            return nil
        }
        let heloName = ehlo.lines.first?.split(separator: " ").first.map(String.init)
        guard ehlo.code == 250 else {
            log("TLS error: EHLO refused: \(ehlo.code) \(ehlo.lines.joined(separator: " "))")
            report.failures.append(Problem("\(shown): TLS failed"))
            return heloName
        }
        do {
            let reply = try await connection.command("STARTTLS", timeout: options.replyTimeout)
            guard reply.code == 220 else {
                throw ClientError("STARTTLS refused: \(reply.code) \(reply.lines.joined(separator: " "))")
            }
            try await connection.startTLS(context: verifyingContext, serverName: host, timeout: options.replyTimeout)
        } catch {
            log("TLS error: \(error)")
            // Only a refused handshake is the certificate's doing; a timeout
            // or a dropped connection is not.
            let handshakeRefused = (error as? ClientError)?.isTLSFailure ?? false
            let findings = handshakeRefused ? await diagnoseCertificate(host: host, ips: ips) : []
            report.failures.append(Problem("\(shown): TLS failed", fixes: findings))
            return heloName
        }
        let parameters = await connection.tlsParameters()
        let version = parameters.version.map(TLSParameters.versionName) ?? "TLS"
        let suite = parameters.cipherSuite.map(TLSParameters.cipherSuiteName) ?? "TLS_UNKNOWN_CIPHER_SUITE"
        log("TLS OK: \(version) - \(suite)")
        return heloName
    }

    func connect(ips: [IPAddress]) async throws -> ClientConnection {
        var lastError: any Error = ClientError("no address to connect to")
        for ip in ips {
            do {
                let address = try SocketAddress(ipAddress: ip.description, port: options.port)
                let (connection, greeting) = try await ClientConnection.connect(
                    to: address, connectTimeout: options.connectTimeout, greetingTimeout: options.replyTimeout,
                    sessionTimeout: .seconds(600))
                guard greeting.code == 220 else {
                    connection.close()
                    throw ClientError("greeting: \(greeting.code) \(greeting.lines.joined(separator: " "))")
                }
                return connection
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// Connects again without verifying, to say what is wrong with the
    /// certificate the server presents: its names, its dates, its issuer.
    func diagnoseCertificate(host: String, ips: [IPAddress]) async -> [String] {
        let chain = CertificateBox()
        do {
            let connection = try await connect(ips: ips)
            defer { connection.close() }
            _ = try await connection.command("EHLO " + options.localName, timeout: options.replyTimeout)
            let reply = try await connection.command("STARTTLS", timeout: options.replyTimeout)
            guard reply.code == 220 else { return [] }
            try await connection.startTLS(
                context: lenientContext, serverName: host, timeout: options.replyTimeout,
                presentedChain: { chain.set($0) })
        } catch {
            return []
        }
        let findings = CertificateDiagnosis.findings(chain: chain.get(), host: host, now: now())
        for finding in findings { log("Certificate: \(finding)") }
        return findings
    }

    // MARK: - Reverse DNS

    /// Each address's PTR, forward-confirmed, against the name the MX says
    /// in its EHLO reply (the name it will also use when it sends): many
    /// receivers distrust mail from an address whose names disagree.
    func checkReverseDNS(host: String, ips: [IPAddress], heloName: String?, report: inout Report) async {
        let expected = normalized(heloName ?? host)
        let what = heloName == nil ? "MX name" : "HELO name"
        for ip in ips {
            let ptrs: [String]
            do {
                ptrs = try await dns.ptr(ip.reverseName)
            } catch let error where !error.isNameNotFound {
                log("PTR \(ip): lookup failed: \(error)")
                report.warnings.append(Problem("\(host): reverse DNS of \(ip) could not be checked (\(error))"))
                continue
            } catch {
                ptrs = []
            }
            guard !ptrs.isEmpty else {
                log("PTR \(ip): none")
                report.warnings.append(
                    Problem(
                        "\(host): \(ip) has no PTR record (ask whoever gave you the address to publish it)",
                        fixes: [Zone.ptr(ip.reverseName, expected)]))
                continue
            }
            var confirmed: [String] = []
            for name in ptrs {
                let forward = (try? await dns.addresses(name, ipv6: !ip.unmapped.isIPv4)) ?? []
                if forward.contains(where: { $0.unmapped == ip.unmapped }) { confirmed.append(normalized(name)) }
            }
            guard !confirmed.isEmpty else {
                log("PTR \(ip): \(ptrs.joined(separator: ", ")) (not forward-confirmed)")
                report.warnings.append(
                    Problem(
                        "\(host): the PTR of \(ip) (\(ptrs[0])) does not resolve back to it",
                        fixes: [Zone.address(normalized(ptrs[0]), ip.description, ipv6: !ip.unmapped.isIPv4)]))
                continue
            }
            if confirmed.contains(expected) {
                log("PTR \(ip): \(expected) (forward-confirmed, matches the \(what))")
            } else {
                log("PTR \(ip): \(confirmed[0]) (forward-confirmed, but the \(what) is \(expected))")
                report.warnings.append(
                    Problem(
                        "\(host): the PTR of \(ip) is \(confirmed[0]), but the \(what) is \(expected)",
                        fixes: [
                            "hostname: \"\(confirmed[0])\"  (in chasquid.conf, so the server calls itself by its PTR)",
                            Zone.ptr(ip.reverseName, expected) + "  (or have the PTR changed)",
                        ]))
            }
        }
    }

    func normalized(_ name: String) -> String {
        var name = name.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        return name
    }

    // MARK: - DKIM

    /// The keys chasquid would sign with, each against what DNS publishes.
    func checkDKIM(domain: String, report: inout Report) async {
        log("=== DKIM")
        defer { log("") }
        guard let configDirectory = options.configDirectory else {
            log("Not checked (no config directory)")
            return
        }
        let domains = configDirectory + "/domains"
        var directory: String?
        for name in Set([options.domain, domain, (try? UTS46.toUnicode(domain)) ?? domain]).sorted() {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: domains + "/" + name, isDirectory: &isDirectory), isDirectory.boolValue {
                directory = domains + "/" + name
            }
        }
        guard let directory else {
            if access(domains, R_OK | X_OK) != 0 && errno == EACCES {
                log("Not checked: cannot read \(domains) (permission denied; run as the server's user)")
            } else {
                log("Not checked: \(domain) is not a local domain in \(domains)")
            }
            return
        }
        let keys = DKIMKey.load(directory: directory)
        guard !keys.isEmpty else {
            if access(directory, R_OK | X_OK) != 0 {
                log("Not checked: cannot read \(directory)")
            } else {
                log("No DKIM keys in \(directory)")
            }
            return
        }
        for loaded in keys {
            let key: DKIMKey
            switch loaded {
            case .failure(let error):
                log("Key error: \(error)")
                report.warnings.append(Problem("DKIM: \(error)"))
                continue
            case .success(let success):
                key = success
            }
            let name = "\(key.selector)._domainkey.\(domain)"
            let fix = Zone.txt(name, key.recordValue)
            let texts: [String]
            do {
                texts = try await dns.txt(name)
            } catch let error where !error.isNameNotFound {
                log("Selector \(key.selector): lookup failed: \(error)")
                report.warnings.append(Problem("DKIM \(key.selector): \(name) could not be looked up (\(error))"))
                continue
            } catch {
                texts = []
            }
            let records = texts.filter { $0.contains("p=") }
            guard records.count == 1, let text = records.first else {
                let why = records.isEmpty ? "no key record" : "\(records.count) key records (there must be one)"
                log("Selector \(key.selector) (\(key.algorithm.rawValue)): \(why) at \(name)")
                report.warnings.append(Problem("DKIM \(key.selector): \(why) at \(name)", fixes: [fix]))
                continue
            }
            let published: DKIMKeyRecord
            do {
                published = try DKIMKeyRecord(parsing: text)
            } catch {
                log("Selector \(key.selector): invalid record at \(name): \(error)")
                report.warnings.append(Problem("DKIM \(key.selector): invalid record at \(name) (\(error))", fixes: [fix]))
                continue
            }
            if published.publicKey.isEmpty {
                log("Selector \(key.selector): the published key is revoked (empty p=)")
                report.warnings.append(Problem("DKIM \(key.selector): the key at \(name) is revoked", fixes: [fix]))
            } else if published.keyType.lowercased() != key.algorithm.rawValue
                || !key.publishedForms.contains(published.publicKey)
            {
                log("Selector \(key.selector): the published key is not the one in \(key.path)")
                report.warnings.append(
                    Problem("DKIM \(key.selector): the key at \(name) does not match \(key.path)", fixes: [fix]))
            } else {
                log("Selector \(key.selector) (\(key.algorithm.rawValue)): the published key matches \(key.path)")
            }
        }
    }

    // MARK: - DMARC

    /// The DMARC record (RFC 7489 §6.6.3), at the domain or, failing that,
    /// at a parent (the organizational domain, approximated without the
    /// public suffix list by walking up to two labels).
    func checkDMARC(domain: String, report: inout Report) async {
        log("=== DMARC")
        defer { log("") }
        var labels = domain.split(separator: ".")
        var first = true
        repeat {
            let name = "_dmarc." + labels.joined(separator: ".")
            let texts: [String]
            do {
                texts = try await dns.txt(name)
            } catch let error where !error.isNameNotFound {
                log("Lookup of \(name) failed: \(error)")
                report.warnings.append(Problem("DMARC: \(name) could not be looked up (\(error))"))
                return
            } catch {
                texts = []
            }
            // RFC 7489 §6.6.3: only records whose first tag is v=DMARC1.
            let records = texts.filter { (try? DKIMTagList(parsing: $0))?.tags.first.map { $0.name == "v" && $0.value == "DMARC1" } ?? false }
            if records.count > 1 {
                log("\(name): \(records.count) records; receivers ignore them all")
                report.warnings.append(
                    Problem("DMARC: \(records.count) records at \(name); keep one", fixes: [Zone.txt(name, records[0])]))
                return
            }
            if let record = records.first {
                let where_ = first ? "" : " (inherited from \(labels.joined(separator: ".")))"
                let tags = try? DKIMTagList(parsing: record)
                // A subdomain gets sp= when its parent's record has one.
                let policy = ((first ? nil : tags?["sp"]) ?? tags?["p"] ?? "").lowercased()
                guard ["none", "quarantine", "reject"].contains(policy) else {
                    log("\(name): \(record): invalid (p= must be none, quarantine or reject)")
                    report.warnings.append(
                        Problem("DMARC: invalid record at \(name)", fixes: [Zone.txt(name, Self.suggestedDMARC(domain))]))
                    return
                }
                log("\(name): \(record) (policy \(policy))\(where_)")
                return
            }
            labels.removeFirst()
            first = false
        } while labels.count >= 2
        log("No record at _dmarc.\(domain)")
        report.warnings.append(
            Problem(
                "DMARC: no record for \(domain)",
                fixes: [Zone.txt("_dmarc." + domain, Self.suggestedDMARC(domain))]))
    }

    /// An id for a new TXT record: the date and time, as RFC 8461's example.
    static func stsID(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMddHHmmss"
        return formatter.string(from: date) + "Z"
    }

    /// A start that rejects nothing and asks for reports.
    static func suggestedDMARC(_ domain: String) -> String {
        "v=DMARC1; p=none; rua=mailto:postmaster@\(domain)"
    }

    // MARK: - Verdict

    func printVerdict(_ report: Report) {
        if !report.warnings.isEmpty {
            log("=== Warnings")
            printProblems(report.warnings)
            log("")
        }
        if report.failures.isEmpty && !report.fatal {
            log("=== Success")
        } else {
            log("=== FAILED")
            printProblems(report.failures)
            // chasquid ends with log.Fatal(""): one more, empty, line.
            log("")
        }
    }

    /// Each problem, and each fix once (several MX addresses failing SPF
    /// need the same one record).
    func printProblems(_ problems: [Problem]) {
        var printed = Set<String>()
        for problem in problems {
            log(problem.summary)
            for fix in problem.fixes where printed.insert(fix).inserted { log("    fix: \(fix)") }
        }
    }
}

/// The chain a lenient handshake saw, handed from the TLS callback.
final class CertificateBox: @unchecked Sendable {
    private let lock = NSLock()
    private var chain: [NIOSSLCertificate] = []
    func set(_ chain: [NIOSSLCertificate]) { lock.withLock { self.chain = chain } }
    func get() -> [NIOSSLCertificate] { lock.withLock { chain } }
}
