import Testing

@testable import Aliases

@Suite struct AliasesFileTests {
    let rules = AliasRules()

    func parse(_ text: String, domain: String = "dom") throws -> [String: [Recipient]] {
        try AliasesFile.parse(text, domain: domain, rules: rules, path: "/etc/chasquid/domains/dom/aliases")
    }

    @Test func commentsBlankLinesAndWhitespace() throws {
        let aliases = try parse("""
            # a comment
               # an indented comment

            \tuser :  other  \r
            a: b
            """)
        #expect(aliases == ["user@dom": [Recipient("other@dom")], "a@dom": [Recipient("b@dom")]])
    }

    @Test func emailListsSkipEmptyItemsAndKeepDomains() throws {
        let aliases = try parse("list: a, b@remote.org,, C@Remote.ORG,")
        #expect(aliases["list@dom"] == [Recipient("a@dom"), Recipient("b@remote.org"), Recipient("c@remote.org")])
    }

    @Test func pipeTargetsKeepTheCommandLine() throws {
        let aliases = try parse("cmd: |  /usr/bin/thing --flag a@b ")
        #expect(aliases["cmd@dom"] == [Recipient("/usr/bin/thing --flag a@b", kind: .pipe)])
    }

    @Test func viaTargetsAreForwards() throws {
        let aliases = try parse("fwd: x@remote via mx1.example.com / mx2.example.com:2525, y via smart")
        #expect(aliases["fwd@dom"] == [
            Recipient("x@remote", kind: .forward, via: ["mx1.example.com", "mx2.example.com:2525"]),
            Recipient("y@dom", kind: .forward, via: ["smart"]),
        ])
    }

    @Test func catchAllKey() throws {
        #expect(try parse("*: postmaster")["*@dom"] == [Recipient("postmaster@dom")])
    }

    @Test func keysDropCharactersOnlyBeforeTheSuffix() throws {
        let aliases = try parse("Jo.An.Na+Fu.Ll: x")
        #expect(aliases.keys.sorted() == ["joanna+fu.ll@dom"])
    }

    @Test func keysAndTargetsAreNormalised() throws {
        let aliases = try parse("ÑANDÚ: PingÜino@XN--PINGINO-Q2A.example", domain: "dom")
        #expect(aliases["ñandú@dom"] == [Recipient("pingüino@pingüino.example")])
    }

    @Test func aKeyThatFailsNormalisationIsKeptAsWritten() throws {
        #expect(try parse("♚: a").keys.sorted() == ["♚@dom"])
    }

    @Test func theLastDuplicateWins() throws {
        #expect(try parse("a: b\na: c")["a@dom"] == [Recipient("c@dom")])
    }

    @Test(arguments: [
        ("a: b\nno colon here", 2, "missing ':' in line"),
        ("\n\n: b", 3, "missing address or alias"),
        ("a:   ", 1, "missing address or alias"),
        ("a@b: c", 1, "left-side: cannot contain @"),
        ("a: |  ", 1, "right-side: the pipe alias is missing a command"),
        ("a: via x", 1, "right-side"),
        ("a: x via ", 1, "right-side: normalizing address"),
        ("a: x via b/ ", 1, "right-side: empty server in via list"),
        ("a: x via a//b", 1, "right-side: empty server in via list"),
        ("a: b, ♚", 1, "right-side: normalizing address"),
        ("# support\nsupport: alice@", 2, "right-side: address \"alice@\" has no domain after the @"),
        ("a: b, alice@ via mx.example", 1, "right-side: address \"alice@\" has no domain after the @"),
        ("a: @example.com", 1, "right-side: address \"@example.com\" has no user before the @"),
    ])
    func malformedLinesNameTheFileAndLine(text: String, line: Int, message: String) {
        #expect {
            try parse(text)
        } throws: { error in
            let e = error as! AliasesFileError
            return e.line == line && e.message.hasPrefix(message)
                && e.description.hasPrefix("\"/etc/chasquid/domains/dom/aliases\" line \(line): ")
        }
    }

    @Test func hookOutputSyntax() throws {
        #expect(try AliasesFile.parseRightSide("", domain: "d") == [])
        #expect(try AliasesFile.parseRightSide("a, b@x", domain: "d") == [Recipient("a@d"), Recipient("b@x")])
    }

    /// Issue 13 §6: the hook may echo a client's text; a delimiter fused
    /// with a Prepend scalar still delimits, as in chasquid.
    @Test func delimitersAreFoundPerScalar() throws {
        // ",\u{0301}" is one Character; split per scalar, "\u{0301}b" is an
        // item of its own (and fails PRECIS's Bidi Rule on its own).
        #expect {
            try AliasesFile.parseRightSide("a,\u{0301}b", domain: "d")
        } throws: { error in
            (error as? AliasesFile.RightSideError)?.description == "normalizing address \"\u{0301}b\": precis: failed Bidi Rule"
        }
        // "\u{0600} " is one Character.
        #expect(
            try AliasesFile.parseRightSide("x@y\u{0600} via relay.example", domain: "d")
                == [Recipient("x@y\u{0600}", kind: .forward, via: ["relay.example"])])
        let file = try AliasesFile.parse(
            "left\u{0600}: target\n", domain: "d", rules: AliasRules(), path: "aliases")
        #expect(file.keys.contains("left\u{0600}@d"))
        #expect(throws: AliasesFileError.self) {
            try AliasesFile.parse("a\u{0600}@b: target\n", domain: "d", rules: AliasRules(), path: "aliases")
        }
    }
}

@Suite struct AliasRulesTests {
    @Test func cleaning() {
        let rules = AliasRules(suffixSeparators: "+-", dropCharacters: "._")
        #expect(rules.removeDropCharacters("J.u_an+ta.g@d") == "juan+ta.g@d")
        #expect(rules.removeDropsAndSuffix("J.u_an+ta.g@d") == "juan@d")
        #expect(rules.removeDropsAndSuffix("j.u-an+x@d") == "ju@d")
        // Empty rules clean nothing but case.
        let none = AliasRules(suffixSeparators: "", dropCharacters: "")
        #expect(none.removeDropsAndSuffix("A.b+c@d") == "a.b+c@d")
    }

    /// Per scalar, as chasquid's per-rune rules (issue 13 §6): a drop
    /// character or a separator after a Prepend scalar still counts.
    @Test func cleaningIsPerScalar() {
        let rules = AliasRules(suffixSeparators: "+", dropCharacters: ".")
        #expect(rules.removeDropsAndSuffix("a\u{0600}.b@d") == "a\u{0600}b@d")
        #expect(rules.removeDropsAndSuffix("a\u{0600}+tag@d") == "a\u{0600}@d")
        #expect(rules.removeDropCharacters("a\u{0600}.b\u{0600}+t.g@d") == "a\u{0600}b\u{0600}+t.g@d")
    }
}
