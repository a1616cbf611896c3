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
}
