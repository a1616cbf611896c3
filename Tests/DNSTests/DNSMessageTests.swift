import TestSupport
import Testing

@testable import DNS

/// Builds answers by hand, octet by octet, so the parser is checked against
/// the RFC layout rather than against our own encoder.
struct MessageBuilder {
    var bytes: [UInt8] = []

    mutating func u16(_ value: UInt16) { bytes += [UInt8(value >> 8), UInt8(value & 0xff)] }
    mutating func u32(_ value: UInt32) { u16(UInt16(value >> 16)); u16(UInt16(value & 0xffff)) }
    mutating func name(_ text: String) {
        for label in text.split(separator: ".") {
            bytes.append(UInt8(label.utf8.count))
            bytes += Array(label.utf8)
        }
        bytes.append(0)
    }
    mutating func header(id: UInt16 = 0x1234, flags: UInt16 = 0x8180, qd: UInt16 = 1, an: UInt16 = 0, ns: UInt16 = 0, ar: UInt16 = 0) {
        u16(id); u16(flags); u16(qd); u16(an); u16(ns); u16(ar)
    }
    mutating func question(_ text: String, _ type: DNSRecordType) {
        name(text); u16(type.rawValue); u16(1)
    }
    /// A record whose owner is a pointer to `pointer`, with raw rdata.
    mutating func record(pointer: UInt16, type: DNSRecordType, rdata: [UInt8], ttl: UInt32 = 300) {
        u16(0xc000 | pointer); u16(type.rawValue); u16(1); u32(ttl); u16(UInt16(rdata.count))
        bytes += rdata
    }
}

@Suite struct DNSQueryEncodingTests {
    @Test func queryHasTheRFC1035LayoutWithAnOPTRecord() throws {
        let query = try DNSWire.query(id: 0xbeef, name: "Example.COM.", type: .mx)
        let expected: [UInt8] =
            [0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]
            + [7] + Array("Example".utf8) + [3] + Array("COM".utf8) + [0]
            + [0, 15, 0, 1]
            + [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]
        #expect(query == expected)
    }

    @Test func queryWithoutEDNS() throws {
        let query = try DNSWire.query(id: 1, name: "a.b", type: .txt, ednsPayloadSize: nil)
        #expect(query == [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 97, 1, 98, 0, 0, 16, 0, 1])
    }

    @Test(arguments: [
        "a..b", String(repeating: "x", count: 64) + ".com", "ñ.example",
        Array(repeating: String(repeating: "y", count: 63), count: 4).joined(separator: "."),
    ])
    func invalidNamesAreRefused(_ name: String) {
        #expect(throws: DNSParseError.self) { try DNSWire.query(id: 1, name: name, type: .a) }
    }

    @Test func longestValidNameIsAccepted() throws {
        // 3 × 63 + 61 octets of labels + 4 length octets + root = 255.
        let name = Array(repeating: String(repeating: "y", count: 63), count: 3).joined(separator: ".") + "."
            + String(repeating: "z", count: 61)
        #expect(throws: Never.self) { try DNSWire.query(id: 1, name: name, type: .a) }
    }
}

