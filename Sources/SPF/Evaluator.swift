import DNS

/// One run of check_host() (RFC 7208 §4), with the state the whole run
/// shares across include and redirect: the lookup counters (§4.6.4) and
/// the reverse names of <ip>. Confined to the task doing the check.
struct Evaluator {
    let dns: any DNSLookup
    let lookupLimit: Int
    let voidLookupLimit: Int
    let defaultExplanation: String
    /// The macro values; `domain` and `validatedName` are set per use.
    let values: MacroValues

    /// DNS-querying terms evaluated so far.
    private(set) var lookups = 0
    /// Terms whose query found nothing (NXDOMAIN or no records).
    private(set) var voidLookups = 0
    /// The validated names of <ip>, once looked up (§5.5).
    private var reverseNames: ReverseNames?
    /// include/redirect levels entered. The lookup limit bounds this too,
    /// but it is configurable: this keeps a loop from exhausting the stack.
    private var depth = 0
    static let maxDepth = 50

    /// The most MX names an "mx" may have, and the most PTR names looked
    /// at for "ptr" and %{p} (§4.6.4).
    static let maxMXNames = 10
    static let maxPTRNames = 10

    init(dns: any DNSLookup, lookupLimit: Int, voidLookupLimit: Int, defaultExplanation: String, values: MacroValues) {
        self.dns = dns
        self.lookupLimit = lookupLimit
        self.voidLookupLimit = voidLookupLimit
        self.defaultExplanation = defaultExplanation
        self.values = values
    }

    var ip: IPAddress { values.ip }

    // MARK: check_host()

    /// check_host(<ip>, <domain>, <sender>) for `domain`: initial
    /// processing (§4.3), record lookup and selection (§4.4, §4.5), parsing
    /// and evaluation (§4.6, §4.7).
    mutating func checkHost(_ domain: String) async -> SPFOutcome {
        guard let domain = DomainName.checkHostDomain(domain) else {
            return SPFOutcome(result: .none, reason: SPFReason.invalidDomain)
        }
        let texts: [[UInt8]]
        do {
            texts = try await dns.lookup(domain, .txt).compactMap {
                if case .txt(let strings) = $0 { return Array(strings.joined()) }
                return nil
            }
        } catch {
            if error.isNameNotFound { return SPFOutcome(result: .none, reason: SPFReason.noRecord) }
            return SPFOutcome(result: .temperror, reason: error.description)
        }
        let records = texts.filter(SPFRecord.isSPF)
        guard let text = records.first else { return SPFOutcome(result: .none, reason: SPFReason.noRecord) }
        guard records.count == 1 else { return SPFOutcome(result: .permerror, reason: SPFReason.multipleRecords) }
        let record: SPFRecord
        do {
            record = try SPFRecord.parse(text)
        } catch {
            return SPFOutcome(result: .permerror, reason: error.reason)
        }
        return await evaluate(record, domain: domain)
    }

    /// The directives left to right; the first match decides (§4.6.2).
    /// Without a match, "redirect" (§6.1), else neutral (§4.7).
    mutating func evaluate(_ record: SPFRecord, domain: String) async -> SPFOutcome {
        for directive in record.directives {
            if directive.mechanism.queriesDNS, let limit = countLookup() { return limit }
            switch await evaluate(directive.mechanism, domain: domain) {
            case .noMatch:
                continue
            case .stop(let outcome):
                return outcome
            case .match(let reason):
                var outcome = SPFOutcome(result: directive.qualifier.result, reason: reason)
                if outcome.result == .fail {
                    outcome.explanation = await explanation(record.explanation, domain: domain)
                }
                return outcome
            }
        }
        if let redirect = record.redirect {
            if let limit = countLookup() { return limit }
            // The redirected check's result is the result, explanation and
            // all: this record's exp= does not apply (§6.2).
            guard let target = DomainName.queryName(await expand(redirect, domain: domain)) else {
                return SPFOutcome(result: .permerror, reason: SPFReason.invalidDomain)
            }
            var outcome = await nestedCheckHost(target)
            if outcome.result == .none { outcome.result = .permerror }
            return outcome
        }
        return SPFOutcome(result: .neutral)
    }

    /// check_host() for an include or redirect target.
    mutating func nestedCheckHost(_ target: String) async -> SPFOutcome {
        guard depth < Self.maxDepth else {
            return SPFOutcome(result: .permerror, reason: SPFReason.lookupLimitReached)
        }
        depth += 1
        defer { depth -= 1 }
        return await checkHost(target)
    }

