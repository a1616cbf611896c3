import Testing

@testable import LocalRPC

@Suite struct FormValuesTests {
    @Test func encodesLikeGo() {
        var v = FormValues()
        v.add("(pipe)", "cmd args")
        v.add("(email)", "r1@r1.com")
        v.add("(email)", "ñ@x")
        #expect(v.encoded() == "%28email%29=r1%40r1.com&%28email%29=%C3%B1%40x&%28pipe%29=cmd+args")
    }

    @Test func decodesWhatItEncodes() throws {
        let v = try FormValues.decode("%28email%29=r1%40r1.com&%28pipe%29=cmd+args&%28email%29=b%7E")
        #expect(v.values("(email)") == ["r1@r1.com", "b~"])
        #expect(v.first("(pipe)") == "cmd args")
        #expect(try FormValues.decode("") == FormValues())
        #expect(throws: FormValues.DecodingError.self) { try FormValues.decode("a=%zz") }
        #expect(throws: FormValues.DecodingError.self) { try FormValues.decode("a=%C3") }
    }
}
