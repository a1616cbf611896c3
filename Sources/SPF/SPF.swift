import DNS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Sender Policy Framework checks (RFC 7208) over any `DNSLookup`.
///
/// Each check is independent: the lookup counters and the reverse-name
/// cache live for one call only, so one checker serves concurrent sessions.
public struct SPFChecker: Sendable {
    public var dns: any DNSLookup
    /// DNS-querying terms per check (include, a, mx, ptr, exists,
    /// redirect); more is a permerror. RFC 7208 §4.6.4 says 10.
    public var lookupLimit: Int
    /// Terms whose query finds nothing; more is a permerror. The RFC
    /// recommends 2.
    public var voidLookupLimit: Int
    /// `%{r}` in explanations: the host doing the check.
    public var receivingHost: String
    /// The explanation of a `fail` whose domain gives none (RFC 7208 §6.2).
    public var defaultExplanation: String
    /// `%{t}` in explanations: seconds since the epoch.
    public var now: @Sendable () -> Int

    public static let standardExplanation = "the sender's domain does not authorize this host to send its mail"

    public init(
        dns: any DNSLookup,
        lookupLimit: Int = 10,
        voidLookupLimit: Int = 2,
        receivingHost: String = "unknown",
        defaultExplanation: String = SPFChecker.standardExplanation,
        now: @escaping @Sendable () -> Int = SPFChecker.currentTime
    ) {
        self.dns = dns
        self.lookupLimit = lookupLimit
        self.voidLookupLimit = voidLookupLimit
        self.receivingHost = receivingHost
        self.defaultExplanation = defaultExplanation
        self.now = now
    }

    /// The wall clock, in whole seconds since the epoch.
    @Sendable public static func currentTime() -> Int {
        Int(time(nil))
    }

    /// check_host() for the MAIL FROM identity, RFC 7208 §2.4: the domain
    /// of `sender`; with the null sender, "postmaster@" + `helo`.
    /// `helo` is also the value of `%{h}`.
    public func check(ip: IPAddress, helo: String, sender: String) async -> SPFOutcome {
        if sender.isEmpty {
            return await checkHost(ip: ip, domain: helo, sender: "postmaster@" + helo, helo: helo)
        }
        return await checkHost(ip: ip, domain: Self.split(sender).domain ?? sender, sender: sender, helo: helo)
    }

    /// check_host(<ip>, <domain>, <sender>), RFC 7208 §4. A sender
    /// without a local part is "postmaster" at its domain (§4.3); an empty
    /// one is postmaster at `domain`.
    public func checkHost(ip: IPAddress, domain: String, sender: String, helo: String) async -> SPFOutcome {
        let parts = Self.split(sender)
        let localPart = parts.localPart.isEmpty ? "postmaster" : parts.localPart
        let senderDomain = parts.domain ?? domain
        let values = MacroValues(
            sender: localPart + "@" + senderDomain,
            localPart: localPart,
            senderDomain: senderDomain,
            domain: domain,
            ip: ip.unmapped,
            helo: helo,
            receivingHost: receivingHost,
            timestamp: now()
        )
        var evaluator = Evaluator(
            dns: dns,
            lookupLimit: lookupLimit,
            voidLookupLimit: voidLookupLimit,
            defaultExplanation: defaultExplanation,
            values: values
        )
        return await evaluator.checkHost(domain)
    }

    /// Local part and domain, split at the last "@" (a quoted local part
    /// may contain "@"). Without "@", the whole is the domain; the empty
    /// string has neither.
    /// Per Unicode scalar, never per `Character`, which may hide an `@`.
    static func split(_ sender: String) -> (localPart: String, domain: String?) {
        guard let at = sender.unicodeScalars.lastIndex(of: "@") else { return ("", sender.isEmpty ? nil : sender) }
        return (String(sender[..<at]), String(sender[sender.unicodeScalars.index(after: at)...]))
    }
}