@Suite struct DNSResponseParsingTests {
    @Test func answersOfEveryTypeWeUseWithCompression() throws {
        var message = MessageBuilder()
        message.header(an: 6)
        message.question("example.com", .mx)  // name at offset 12
        message.record(pointer: 12, type: .a, rdata: [192, 0, 2, 1])
        message.record(pointer: 12, type: .aaaa, rdata: [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1])
        // MX 10 mail.<pointer to example.com>
        message.record(pointer: 12, type: .mx, rdata: [0, 10, 4] + Array("mail".utf8) + [0xc0, 12])
        message.record(pointer: 12, type: .txt, rdata: [3] + Array("v=s".utf8) + [4] + Array("pf1 ".utf8) + [0])
        message.record(pointer: 12, type: .cname, rdata: [2] + Array("cn".utf8) + [0xc0, 12])
        message.record(pointer: 12, type: DNSRecordType(rawValue: 99), rdata: [1, 2, 3])
        let response = try DNSWire.parse(message.bytes)
        #expect(response.header.id == 0x1234)
        #expect(response.header.isResponse)
        #expect(!response.header.isTruncated)
        #expect(response.header.responseCode == .noError)
        #expect(response.questions == [DNSQuestion(name: "example.com", type: .mx)])
        #expect(response.answers.map(\.name) == Array(repeating: "example.com", count: 6))
        #expect(response.answers.map(\.ttl) == Array(repeating: 300, count: 6))
        #expect(
            response.answers.map(\.data) == [
                .a(IPAddress("192.0.2.1")!), .aaaa(IPAddress("2001:db8::1")!),
                .mx(preference: 10, exchange: "mail.example.com"),
                .txt([Array("v=s".utf8), Array("pf1 ".utf8), []]),
                .cname("cn.example.com"),
                .other(type: DNSRecordType(rawValue: 99), data: [1, 2, 3]),
            ])
    }

    @Test func nxdomainAndTruncationFlags() throws {
        var message = MessageBuilder()
        message.header(flags: 0x8383)  // QR RD RA TC=0, RCODE 3
        message.question("nope.example", .a)
        let response = try DNSWire.parse(message.bytes)
        #expect(response.header.responseCode == .nameError)
        var truncated = MessageBuilder()
        truncated.header(flags: 0x8380 | 0x0200)
        truncated.question("big.example", .txt)
        #expect(try DNSWire.parse(truncated.bytes).header.isTruncated)
    }

    @Test func labelsWithDotsOrControlOctetsAreEscaped() throws {
        var message = MessageBuilder()
        message.header(an: 1)
        message.question("x", .ptr)
        message.record(pointer: 12, type: .ptr, rdata: [3, 0x61, 0x2e, 0x01, 1, 0x62, 0])
        let response = try DNSWire.parse(message.bytes)
        #expect(response.answers[0].data == .ptr("a\\.\\001.b"))
    }

    /// Hostile or broken messages: each must throw, not trap or loop.
    static let hostile: [(String, [UInt8])] = {
        var cases: [(String, [UInt8])] = []
        cases.append(("empty", []))
        cases.append(("short header", [0x12, 0x34, 0x81]))
        var selfPointer = MessageBuilder()
        selfPointer.header()
        selfPointer.bytes += [0xc0, 12, 0, 1, 0, 1]  // the question's name points at itself
        cases.append(("pointer to itself", selfPointer.bytes))
        var forward = MessageBuilder()
        forward.header()
        forward.bytes += [0xc0, 20, 0, 1, 0, 1, 1, 97, 0]
        cases.append(("forward pointer", forward.bytes))
        var loop = MessageBuilder()
        loop.header(an: 1)
        loop.question("a", .a)  // 12: 1 'a' 0 → the loop below is label + pointer back to it
        loop.bytes += [1, 0x62, 0xc0, UInt8(loop.bytes.count), 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]
        cases.append(("label then pointer to itself", loop.bytes))
        var pastEnd = MessageBuilder()
        pastEnd.header()
        pastEnd.bytes += [10, 97, 98]
        cases.append(("label past the end", pastEnd.bytes))
        var badType = MessageBuilder()
        badType.header()
        badType.bytes += [0x40, 0, 0, 1, 0, 1]
        cases.append(("extended label type", badType.bytes))
        var rdataPastEnd = MessageBuilder()
        rdataPastEnd.header(an: 1)
        rdataPastEnd.question("a", .a)
        rdataPastEnd.bytes += [0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 200, 1, 2, 3, 4]
        cases.append(("rdata length past the end", rdataPastEnd.bytes))
        var shortA = MessageBuilder()
        shortA.header(an: 1)
        shortA.question("a", .a)
        shortA.record(pointer: 12, type: .a, rdata: [1, 2, 3])
        cases.append(("A record of 3 octets", shortA.bytes))
        var txtOverflow = MessageBuilder()
        txtOverflow.header(an: 1)
        txtOverflow.question("a", .txt)
        txtOverflow.record(pointer: 12, type: .txt, rdata: [5, 97, 98])
        txtOverflow.bytes += [99, 100, 101]
        cases.append(("TXT string longer than its record", txtOverflow.bytes))
        var mxNameOverflow = MessageBuilder()
        mxNameOverflow.header(an: 1)
        mxNameOverflow.question("a", .mx)
        mxNameOverflow.record(pointer: 12, type: .mx, rdata: [0, 10, 1, 97])
        mxNameOverflow.bytes += [0]
        cases.append(("MX name spilling past its record", mxNameOverflow.bytes))
        var missingAnswers = MessageBuilder()
        missingAnswers.header(an: 3)
        missingAnswers.question("a", .a)
        missingAnswers.record(pointer: 12, type: .a, rdata: [1, 2, 3, 4])
        cases.append(("fewer answers than counted", missingAnswers.bytes))
        var longName = MessageBuilder()
        longName.header()
        for _ in 0..<5 { longName.bytes += [63] + Array(repeating: 0x61, count: 63) }
        longName.bytes += [0, 0, 1, 0, 1]
        cases.append(("name over 255 octets", longName.bytes))
        return cases
    }()

    @Test(arguments: hostile.indices)
    func hostileMessagesThrow(_ index: Int) {
        let (label, bytes) = Self.hostile[index]
        #expect(throws: DNSParseError.self, "\(label)") { try DNSWire.parse(bytes) }
    }

    /// Random mutations of a valid answer either parse or throw.
    @Test func mutatedAnswersNeverTrap() {
        var message = MessageBuilder()
        message.header(an: 3, ar: 1)
        message.question("example.com", .mx)
        message.record(pointer: 12, type: .mx, rdata: [0, 10, 4] + Array("mail".utf8) + [0xc0, 12])
        message.record(pointer: 12, type: .txt, rdata: [3] + Array("abc".utf8))
        message.record(pointer: 12, type: .a, rdata: [1, 2, 3, 4])
        message.bytes += [0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]
        var generator = SplitMix64(seed: 0x5eed)
        var parsed = 0
        for _ in 0..<20_000 {
            var bytes = message.bytes
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                let position = Int.random(in: 0..<bytes.count, using: &generator)
                bytes[position] = UInt8.random(in: 0...255, using: &generator)
            }
            if Bool.random(using: &generator) { bytes.removeLast(Int.random(in: 0..<bytes.count, using: &generator)) }
            if (try? DNSWire.parse(bytes)) != nil { parsed += 1 }
        }
        // Some mutations only touch data (TTLs, addresses) and must still parse.
        #expect(parsed > 100)
    }
}

typealias SplitMix64 = SeededRandom
