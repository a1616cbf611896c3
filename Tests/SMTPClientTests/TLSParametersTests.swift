import Testing

import SMTPCore

@Suite struct ServerHelloParserTests {
    /// A ServerHello record: handshake type 2, a 32-byte random, a session
    /// id of `sessionID` bytes, then the suite.
    static func serverHello(suite: UInt16, sessionID: Int = 32) -> [UInt8] {
        var body: [UInt8] = [0x03, 0x03] + [UInt8](repeating: 0xAB, count: 32)
        body += [UInt8(sessionID)] + [UInt8](repeating: 0x01, count: sessionID)
        body += [UInt8(suite >> 8), UInt8(suite & 0xFF), 0x00]
        let handshake: [UInt8] = [0x02, 0x00, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
        return [0x16, 0x03, 0x03, UInt8(handshake.count >> 8), UInt8(handshake.count & 0xFF)] + handshake
    }

    @Test func readsTheSuite() {
        var parser = ServerHelloParser()
        parser.feed(Self.serverHello(suite: 0x1301))
        #expect(parser.cipherSuite == 0x1301)
        #expect(parser.finished)
    }

    @Test func byteAtATime() {
        var parser = ServerHelloParser()
        for byte in Self.serverHello(suite: 0xC02F, sessionID: 0) { parser.feed([byte]) }
        #expect(parser.cipherSuite == 0xC02F)
    }

    @Test func aHandshakeSplitAcrossRecords() {
        let record = Self.serverHello(suite: 0xCCA8)
        let handshake = Array(record[5...])
        let first = Array(handshake[..<20]), second = Array(handshake[20...])
        var parser = ServerHelloParser()
        parser.feed([0x16, 0x03, 0x03, 0x00, UInt8(first.count)] + first)
        #expect(parser.cipherSuite == nil && !parser.finished)
        parser.feed([0x16, 0x03, 0x03, 0x00, UInt8(second.count)] + second)
        #expect(parser.cipherSuite == 0xCCA8)
    }

    @Test func somethingElseGivesUp() {
        var alert = ServerHelloParser()
        alert.feed([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])
        #expect(alert.finished && alert.cipherSuite == nil)
        var other = ServerHelloParser()
        other.feed([0x16, 0x03, 0x03, 0x00, 0x04, 0x0B, 0x00, 0x00, 0x00])
        #expect(other.finished && other.cipherSuite == nil)
    }

    @Test func malformedHellosGiveNoSuite() {
        // A session id longer than 32 bytes.
        var long = Self.serverHello(suite: 0x1301, sessionID: 33)
        var parser = ServerHelloParser()
        parser.feed(long)
        #expect(parser.finished && parser.cipherSuite == nil)
        // A handshake length that ends before the suite.
        long = Self.serverHello(suite: 0x1301, sessionID: 0)
        long[6] = 0
        long[7] = 0
        long[8] = 10
        parser = ServerHelloParser()
        parser.feed(long)
        #expect(parser.finished && parser.cipherSuite == nil)
    }

    @Test func emptyRecordsEndAtTheLimit() {
        var parser = ServerHelloParser()
        let empty: [UInt8] = [0x16, 0x03, 0x03, 0x00, 0x00]
        for _ in 0..<(ServerHelloParser.limit / empty.count + 1) where !parser.finished { parser.feed(empty) }
        #expect(parser.finished && parser.cipherSuite == nil)
    }

    @Test func names() {
        #expect(TLSParameters.versionName(0x0304) == "TLS-1.3")
        #expect(TLSParameters.versionName(0x7f1c) == "TLS-0x7f1c")
        #expect(TLSParameters.cipherSuiteName(0x1302) == "TLS_AES_256_GCM_SHA384")
        #expect(TLSParameters.cipherSuiteName(0x00ff) == "TLS_UNKNOWN_CIPHER_SUITE-0x00ff")
    }
}
