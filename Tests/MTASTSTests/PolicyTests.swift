import Testing

@testable import MTASTS

@Suite struct STSPolicyTests {
    /// RFC 8461 §3.2's example.
    static let example = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n"

    @Test func parsesTheRFCExample() throws {
        let policy = STSPolicy(parsing: Self.example)
        #expect(policy.version == "STSv1")
        #expect(policy.mode == .enforce)
        #expect(policy.mxPatterns == ["mail.example.com", "*.example.net", "backupmx.example.com"])
        #expect(policy.maxAge == 604800)
        try policy.check()
        #expect(policy.goDescription == "{Version:STSv1 Mode:enforce MXs:[mail.example.com *.example.net backupmx.example.com] MaxAge:168h0m0s}")
    }

    @Test func lfOnlyAndSpacesAndUnknownKeys() throws {
        let policy = STSPolicy(parsing: "version:STSv1\nmode:   testing  \nfoo: bar\nnot a field\nmx: a.test\nmax_age: 60\n")
        #expect(policy.mode == .testing)
        #expect(policy.mxPatterns == ["a.test"])
        try policy.check()
    }

    @Test(arguments: [
        ("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1", STSPolicy.Invalid.unknownVersion),
        ("version: STSv1\nmode: enforce\nmx: a\nmax_age: 0", .invalidMaxAge),
        ("version: STSv1\nmode: enforce\nmx: a\nmax_age: -5", .invalidMaxAge),
        ("version: STSv1\nmode: enforce\nmx: a\nmax_age: 00000864001", .invalidMaxAge),
        ("version: STSv1\nmode: enforce\nmx: a\nmax_age: 1e5", .invalidMaxAge),
        ("version: STSv1\nmode: enforce\nmx: a", .invalidMaxAge),
        ("version: STSv1\nmode: report\nmx: a\nmax_age: 1", .invalidMode),
        ("version: STSv1\nmode: none\nmax_age: 1", .invalidMX),
    ])
    func invalidPolicies(text: String, expected: STSPolicy.Invalid) {
        #expect(throws: expected) { try STSPolicy(parsing: text).check() }
    }

    @Test func aMaxAgeAboveAYearIsInvalid() {
        let policy = STSPolicy(parsing: "version: STSv1\nmode: enforce\nmx: a\nmax_age: 9999999999")
        #expect(throws: STSPolicy.Invalid.invalidMaxAge) { try policy.check() }
        #expect(policy.maxAge == 9_999_999_999)
        // Printing it must not trap (Go's Duration wraps there).
        #expect(policy.goDescription.hasPrefix("{Version:STSv1 Mode:enforce MXs:[a] MaxAge:"))
        #expect(throws: STSPolicy.Invalid.invalidMaxAge) {
            try STSPolicy(parsing: "version: STSv1\nmode: enforce\nmx: a\nmax_age: 31557601").check()
        }
        #expect((try? STSPolicy(parsing: "version: STSv1\nmode: enforce\nmx: a\nmax_age: 31557600").check()) != nil)
    }

    @Test func invalidTextsAreNamedAsChasquidNamesThem() {
        #expect(STSPolicy.Invalid.unknownVersion.description == "unknown policy version")
        #expect(STSPolicy.Invalid.invalidMX.description == "invalid mx")
    }

    @Test func mxMatching() {
        #expect(STSPolicy.matches("mail.example.com", pattern: "mail.example.com"))
        #expect(STSPolicy.matches("MAIL.Example.COM.", pattern: "mail.example.com"))
        #expect(STSPolicy.matches("mx1.example.net", pattern: "*.example.net"))
        // A wildcard covers exactly one label, never the bare domain.
        #expect(!STSPolicy.matches("a.b.example.net", pattern: "*.example.net"))
        #expect(!STSPolicy.matches("example.net", pattern: "*.example.net"))
        #expect(!STSPolicy.matches("mx.example.org", pattern: "*.example.net"))
        // Compared in ASCII form.
        #expect(STSPolicy.matches("mx.ñandú.test", pattern: "mx.xn--and-6ma2c.test"))
    }

    @Test func onlyEnforceRestrictsMX() {
        var policy = STSPolicy(parsing: "version: STSv1\nmode: testing\nmx: a.test\nmax_age: 1")
        #expect(policy.allows(mx: "b.test"))
        policy.modeText = "enforce"
        #expect(!policy.allows(mx: "b.test"))
        #expect(policy.allows(mx: "a.test"))
    }
}

@Suite struct STSRecordTests {
    @Test func findsTheRecord() throws {
        #expect(
            try STSRecord.find(in: ["v=spf1 -all", "v=STSv1; id=20160831085700Z;"])
                == STSRecord(id: "20160831085700Z", problem: nil))
        #expect(try STSRecord.find(in: ["v=STSv1;id=abc"]).id == "abc")
    }

    @Test func rfcProblemsAreNotedNotFatal() throws {
        #expect(throws: STSRecord.Problem.missing) { try STSRecord.find(in: ["v=spf1 -all"]) }
        #expect(try STSRecord.find(in: ["v=STSv1; id=a;", "v=STSv1; id=b;"]).problem == .several(2))
        let dashed = try STSRecord.find(in: ["v=STSv1; id=no-dashes;"])
        #expect(dashed.id == nil && dashed.problem == .invalid("v=STSv1; id=no-dashes;"))
        #expect(try STSRecord.find(in: ["v=STSv1;"]).problem == .invalid("v=STSv1;"))
        #expect(try STSRecord.find(in: ["v=STSv1; id=\(String(repeating: "a", count: 33));"]).id == nil)
        #expect(STSRecord.Problem.missing.description == "MTA-STS TXT record missing")
    }
}
