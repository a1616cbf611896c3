import Foundation
import Synchronization
import TestSupport
import Testing

@testable import LMTPDelivery

/// An LMTP server that accepts what `verdicts` says: per command verb, the
/// reply (the default is a plain success); the reply after the data is
/// `afterData`.
func lmtpServer(
    at path: String, replies: [String: String] = [:], afterData: String = "250 2.0.0 <r@d> Saved\r\n"
) throws -> ScriptedSocket {
    let inData = Mutex(false)
    return try ScriptedSocket(path: path, greeting: "220 lmtp.test Dovecot ready.\r\n") { line in
        let stripped = line.hasSuffix("\r") ? String(line.dropLast()) : line
        if inData.withLock({ $0 }) {
            guard stripped == "." else { return nil }
            inData.withLock { $0 = false }
            return afterData
        }
        let verb = String(stripped.prefix { $0 != " " && $0 != ":" }).uppercased()
        if let reply = replies[verb] { return reply }
        switch verb {
        case "LHLO": return "250-lmtp.test\r\n250-8BITMIME\r\n250 PIPELINING\r\n"
        case "DATA":
            inData.withLock { $0 = true }
            return "354 OK\r\n"
        case "QUIT": return "221 2.0.0 Bye\r\n"
        default: return "250 2.1.0 OK\r\n"
        }
    }
}

func options(_ path: String, permanent: Bool = false) -> LMTPDelivery.Options {
    var o = LMTPDelivery.Options()
    o.address = path
    o.from = "from@a.test"
    o.recipient = "rcpt@b.test"
    o.hostname = "host.test"
    o.permanentOn5xx = permanent
    o.timeout = .seconds(5)
    return o
}

func chunks(_ parts: [String]) -> () throws -> [UInt8] {
    var remaining = parts.map { Array($0.utf8) }
    return { remaining.isEmpty ? [] : remaining.removeFirst() }
}

@Suite struct LMTPDeliveryTests {
    let dir = TempDir(prefix: "lmtp-")