    enum MechanismOutcome {
        case match(reason: String?)
        case noMatch
        /// An exception (§5): check_host() ends with this outcome.
        case stop(SPFOutcome)
    }

    /// One mechanism (§5). DNS errors other than NXDOMAIN end the check
    /// with temperror; NXDOMAIN and empty answers are no match and count
    /// as void lookups (§4.6.4), except where §5.5 says otherwise for ptr.
    mutating func evaluate(_ mechanism: Mechanism, domain: String) async -> MechanismOutcome {
        switch mechanism {
        case .all:
            return .match(reason: SPFReason.matchedAll)

        case .ip4(let network, let prefixLength):
            return ip.isIPv4 && ip.isIn(network, prefixLength: prefixLength)
                ? .match(reason: SPFReason.matchedIP) : .noMatch

        case .ip6(let network, let prefixLength):
            return !ip.isIPv4 && ip.isIn(network, prefixLength: prefixLength)
                ? .match(reason: SPFReason.matchedIP) : .noMatch

        case .include(let spec):
            guard let target = DomainName.queryName(await expand(spec, domain: domain)) else {
                return .stop(SPFOutcome(result: .permerror, reason: SPFReason.invalidDomain))
            }
            // §5.2: only pass matches; the included record's exp= is not used.
            let inner = await nestedCheckHost(target)
            switch inner.result {
            case .pass: return .match(reason: inner.reason)
            case .fail, .softfail, .neutral: return .noMatch
            case .temperror: return .stop(SPFOutcome(result: .temperror, reason: inner.reason))
            case .permerror, .none: return .stop(SPFOutcome(result: .permerror, reason: inner.reason))
            }

        case .a(let spec, let cidr):
            let name = await targetName(spec, domain: domain)
            switch await addresses(of: name) {
            case .failed(let error): return .stop(temporaryError(error))
            case .void: return noteVoid()
            case .found(let addresses):
                return addresses.contains { matches($0, cidr) } ? .match(reason: SPFReason.matchedA) : .noMatch
            }

        case .mx(let spec, let cidr):
            let name = await targetName(spec, domain: domain)
            let answer = await ask(name, .mx) { record -> String? in
                if case .mx(_, let exchange) = record { return exchange }
                return nil
            }
            switch answer {
            case .failed(let error): return .stop(temporaryError(error))
            case .void: return noteVoid()
            case .found(let exchanges):
                guard exchanges.count <= Self.maxMXNames else {
                    return .stop(SPFOutcome(result: .permerror, reason: SPFReason.tooManyMXRecords))
                }
                // A null MX (RFC 7505) names the root: nothing to look up.
                for exchange in exchanges where !exchange.isEmpty {
                    switch await addresses(of: DomainName.queryName(exchange)) {
                    case .failed(let error): return .stop(temporaryError(error))
                    case .void: continue
                    case .found(let addresses):
                        if addresses.contains(where: { matches($0, cidr) }) {
                            return .match(reason: SPFReason.matchedMX)
                        }
                    }
                }
                return .noMatch
            }

        case .ptr(let spec):
            var target = domain
            if let spec { target = await expand(spec, domain: domain) }
            switch await validatedReverseNames() {
            // §5.5: an error on the PTR query is no match, not temperror.
            case .failed: return .noMatch
            case .void: return noteVoid()
            case .names(let names):
                return names.contains { DomainName.isSameOrSubdomain($0, of: target) }
                    ? .match(reason: SPFReason.matchedPTR) : .noMatch
            }

        case .exists(let spec):
            // Always an A query, whatever the family of <ip> (§5.7).
            let name = await targetName(spec, domain: domain)
            let answer = await ask(name, .a) { record -> IPAddress? in
                if case .a(let address) = record { return address }
                return nil
            }
            switch answer {
            case .failed(let error): return .stop(temporaryError(error))
            case .void: return noteVoid()
            case .found: return .match(reason: SPFReason.matchedExists)
            }
        }
    }

    /// Whether `address` (from an A or AAAA answer) covers <ip> under the
    /// prefix length for <ip>'s family.
    func matches(_ address: IPAddress, _ cidr: DualCIDR) -> Bool {
        ip.isIn(address, prefixLength: ip.isIPv4 ? cidr.ipv4 : cidr.ipv6)
    }

    // MARK: Limits (§4.6.4)

    mutating func countLookup() -> SPFOutcome? {
        lookups += 1
        return lookups > lookupLimit ? SPFOutcome(result: .permerror, reason: SPFReason.lookupLimitReached) : nil
    }

