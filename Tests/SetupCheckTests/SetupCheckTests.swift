import DNS
import NIOSSL
import Synchronization
import Testing

@testable import SetupCheck

/// Answers from a table; names not in it do not exist.
struct TableDNS: DNSLookup {
    var records: [String: [DNSRecordData]]
    func lookup(_ name: String, _ type: DNSRecordType) async throws(DNSError) -> [DNSRecordData] {
        guard let all = records[name] else { throw .nameNotFound(name) }
        return all.filter {
            switch ($0, type) {
            case (.txt, .txt), (.a, .a), (.aaaa, .aaaa), (.ptr, .ptr), (.mx, .mx): true
            default: false
            }
        }
    }
}

final class Lines: Sendable {
    let lines = Mutex<[String]>([])
    func add(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}

func makeCheck(_ records: [String: [DNSRecordData]], lines: Lines) throws -> SetupCheck {
    let context = try NIOSSLContext(configuration: .makeClientConfiguration())
    var options = SetupCheck.Options()
    options.configDirectory = nil
    return SetupCheck(
        options: options, dns: TableDNS(records: records), verifyingContext: context, lenientContext: context,
        log: { lines.add($0) })
}

func txt(_ text: String) -> DNSRecordData { .txt([Array(text.utf8)]) }

@Suite struct DMARCTests {
    @Test func aSubdomainInheritsItsParentsRecord() async throws {
        let lines = Lines()
        let check = try makeCheck(["_dmarc.example.com": [txt("v=DMARC1; p=quarantine")]], lines: lines)
        var report = Report()
        await check.checkDMARC(domain: "mail.example.com", report: &report)
        #expect(report.warnings.isEmpty)
        #expect(lines.all.contains("_dmarc.example.com: v=DMARC1; p=quarantine (policy quarantine) (inherited from example.com)"))
    }

    @Test func theTopLevelDomainIsNeverAsked() async throws {
        let lines = Lines()
        let check = try makeCheck(["_dmarc.com": [txt("v=DMARC1; p=reject")]], lines: lines)
        var report = Report()
        await check.checkDMARC(domain: "example.com", report: &report)
        #expect(report.warnings.map(\.summary) == ["DMARC: no record for example.com"])
    }

    @Test func aSubdomainGetsSpAndCaseDoesNotMatter() async throws {
        let lines = Lines()
        let check = try makeCheck(["_dmarc.example.com": [txt("v=DMARC1; p=Reject; sp=Quarantine")]], lines: lines)
        var report = Report()
        await check.checkDMARC(domain: "example.com", report: &report)
        await check.checkDMARC(domain: "lists.example.com", report: &report)
        #expect(report.warnings.isEmpty)
        #expect(lines.all.contains("_dmarc.example.com: v=DMARC1; p=Reject; sp=Quarantine (policy reject)"))
        #expect(
            lines.all.contains(
                "_dmarc.example.com: v=DMARC1; p=Reject; sp=Quarantine (policy quarantine) (inherited from example.com)"))
    }

    @Test func onlyAFirstTagOfDMARC1Counts() async throws {
        let lines = Lines()
        let check = try makeCheck(["_dmarc.example.com": [txt("v=DMARC1x; p=reject"), txt("p=reject; v=DMARC1")]], lines: lines)
        var report = Report()
        await check.checkDMARC(domain: "example.com", report: &report)
        #expect(report.warnings.map(\.summary) == ["DMARC: no record for example.com"])
        let spaced = try makeCheck(["_dmarc.example.com": [txt("v = DMARC1 ; p = none")]], lines: lines)
        report = Report()
        await spaced.checkDMARC(domain: "example.com", report: &report)
        #expect(report.warnings.isEmpty)
    }

    @Test func twoRecordsAreNone() async throws {
        let lines = Lines()
        let check = try makeCheck(
            ["_dmarc.example.com": [txt("v=DMARC1; p=none"), txt("v=DMARC1; p=reject"), txt("other")]], lines: lines)
        var report = Report()
        await check.checkDMARC(domain: "example.com", report: &report)
        #expect(report.warnings.map(\.summary) == ["DMARC: 2 records at _dmarc.example.com; keep one"])
    }
}

@Suite struct ReverseDNSTests {
    @Test func ipv6AddressesUseIP6Arpa() async throws {
        let ip = IPAddress("2001:db8::25")!
        let lines = Lines()
        let check = try makeCheck(
            [
                ip.reverseName: [.ptr("mx.example.com")],
                "mx.example.com": [.aaaa(ip)],
            ], lines: lines)
        var report = Report()
        await check.checkReverseDNS(host: "mx.example.com", ips: [ip], heloName: "MX.example.com.", report: &report)
        #expect(report.warnings.isEmpty)
        #expect(lines.all == ["PTR 2001:db8::25: mx.example.com (forward-confirmed, matches the HELO name)"])
    }

    @Test func aPTRThatDoesNotResolveBack() async throws {
        let ip = IPAddress("192.0.2.7")!
        let lines = Lines()
        let check = try makeCheck(
            [ip.reverseName: [.ptr("host.example.net")], "host.example.net": [.a(IPAddress("192.0.2.8")!)]],
            lines: lines)
        var report = Report()
        await check.checkReverseDNS(host: "mx.example.com", ips: [ip], heloName: nil, report: &report)
        #expect(report.warnings.first?.fixes == ["host.example.net. IN A 192.0.2.7"])
    }
}

@Suite struct ReportTests {
    @Test func exitStatus() {
        var report = Report()
        #expect(report.exitStatus(strict: true) == 0)
        report.warnings.append(Problem("w"))
        #expect(report.exitStatus(strict: false) == 0)
        #expect(report.exitStatus(strict: true) == 1)
        report = Report()
        report.failures.append(Problem("f"))
        #expect(report.exitStatus(strict: false) == 1)
        report = Report()
        report.fatal = true
        #expect(report.exitStatus(strict: false) == 1)
    }

    @Test func longTXTValuesAreSplitInto255ByteStrings() {
        let value = String(repeating: "a", count: 300)
        #expect(Zone.txt("x.test", value) == "x.test. IN TXT \"\(String(repeating: "a", count: 255))\" \"\(String(repeating: "a", count: 45))\"")
        #expect(Zone.txt("x.test", "short") == "x.test. IN TXT \"short\"")
    }

    @Test func zoneTextIsEscaped() {
        #expect(Zone.txt("x.test", #"a"b\c"#) == #"x.test. IN TXT "a\"b\\c""#)
    }

    @Test func controlCharactersAreShownNotSent() {
        #expect(Printable.line("a\u{1b}[31mb\u{07}\u{7f}\u{9b}c ñ\t") == #"a\x1b[31mb\x07\x7f\u{009b}c ñ\x09"#)
    }

    @Test func everyLineIsEscapedOnTheWayOut() throws {
        let lines = Lines()
        let check = try makeCheck([:], lines: lines)
        check.log("bell\u{07}")
        #expect(lines.all == [#"bell\x07"#])
    }

    @Test func spfFixKeepsTheRecord() async throws {
        let lines = Lines()
        let check = try makeCheck(["example.com": [txt("v=spf1 include:_spf.example.net ~all"), txt("google-site-verification=x")]], lines: lines)
        let fixes = await check.spfFixes(domain: "example.com", outcome: .init(result: .softfail))
        #expect(fixes == ["example.com. IN TXT \"v=spf1 mx include:_spf.example.net ~all\""])
    }
}
