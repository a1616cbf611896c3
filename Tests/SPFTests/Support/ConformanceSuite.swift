import DNS
import Foundation
import Testing
import Yams

@testable import SPF

/// The SPF conformance data directory, Tests/Fixtures/spf, found from this
/// file's path (…/<repo>/Tests/SPFTests/…).
func spfTestdataDirectory(file: String = #filePath) -> String {
    var url = URL(fileURLWithPath: file)
    while url.pathComponents.count > 1, url.lastPathComponent != "Tests" {
        url.deleteLastPathComponent()
    }
    return url.appendingPathComponent("Fixtures/spf").standardized.path
}

/// One test of a conformance file (see Tests/Fixtures/spf/README.md).
struct SPFConformanceCase: Sendable, CustomTestStringConvertible {
    var file: String
    var scenario: String
    var name: String
    var helo: String = ""
    var host: String = ""
    var mailfrom: String = ""
    /// Any of these passes; the first is preferred.
    var results: [SPFResult] = []
    /// The explanation required, "DEFAULT" standing for the default one.
    var explanation: String?
    /// The blitiri variant's reason for not running the test.
    var skip: String?
    var dns = ZoneDNS()
    /// Set on the single stand-in case when the file could not be read.
    var loadError: String?

    var testDescription: String { "\(scenario) / \(name)" }

    /// Runs the check and compares with the expectations, or with those
    /// of `difference` where the file's expectation is known to disagree
    /// with RFC 7208.
    func run(_ difference: KnownDifference? = nil) async {
        if let loadError {
            Issue.record(Comment(rawValue: loadError))
            return
        }
        guard let ip = IPAddress(host) else {
            Issue.record("\(testDescription): host \(host.debugDescription) is not an IP address")
            return
        }
        let checker = SPFChecker(dns: dns, defaultExplanation: "DEFAULT")
        let outcome = await checker.check(ip: ip, helo: helo, sender: mailfrom)
        let acceptable = difference?.results ?? results
        #expect(
            acceptable.contains(outcome.result),
            "\(file): \(testDescription): got \(outcome.result.rawValue) (\(outcome.reason ?? "no reason")), want \(acceptable.map(\.rawValue))"
        )
        if let difference {
            #expect(outcome.reason == difference.reason, "\(file): \(testDescription): \(difference.why)")
        }
        if let explanation {
            #expect(outcome.explanation == explanation, "\(file): \(testDescription): explanation")
        }
    }
}

/// A test whose expectation RFC 7208 contradicts: what RFC 7208 gives
/// instead, and why. The RFC 7208 outcome is asserted in its place, so the
/// test still fails if the implementation drifts.
struct KnownDifference: Sendable {
    var results: [SPFResult]
    var reason: String?
    var why: String
}

enum SPFConformanceSuite {
    struct LoadError: Error, CustomStringConvertible {
        var description: String
    }

    /// The tests of `relativePath` (under the testdata directory), in file
    /// order; or one case that fails saying why the file could not be used.
    static func load(_ relativePath: String) -> [SPFConformanceCase] {
        let path = spfTestdataDirectory() + "/" + relativePath
        do {
            guard FileManager.default.fileExists(atPath: path) else {
                throw LoadError(
                    description:
                        "SPF conformance data missing: \(path) (expected in Tests/Fixtures/spf)"
                )
            }
            let text = try String(contentsOfFile: path, encoding: .utf8)
            return try parse(text, file: relativePath)
        } catch {
            return [
                SPFConformanceCase(
                    file: relativePath,
                    scenario: "load",
                    name: relativePath,
                    loadError: "\(relativePath): \(error)"
                )
            ]
        }
    }

    static func parse(_ text: String, file: String) throws -> [SPFConformanceCase] {
        var cases: [SPFConformanceCase] = []
        for document in try Yams.compose_all(yaml: text) {
            guard let scenario = document.mapping else { throw LoadError(description: "a document is not a map") }
            let title = scenario["description"]?.scalar?.string ?? "(untitled)"
            let dns = try zone(scenario["zonedata"], scenario: title)
            guard let tests = scenario["tests"]?.mapping else { throw LoadError(description: "\(title): no tests") }
            for (key, value) in tests {
                guard let name = key.scalar?.string, let test = value.mapping else {
                    throw LoadError(description: "\(title): a test is not a map")
                }
                var testCase = SPFConformanceCase(file: file, scenario: title, name: name, dns: dns)
                testCase.helo = test["helo"]?.scalar?.string ?? ""
                testCase.mailfrom = test["mailfrom"]?.scalar?.string ?? ""
                guard let host = test["host"]?.scalar?.string else { throw LoadError(description: "\(name): no host") }
                testCase.host = host
                testCase.results = try strings(test["result"], what: "\(name) result").map {
                    guard let result = SPFResult(rawValue: $0) else {
                        throw LoadError(description: "\(name): unknown result \($0)")
                    }
                    return result
                }
                testCase.explanation = test["explanation"]?.scalar?.string
                testCase.skip = test["skip"]?.scalar?.string
                cases.append(testCase)
            }
        }
        return cases
    }

