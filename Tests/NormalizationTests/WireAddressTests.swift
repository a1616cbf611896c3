import Testing

@testable import Normalization

@Suite struct WireAddressTests {
    @Test func domainsBecomeALabels() throws {
        #expect(try WireAddress.ascii("juan@pingüino.example") == "juan@xn--pingino-q2a.example")
        #expect(try WireAddress.ascii("juan@例子.广告") == "juan@xn--fsqu00a.xn--4rr70v")
        #expect(try WireAddress.ascii("Juan@Example.COM") == "Juan@example.com")
        #expect(try WireAddress.ascii("<>") == "<>")
    }

    @Test func nonASCIILocalPartsCannotGo() {
        #expect(throws: WireAddress.Failure.nonASCIILocalPart("ñandú@example.com")) {
            try WireAddress.ascii("ñandú@example.com")
        }
        #expect(WireAddress.needsSMTPUTF8("ñandú@example.com"))
        #expect(!WireAddress.needsSMTPUTF8("a@example.com"))
    }

    @Test func invalidDomainsAreReported() {
        #expect(throws: WireAddress.Failure.self) { try WireAddress.ascii("a@bad..domain") }
        #expect(throws: WireAddress.Failure.self) { try WireAddress.ascii("a@-leading.example") }
    }
}
