import DNS
import Testing

@testable import SPF

/// Macro parsing and expansion (RFC 7208 §7), with the §7.4 examples.
@Suite struct MacroTests {
    /// §7.4: sender strong-bad@email.example.com, client 192.0.2.3.
    static let rfcValues = MacroValues(
        sender: "strong-bad@email.example.com",
        localPart: "strong-bad",
        senderDomain: "email.example.com",
        domain: "email.example.com",
        ip: IPAddress("192.0.2.3")!,
        helo: "mx.example.org",
        validatedName: "mx.example.org",
        receivingHost: "receiver.example.net",
        timestamp: 1_234_567_890
    )

    static func expand(
        _ text: String,
        _ values: MacroValues = rfcValues,
        letters: Set<MacroLetter> = MacroLetter.allLetters
    )
        throws -> String
    {
        try MacroString.parse(Array(text.utf8), letters: letters, allowSpace: true).expand(values)
    }

    /// The single macros of §7.4.
    @Test(arguments: [
        ("%{s}", "strong-bad@email.example.com"),
        ("%{o}", "email.example.com"),
        ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"),
        ("%{d3}", "email.example.com"),
        ("%{d2}", "example.com"),
        ("%{d1}", "com"),
        ("%{dr}", "com.example.email"),
        ("%{d2r}", "example.email"),
        ("%{l}", "strong-bad"),
        ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"),
        ("%{lr-}", "bad.strong"),
        ("%{l1r-}", "strong"),
    ])
    func rfcSingleMacros(_ macro: String, _ expansion: String) throws {
        #expect(try Self.expand(macro) == expansion)
    }

    /// The macro-strings of §7.4, IPv4.
    @Test(arguments: [
        ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
        ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
        ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
    ])
    func rfcMacroStrings(_ macro: String, _ expansion: String) throws {
        #expect(try Self.expand(macro) == expansion)
    }

    /// §7.4's IPv6 example. The RFC prints the nibbles in lower case; this
    /// implementation writes them in upper case as pyspf does (the suite's
    /// v-macro-ip6 explanation requires it), which DNS treats the same.
    @Test func rfcIPv6Example() throws {
        var values = Self.rfcValues
        values.ip = IPAddress("2001:db8::cb01")!
        let expanded = try Self.expand("%{ir}.%{v}._spf.%{d2}", values)
        let rfc = "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
        #expect(expanded.lowercased() == rfc)
        #expect(expanded.hasPrefix("1.0.B.C.0.0."))
        #expect(try Self.expand("%{c}", values) == "2001:db8::cb01")
        #expect(try Self.expand("%{i}", values).hasPrefix("2.0.0.1.0.D.B.8.0.0."))
    }

    @Test func escapesAndLiterals() throws {
        #expect(try Self.expand("a%%b%_c%-d") == "a%b c%20d")
        #expect(try Self.expand("%{d}.") == "email.example.com.")
        #expect(try Self.expand("no macros here") == "no macros here")
    }

    /// Upper-case letters URL-escape everything outside the unreserved set.
    @Test func upperCaseLettersAreURLEscaped() throws {
        var values = Self.rfcValues
        values.localPart = "~jack&jill=up-a_b3.c"
        #expect(try Self.expand("%{L}", values) == "~jack%26jill%3Dup-a_b3.c")
        #expect(try Self.expand("%{l}", values) == "~jack&jill=up-a_b3.c")
        values.helo = "%%%"
        #expect(try Self.expand("%{H}", values) == "%25%25%25")
        values.localPart = "a b/ü"
        #expect(try Self.expand("%{L}", values) == "a%20b%2F%C3%BC")
        #expect(try Self.expand("%{D2R}") == "example.email")
    }

    @Test func multipleDelimitersAndTransformers() throws {
        var values = Self.rfcValues
        values.localPart = "foo-bar+zip+quux"
        #expect(try Self.expand("%{l2r+-}", values) == "bar.foo")
        #expect(try Self.expand("%{lr+-}", values) == "quux.zip.bar.foo")
        #expect(try Self.expand("%{l+}", values) == "foo-bar.zip.quux")
        #expect(try Self.expand("%{L=}", values) == "foo-bar%2Bzip%2Bquux")
        // More parts asked for than exist: all of them.
        #expect(try Self.expand("%{d99}") == "email.example.com")
        #expect(try Self.expand("%{d99999999999999999999}") == "email.example.com")
        // "R" is the reverse transformer too.
        #expect(try Self.expand("%{dR}") == "com.example.email")
    }