    mutating func noteVoid() -> MechanismOutcome {
        voidLookups += 1
        if voidLookups > voidLookupLimit {
            return .stop(SPFOutcome(result: .permerror, reason: SPFReason.voidLookupLimitReached))
        }
        return .noMatch
    }

    func temporaryError(_ error: DNSError) -> SPFOutcome {
        SPFOutcome(result: .temperror, reason: error.description)
    }

    // MARK: DNS

    enum Answer<Value> {
        case found([Value])
        /// NXDOMAIN, no records of the type, or a name no query can be made of.
        case void
        case failed(DNSError)
    }

    /// The records of `type` at `name`, as `extract` reads them. A nil
    /// name (one that failed DomainName.queryName) is void without asking.
    func ask<Value>(
        _ name: String?,
        _ type: DNSRecordType,
        _ extract: (DNSRecordData) -> Value?
    ) async -> Answer<Value> {
        guard let name else { return .void }
        do {
            let values = try await dns.lookup(name, type).compactMap(extract)
            return values.isEmpty ? .void : .found(values)
        } catch {
            return error.isNameNotFound ? .void : .failed(error)
        }
    }

    /// The A or AAAA records at `name`, whichever <ip>'s family is.
    func addresses(of name: String?) async -> Answer<IPAddress> {
        await ask(name, ip.isIPv4 ? .a : .aaaa) { record in
            switch record {
            case .a(let address), .aaaa(let address): address
            default: nil
            }
        }
    }

    enum ReverseNames {
        case names([String])
        case void
        case failed
    }

    /// The validated domain names of <ip> (§5.5): the first 10 names of
    /// its PTR records whose A/AAAA records include <ip>. Names whose
    /// lookup fails are skipped. Looked up once per check.
    mutating func validatedReverseNames() async -> ReverseNames {
        if let reverseNames { return reverseNames }
        let answer = await ask(ip.reverseName, .ptr) { record -> String? in
            if case .ptr(let name) = record { return name }
            return nil
        }
        let result: ReverseNames
        switch answer {
        case .failed: result = .failed
        case .void: result = .void
        case .found(let names):
            var validated: [String] = []
            for name in names.prefix(Self.maxPTRNames) {
                let name = DomainName.withoutTrailingDot(name)
                if case .found(let addresses) = await addresses(of: DomainName.queryName(name)),
                    addresses.contains(ip)
                {
                    validated.append(name)
                }
            }
            result = .names(validated)
        }
        reverseNames = result
        return result
    }

    /// %{p} (§7.3): <domain> itself if validated, else a validated
    /// subdomain of it, else any validated name, else "unknown".
    mutating func validatedName(for domain: String) async -> String {
        guard case .names(let names) = await validatedReverseNames(), let first = names.first else {
            return "unknown"
        }
        if let same = names.first(where: { DomainName.equal($0, domain) }) { return same }
        return names.first { DomainName.isSameOrSubdomain($0, of: domain) } ?? first
    }

    // MARK: Macros and explanations

    mutating func expand(_ string: MacroString, domain: String) async -> String {
        var values = values
        values.domain = domain
        if string.uses(.p) { values.validatedName = await validatedName(for: domain) }
        return string.expand(values)
    }

    /// The <target-name> of a/mx/exists: the expanded domain-spec, or
    /// <domain> without one; nil when no query can be made of it.
    mutating func targetName(_ spec: MacroString?, domain: String) async -> String? {
        guard let spec else { return domain }
        return DomainName.queryName(await expand(spec, domain: domain))
    }

    /// The explanation for a fail (§6.2): the `exp=` target's single TXT
    /// record, expanded; the default explanation when there is no `exp=`,
    /// or its lookup fails, finds no record or several, or its text does
    /// not parse. The lookup counts against no limit.
    mutating func explanation(_ spec: MacroString?, domain: String) async -> String {
        guard let spec, let name = DomainName.queryName(await expand(spec, domain: domain)) else {
            return defaultExplanation
        }
        let texts = await ask(name, .txt) { record -> [UInt8]? in
            if case .txt(let strings) = record { return Array(strings.joined()) }
            return nil
        }
        guard case .found(let records) = texts, records.count == 1,
            let text = try? MacroString.parse(records[0], letters: MacroLetter.allLetters, allowSpace: true)
        else { return defaultExplanation }
        return await expand(text, domain: domain)
    }
}
