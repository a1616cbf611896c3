import Testing

@testable import Normalization
@testable import IDNA

@Suite struct UserTests {
    @Test(arguments: [
        ("juan", "juan"), ("JUAN", "juan"), ("Ñandú", "ñandú"), ("n\u{0303}andu\u{0301}", "ñandú"),
        ("ＡＢＣ", "abc"), ("", ""), ("用户", "用户"), ("a.b+c-d_e", "a.b+c-d_e"), ("ΣΑΣ", "σασ"),
    ])
    func normalises(input: String, output: String) throws {
        #expect(try Normalize.user(input) == output)
    }

    @Test(arguments: ["a b", "Ⅳ", "♚", "¹", "a\u{0007}", "tab\there", "\u{00A0}x", "x\u{200B}"])
    func rejects(input: String) {
        #expect(throws: Normalize.Error.self) { try Normalize.user(input) }
    }
}

@Suite struct DomainTests {
    @Test(arguments: [
        ("Example.COM", "example.com"), ("xn--pingino-q2a.example", "pingüino.example"),
        ("XN--PINGINO-Q2A.example", "pingüino.example"), ("pingu\u{0308}ino.example", "pingüino.example"),
        ("xn--fsqu00a.xn--4rr70v", "例子.广告"), ("", ""),
    ])
    func normalises(input: String, output: String) throws {
        #expect(try Normalize.domain(input) == output)
    }

    @Test func badPunycodeIsAnError() {
        #expect(throws: Normalize.Error.self) { try Normalize.domain("xn--a-!.example") }
        #expect(throws: Normalize.Error.self) { try Normalize.domain("xn--99999999999.com") }
        // A lone delimiter: Go's decoder (chasquid's) refuses it; RFC 3492
        // alone would decode it to "".
        #expect(throws: Normalize.Error.self) { try Normalize.domain("xn---") }
        #expect(throws: Normalize.Error.self) { try Normalize.domainToUnicode("a@xn---") }
        #expect(throws: Normalize.Error.self) { try Normalize.domain("xn---abc.example") }
    }

    @Test func addressesSplitAtTheFirstAt() throws {
        #expect(Address.split("a@b@c") == ("a", "b@c"))
        #expect(Address.split("nodomain") == ("nodomain", ""))
        // Per scalar (issue 13 §6): "\u{0D4E}@" is one Character.
        #expect(Address.split("a\u{0D4E}@evil.com@local.com") == ("a\u{0D4E}", "evil.com@local.com"))
        #expect(Address.split("a\u{0600}@b") == ("a\u{0600}", "b"))
        #expect(try Normalize.domain("\u{0301}xn--pingino-q2a.example") == "\u{0301}xn--pingino-q2a.example")
        #expect(try Normalize.domain("xn--pingino-q2a.\u{0600}.example") == "pingüino.\u{0600}.example")
        #expect(try Normalize.address("Ñandú@XN--PINGINO-Q2A.example") == "ñandú@pingüino.example")
        #expect(try Normalize.domainToUnicode("Ñandú@XN--PINGINO-Q2A.example") == "Ñandú@pingüino.example")
        #expect(try Normalize.domainToUnicode("<>") == "<>")
    }
}

@Suite struct PunycodeTests {
    // RFC 3492 §7.1 samples.
    @Test(arguments: [
        ("ü", "tda"), ("bücher", "bcher-kva"), ("例子", "fsqu00a"),
        ("他们为什么不说中文", "ihqwcrb4cv8a8dqg056pqjye"),
        ("Pročprostěnemluvíčesky", "Proprostnemluvesky-uyb24dma41a"),
        ("3年B組金八先生", "3B-ww4c5e180e575a65lsy2b"),
    ])
    func roundTrips(unicode: String, ascii: String) throws {
        #expect(try Punycode.encode(unicode) == ascii)
        #expect(try Punycode.decode(ascii) == unicode)
    }
}

/// Random input to the normalisation functions: a value or an error, never a crash.
@Suite struct NormalizeFuzzTests {
    @Test func randomInputNeverCrashes() {
        var state: UInt64 = 8265
        func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state >> 11
        }
        let ranges: [ClosedRange<UInt32>] = [0x0...0x7F, 0x80...0x24F, 0x300...0x36F, 0x590...0x6FF, 0x2100...0x2BFF, 0xFF00...0xFFEF, 0x10000...0x1FFFF]
        for _ in 0..<5_000 {
            var s = String.UnicodeScalarView()
            for _ in 0..<(next() % 24) {
                let r = ranges[Int(next() % UInt64(ranges.count))]
                if let u = Unicode.Scalar(r.lowerBound + UInt32(next() % UInt64(r.count))) { s.append(u) }
            }
            let input = String(s)
            if let user = try? Normalize.user(input) {
                // Normalising is idempotent.
                #expect((try? Normalize.user(user)) == user, "\(input.debugDescription)")
            }
            _ = try? Normalize.domain(input)
            _ = try? Normalize.address(input + "@" + input)
            _ = try? WireAddress.ascii(input + "@" + input)
        }
    }
}