    @Test func explanationOnlyLetters() throws {
        #expect(
            try Self.expand("%{c} %{r} %{t} %{v} %{h} %{p}")
                == "192.0.2.3 receiver.example.net 1234567890 in-addr mx.example.org mx.example.org"
        )
        #expect(throws: MacroStringError.invalidMacro) {
            try MacroString.parse(Array("%{c}".utf8), letters: MacroLetter.domainSpecLetters)
        }
        #expect(throws: MacroStringError.invalidMacro) {
            try MacroString.parseDomainSpec(Array("%{r}.example.com".utf8))
        }
        #expect(throws: MacroStringError.invalidMacro) {
            try MacroString.parseDomainSpec(Array("%{t}".utf8))
        }
    }

    @Test(arguments: [
        "%", "%a", "foo%", "%{", "%{d", "%{x}", "%{d0}", "%{d2rr}", "%{d2 }", "%{}", "%{dx}", "%{d2r.-x}", "%{ir",
    ])
    func invalidMacros(_ text: String) {
        #expect(throws: MacroStringError.invalidMacro) {
            try MacroString.parse(Array(text.utf8), letters: MacroLetter.allLetters)
        }
    }

    @Test func invalidCharacters() {
        for text in ["a b", "a\tb", "caf\u{e9}", "a\u{0}b", "\u{96}"] {
            #expect(throws: MacroStringError.invalidCharacter) {
                try MacroString.parse(Array(text.utf8), letters: MacroLetter.allLetters)
            }
        }
        // Spaces are fine in an explain-string.
        #expect(throws: Never.self) {
            try MacroString.parse(Array("a b".utf8), letters: MacroLetter.allLetters, allowSpace: true)
        }
    }

    @Test func parsedShape() throws {
        let parsed = try MacroString.parse(Array("x%{L2r-_}%%y".utf8), letters: MacroLetter.allLetters)
        #expect(
            parsed.pieces == [
                .literal(Array("x".utf8)),
                .macro(Macro(letter: .l, urlEscape: true, rightParts: 2, reverse: true, delimiters: Array("-_".utf8))),
                .percent,
                .literal(Array("y".utf8)),
            ]
        )
        #expect(parsed.uses(.l))
        #expect(!parsed.uses(.p))
    }

    /// domain-spec = macro-string domain-end; domain-end = ( "." toplabel [ "." ] ) / macro-expand
    @Test(arguments: [
        "example.com", "example.com.", "foo.example.xn--zckzah", "%{d}", "_spf.%{d2}", "%{d}.com", "a%%",
        "foo:bar/baz.example.com", "macro%%percent%_%_space%-url-space.example.com", "ptr:lalala.com", ".com",
        "mail.example...com", "x.12-34",
    ])
    func validDomainSpecs(_ text: String) {
        #expect(throws: Never.self) { try MacroString.parseDomainSpec(Array(text.utf8)) }
    }

    @Test(arguments: [
        "", "museum", "museum.", "abc.123", "111.222.33.44", "example.-com", "example.com-", "foo-bar",
        "example.com:8080", "%{d}com", "%{d}.", "example.com/24", "foo.example.com\u{0}", "-all",
    ])
    func invalidDomainSpecs(_ text: String) {
        #expect(throws: MacroStringError.self) { try MacroString.parseDomainSpec(Array(text.utf8)) }
    }

    @Test func topLabels() {
        for label in ["com", "c0m", "0c", "xn--zckzah", "12-34", "a-b-c"] {
            #expect(DomainName.isTopLabel(Array(label.utf8)), "\(label)")
        }
        for label in ["", "123", "-com", "com-", "co_m", "c m", "c.m"] {
            #expect(!DomainName.isTopLabel(Array(label.utf8)), "\(label)")
        }
    }
}