    @Test func aDeliveryIsTheWholeDialogueDotStuffed() throws {
        let server = try lmtpServer(at: dir.path + "/s")
        defer { server.stop() }
        let outcome = LMTPDelivery.deliver(options(server.path), read: chunks(["Subject: x\n\n.dot\nlast", " line"]))
        #expect(outcome == .delivered)
        // The QUIT may still be on its way to the server's thread.
        for _ in 0..<200 where !server.transcript.hasSuffix("QUIT\r\n") { usleep(10_000) }
        #expect(
            server.transcript
                == "LHLO host.test\r\nMAIL FROM:<from@a.test>\r\nRCPT TO:<rcpt@b.test>\r\nDATA\r\n"
                + "Subject: x\r\n\r\n..dot\r\nlast line\r\n.\r\nQUIT\r\n")
    }

    @Test func theNullSenderIsSentEmpty() throws {
        let server = try lmtpServer(at: dir.path + "/s")
        defer { server.stop() }
        var o = options(server.path)
        o.from = "<>"
        #expect(LMTPDelivery.deliver(o, read: chunks(["x\n"])) == .delivered)
        #expect(server.transcript.contains("MAIL FROM:<>\r\n"))
    }

    /// The recipient's reply after the data is the verdict: a refusal
    /// there is never a success (the way LMTP setups lose mail).
    @Test func aRefusalAfterTheDataIsAFailure() throws {
        let server = try lmtpServer(at: dir.path + "/s", afterData: "452 4.2.2 <r@d> Mailbox is full\r\n")
        defer { server.stop() }
        #expect(
            LMTPDelivery.deliver(options(server.path), read: chunks(["x\n"]))
                == LMTPDelivery.Outcome(
                    exitStatus: 75, message: "Delivery failed remotely: 452 \"4.2.2 <r@d> Mailbox is full\""))
    }

    @Test func aDroppedConnectionAfterTheDataIsAFailure() throws {
        let server = try lmtpServer(at: dir.path + "/s", afterData: "<close>")
        defer { server.stop() }
        #expect(
            LMTPDelivery.deliver(options(server.path), read: chunks(["x\n"]))
                == LMTPDelivery.Outcome(exitStatus: 75, message: "Delivery failed remotely: EOF"))
    }

    /// chasquid exits 75 on a 5xx too (it retries until it gives up); the
    /// opt-in flag makes it 2, so chasquid bounces at once.
    @Test(arguments: [false, true])
    func anUnknownUserIsTemporaryUnlessAskedOtherwise(permanent: Bool) throws {
        let server = try lmtpServer(
            at: dir.path + "/s", replies: ["RCPT": "550-5.1.1 <rcpt@b.test> User doesn't exist\r\n550 5.1.1 really\r\n"])
        defer { server.stop() }
        let outcome = LMTPDelivery.deliver(options(server.path, permanent: permanent), read: chunks(["x\n"]))
        #expect(outcome.exitStatus == (permanent ? 2 : 75))
        #expect(
            outcome.message
                == "Sent \"RCPT TO:<rcpt@b.test>\", got 550 \"5.1.1 <rcpt@b.test> User doesn't exist\\n5.1.1 really\"")
    }

    @Test func aTemporaryRefusalStaysTemporaryWithTheFlag() throws {
        let server = try lmtpServer(at: dir.path + "/s", replies: ["MAIL": "451 4.3.0 try later\r\n"])
        defer { server.stop() }
        #expect(LMTPDelivery.deliver(options(server.path, permanent: true), read: chunks(["x\n"])).exitStatus == 75)
    }

    @Test func aBadGreetingOrNoServerIsTemporary() throws {
        let server = try ScriptedSocket(path: dir.path + "/g", greeting: "554 go away\r\n") { _ in nil }
        defer { server.stop() }
        #expect(
            LMTPDelivery.deliver(options(server.path), read: chunks([]))
                == LMTPDelivery.Outcome(exitStatus: 75, message: "Server greeting error: 554 \"go away\""))
        let missing = dir.path + "/none"
        #expect(
            LMTPDelivery.deliver(options(missing), read: chunks([]))
                == LMTPDelivery.Outcome(
                    exitStatus: 75,
                    message: "Error connecting to (unix, \(missing)): dial unix \(missing): connect: no such file or directory"))
    }

    @Test func usageAndEncodingErrorsExit2() {
        var o = options("")
        #expect(
            LMTPDelivery.deliver(o, read: chunks([]))
                == LMTPDelivery.Outcome(exitStatus: 2, message: "No LMTP server address given (use --addr)"))
        o.address = "/x"
        o.recipient = "a@b\r\nRCPT TO:<evil@x>"
        #expect(LMTPDelivery.deliver(o, read: chunks([])).exitStatus == 2)
    }

    @Test func toPunyEncodesTheWholeString() {
        #expect(LMTPDelivery.punyEncoded("fröm") == "xn--frm-tna")
        #expect(LMTPDelivery.punyEncoded("juan@ñandú.test") == "xn--juan@and-h3a7g.test")
        #expect(LMTPDelivery.punyEncoded("ascii@x.test") == "ascii@x.test")
    }

    @Test func theNetworkFollowsTheAddress() throws {
        var o = options("127.0.0.1:1")
        #expect(LMTPDelivery.deliver(o, read: chunks([])).message.hasPrefix("Error connecting to (tcp, 127.0.0.1:1): dial tcp 127.0.0.1:1: connect: connection refused"))
        o.network = "udp"
        #expect(LMTPDelivery.deliver(o, read: chunks([])).exitStatus == 75)
    }
}

@Suite struct DotStufferTests {
    func stuffed(_ parts: [String]) -> String {
        var s = DotStuffer()
        var out: [UInt8] = []
        for p in parts { out += s.encode(Array(p.utf8)) }
        out += s.finish()
        return String(decoding: out, as: UTF8.self)
    }

    @Test func lineEndsBecomeCRLFAndLeadingDotsDouble() {
        #expect(stuffed(["a\nb\r\nc"]) == "a\r\nb\r\nc\r\n.\r\n")
        #expect(stuffed([".\n..\n"]) == "..\r\n...\r\n.\r\n")
        #expect(stuffed(["a.b\n"]) == "a.b\r\n.\r\n")
        #expect(stuffed([""]) == ".\r\n")
    }

    /// A bare CR ends a line: no bare CR reaches the server, and a dot after
    /// it is stuffed (no "\r.\r\n" smuggling).
    @Test func aBareCRIsALineEnd() {
        #expect(stuffed(["a\rb\n"]) == "a\r\nb\r\n.\r\n")
        #expect(stuffed(["a\r.\r\n"]) == "a\r\n..\r\n.\r\n")
    }

    /// The state crosses chunks: a CRLF or a leading dot split between two.
    @Test func chunkBoundariesChangeNothing() {
        #expect(stuffed(["a\r", "\nb"]) == "a\r\nb\r\n.\r\n")
        #expect(stuffed(["a\n", ".b\n"]) == "a\r\n..b\r\n.\r\n")
    }
}