    /// A scalar, or a sequence of scalars.
    static func strings(_ node: Node?, what: String) throws -> [String] {
        if let scalar = node?.scalar { return [scalar.string] }
        if let sequence = node?.sequence {
            return try sequence.map {
                guard let scalar = $0.scalar else { throw LoadError(description: "\(what): not a scalar") }
                return scalar.string
            }
        }
        throw LoadError(description: "\(what): missing")
    }

    /// The zonedata map as a ZoneDNS. TXT/SPF values are one RR each, a
    /// sequence being one RR of several strings; their text goes in as
    /// UTF-8. Names with SPF entries and no TXT entry (TXT: NONE counts as
    /// one) get the SPF records as TXT records too, after their own.
    static func zone(_ node: Node?, scenario: String) throws -> ZoneDNS {
        guard let node else { return ZoneDNS() }
        guard let mapping = node.mapping else { throw LoadError(description: "\(scenario): zonedata is not a map") }
        var zone: [String: [ZoneDNS.Entry]] = [:]
        for (key, value) in mapping {
            guard let owner = key.scalar?.string, let items = value.sequence else {
                throw LoadError(description: "\(scenario): bad zonedata entry")
            }
            var entries: [ZoneDNS.Entry] = []
            var spf: [DNSRecordData] = []
            var hasTXT = false
            for item in items {
                if item.scalar?.string == "TIMEOUT" {
                    entries.append(.failure(.timeout))
                    continue
                }
                guard let pair = item.mapping, pair.count == 1, let first = pair.first,
                    let type = first.key.scalar?.string
                else { throw LoadError(description: "\(owner): bad record \(item)") }
                let data = first.value
                let where_ = "\(owner) \(type)"
                switch type {
                case "TIMEOUT": entries.append(.failure(.timeout))
                case "SERVFAIL": entries.append(.failure(.serverFailure))
                case "CNAMELOOP": entries.append(.failure(.cnameLoop))
                case "A", "AAAA":
                    for text in try strings(data, what: where_) {
                        guard let address = IPAddress(text), address.isIPv4 == (type == "A") else {
                            throw LoadError(description: "\(where_): bad address \(text)")
                        }
                        entries.append(type == "A" ? .record(.a, .a(address)) : .record(.aaaa, .aaaa(address)))
                    }
                case "MX":
                    let fields = try strings(data, what: where_)
                    guard fields.count == 2, let preference = UInt16(fields[0]) else {
                        throw LoadError(description: "\(where_): bad MX")
                    }
                    entries.append(
                        .record(.mx, .mx(preference: preference, exchange: ZoneDNS.withoutTrailingDot(fields[1])))
                    )
                case "PTR", "CNAME":
                    let target = ZoneDNS.withoutTrailingDot(try strings(data, what: where_).first ?? "")
                    entries.append(type == "PTR" ? .record(.ptr, .ptr(target)) : .record(.cname, .cname(target)))
                case "TXT", "SPF":
                    if type == "TXT" { hasTXT = true }
                    if type == "TXT", data.scalar?.string == "NONE" { continue }
                    let record = DNSRecordData.txt(try strings(data, what: where_).map { Array($0.utf8) })
                    if type == "TXT" {
                        entries.append(.record(.txt, record))
                    } else {
                        spf.append(record)
                        entries.append(.record(DNSRecordType(rawValue: 99), record))
                    }
                default:
                    throw LoadError(description: "\(where_): unknown record type")
                }
            }
            if !hasTXT { entries += spf.map { .record(.txt, $0) } }
            zone[owner, default: []] += entries
        }
        return ZoneDNS(zone)
    }
}

extension ZoneDNS {
    static func withoutTrailingDot(_ name: String) -> String {
        name.hasSuffix(".") ? String(name.dropLast()) : name
    }
}
