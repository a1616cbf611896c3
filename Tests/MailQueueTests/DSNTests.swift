import Aliases
import ChasquidProto
import Courier
import DurableFiles
import Foundation
import MailLog
import TestSupport
import Testing

@testable import MailQueue

/// Giving up, and the delivery status notifications (COMPAT.md §12.4, "DSN").
@Suite struct DSNTests {
    static let original = "Message-ID: <orig-1@local.com>\nFrom: s@local.com\nSubject: hello\n\nBody line ñ\n"

    /// One recipient fails permanently, two stay pending until the item gives
    /// up. In virtual time: 20 hours of hourly retries, with no sleeping.
    @Test func givingUpSendsADSNToTheSender() async throws {
        let remote = FakeCourier { to, _ in
            to == "m2@remote.org" ? .permanent("550 5.1.1 no such user\nsecond line\n") : .temporary("451 greylisted")
        }
        let clock = TestClock(virtual: true)
        let h = Harness(
            aliases: ["list@local.com": [Recipient("m1@remote.org"), Recipient("m2@remote.org")]],
            giveUpAfter: .seconds(20 * 3600), retryDelay: .seconds(3600), remote: remote, time: clock.queueTime
        )
        _ = try await h.queue.load()
        let id = try await h.put(from: "s@local.com", to: ["zed@remote.org", "list@local.com"], data: Self.original)

        #expect(await h.waitForLine("\(id) from=s@local.com all done"))
        #expect(await remote.calls(to: "m2@remote.org").count == 1, "permanent failures are not retried")
        // Tried at 0 h, 1 h, ... 19 h; at 20 h the item gives up.
        #expect(await remote.calls(to: "zed@remote.org").count == 20, "\(h.lines(of: id))")
        #expect(await remote.calls(to: "m1@remote.org").count == 20)
        #expect(clock.now.offset == .seconds(20 * 3600))

        // The DSN is a new item, delivered on its own after the "all done"
        // line: under load it can come a little later.
        var dsns = await h.local.calls(from: "<>")
        for _ in 0..<500 where dsns.isEmpty {
            try await Task.sleep(for: .milliseconds(10))
            dsns = await h.local.calls(from: "<>")
        }
        #expect(dsns.map(\.to) == ["s@local.com"])
        // The files go after the "all done" line, on a file thread.
        for _ in 0..<200 where !h.files().isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        #expect(h.files() == [])
    }

    @Test func noDSNForANullSender() async throws {
        let h = Harness(giveUpAfter: .milliseconds(300), remote: .always(.temporary("451 later")))
        _ = try await h.queue.load()
        let id = try await h.put(from: "<>", to: ["r@remote.org"], data: Self.original)
        #expect(await h.waitForLine("\(id) from=<> all done"))
        try await Task.sleep(for: .milliseconds(200))
        #expect(await h.local.calls.isEmpty)
        #expect(await h.remote.calls.allSatisfy { $0.to == "r@remote.org" })
        #expect(h.log.lines.allSatisfy { $0.hasPrefix(id + " ") }, "no second item was queued")
        #expect(await h.queue.count == 0)
        #expect(h.files() == [])
    }

    @Test func aPermanentFailureBouncesAtOnce() async throws {
        let h = Harness(giveUpAfter: .seconds(3600), retryDelay: .seconds(3600), remote: .always(.permanent("550 no")), time: .system)
        _ = try await h.queue.load()
        let id = try await h.put(from: "s@local.com", to: ["r@remote.org"], data: Self.original)
        #expect(await eventually(timeout: .seconds(15)) { await !h.local.calls(from: "<>").isEmpty })
        #expect(await h.waitForLine("\(id) from=s@local.com all done"))
        #expect(!h.lines(of: id).contains { $0.contains("completed loop") })
        let dsn = try #require(await h.local.calls(from: "<>").first).text
        #expect(dsn.contains("Status: 5.0.0\nDiagnostic-Code: smtp; 550 no\n"))
        #expect(dsn.contains("X-Failed-Recipients: r@remote.org, \n"))
    }

    /// D is the first local original-recipient domain when the sender's is
    /// not local, else "unknown".
    @Test(arguments: [
        (["r@remote.org", "x@local.com"], "local.com"),
        (["r@remote.org"], "unknown"),
    ])
    func reportingDomainForANonLocalSender(to: [String], domain: String) async throws {
        let h = Harness(
            local: .always(.permanent("no")),
            remote: FakeCourier { to, _ in to == "s@remote.org" ? .sent : .permanent("no") }
        )
        _ = try await h.queue.load()
        _ = try await h.put(from: "s@remote.org", to: to, data: Self.original)
        #expect(await eventually { await !h.remote.calls(to: "s@remote.org").isEmpty })
        let dsn = try #require(await h.remote.calls(to: "s@remote.org").first)
        #expect(dsn.from == "<>")
        let mail = ParsedMail(dsn.text)
        #expect(mail.value("From") == "Mail Delivery System <postmaster-dsn@\(domain)>")
        #expect(mail.value("To") == "<s@remote.org>")
        #expect(mail.body.contains("Reporting-MTA: dns; \(domain)\n"))
    }

    /// The DSN goes to the sender through the aliases.
    @Test func theDSNIsAliasExpanded() async throws {
        let h = Harness(
            aliases: ["s@local.com": [Recipient("real@local.com")]],
            remote: .always(.permanent("550 no"))
        )
        _ = try await h.queue.load()
        _ = try await h.put(from: "s@local.com", to: ["r@remote.org"], data: Self.original)
        #expect(await eventually { await !h.local.calls(to: "real@local.com").isEmpty })
        #expect(await h.local.calls.map(\.to) == ["real@local.com"])
    }

    @Test func dsnWithoutMessageIDAndTruncation() throws {
        var message = Queue_Message()
        message.from = "s@local.com"
        message.to = ["r@remote.org"]
        var r = Queue_Recipient()
        r.address = "r@remote.org"
        r.originalAddress = "r@remote.org"
        r.status = .failed
        r.lastFailureMessage = "  550 no  \n"
        message.rcpt = [r]
        let big = Array("Subject: big\n\n".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 300 * 1024)
        let dsn = String(
            decoding: DSN.make(for: message, originalData: big, reportingDomain: "local.com"),
            as: UTF8.self
        )
        let mail = ParsedMail(dsn)
        #expect(mail.headerLines.contains("In-Reply-To: "))
        #expect(mail.headerLines.contains("References: "))
        // The error as recorded; only the trailing line break goes.
        #expect(dsn.contains("Diagnostic-Code: smtp;   550 no  \n\n"))
        let enclosed = dsn.components(separatedBy: "Subject: big\n\n")
        try #require(enclosed.count == 2)
        let xs = enclosed[1].prefix { $0 == "x" }.count
        #expect(xs == 256 * 1024 - "Subject: big\n\n".utf8.count, "the original is truncated to 256 KiB")
    }

    /// The whole notice, byte for byte as chasquid 1.18's template lays
    /// it out (its own test's recipients): the IDs, boundary and date are
    /// the only free parts.
    @Test func layoutIsChasquidsByteForByte() throws {
        func recipient(_ address: String, _ status: Queue_Recipient.Status, _ error: String, _ original: String)
            -> Queue_Recipient
        {
            var r = Queue_Recipient()
            r.address = address
            r.type = .email
            r.status = status
            r.lastFailureMessage = error
            r.originalAddress = original
            return r
        }
        let multiline = """
            550 5.7.1 [11:22:33:44::1] Our system has detected that this
            5.7.1 message is likely unsolicited mail. To reduce the amount of spam sent
            5.7.1 to BlahMail, this message has been blocked.
            """
        var message = Queue_Message()
        message.from = "from@from.org"
        message.to = ["ñaca@africa.org", "negra@sosa.org"]
        message.rcpt = [
            recipient("poe@rcpt", .failed, "oh! horror!", "ñaca@africa.org"),
            recipient("muchos@rcpt", .failed, multiline, "pepe@africa.org"),
            recipient("newman@rcpt", .pending, "oh! the humanity!", "ñaca@africa.org"),
            recipient("ant@rcpt", .sent, "", "negra@sosa.org"),
        ]
        let data = "Message-ID: <msgid-123@zaraza>\n\nData ñaca.\n"
        let dsn = String(
            decoding: DSN.make(for: message, originalData: Array(data.utf8), reportingDomain: "dsnDomain"),
            as: UTF8.self)

        let boundary = try #require(dsn.firstMatch(of: try Regex("boundary=\"([A-Za-z0-9_-]{11})\"\n"))?.output[1].substring)
        let id = try #require(dsn.firstMatch(of: try Regex("<chasquid-dsn-([A-Za-z0-9_-]{11})@"))?.output[1].substring)
        let date = try #require(dsn.firstMatch(of: try Regex("\nDate: ([^\n]+)\n"))?.output[1].substring)
        let expected = """
            From: Mail Delivery System <postmaster-dsn@dsnDomain>
            To: <from@from.org>
            Subject: Mail delivery failed: returning message to sender
            Message-ID: <chasquid-dsn-\(id)@dsnDomain>
            Date: \(date)
            In-Reply-To: <msgid-123@zaraza>
            References: <msgid-123@zaraza>
            X-Failed-Recipients: pepe@africa.org, ñaca@africa.org, 
            Auto-Submitted: auto-replied
            MIME-Version: 1.0
            Content-Type: multipart/report; report-type=delivery-status;
                boundary="\(boundary)"


            --\(boundary)
            Content-Type: text/plain; charset="utf-8"
            Content-Disposition: inline
            Content-Description: Notification
            Content-Transfer-Encoding: 8bit

            Delivery of your message to the following recipient(s) failed permanently:

              - pepe@africa.org
              - ñaca@africa.org


            Technical details:
            - "poe@rcpt" (EMAIL) failed permanently with error:
                oh! horror!
            - "muchos@rcpt" (EMAIL) failed permanently with error:
                550 5.7.1 [11:22:33:44::1] Our system has detected that this
                5.7.1 message is likely unsolicited mail. To reduce the amount of spam sent
                5.7.1 to BlahMail, this message has been blocked.
            - "newman@rcpt" (EMAIL) failed repeatedly and timed out, last error:
                oh! the humanity!


            --\(boundary)
            Content-Type: message/global-delivery-status
            Content-Description: Delivery Report
            Content-Transfer-Encoding: 8bit

            Reporting-MTA: dns; dsnDomain

            Original-Recipient: utf-8; ñaca@africa.org
            Final-Recipient: utf-8; poe@rcpt
            Action: failed
            Status: 5.0.0
            Diagnostic-Code: smtp; oh! horror!

            Original-Recipient: utf-8; pepe@africa.org
            Final-Recipient: utf-8; muchos@rcpt
            Action: failed
            Status: 5.0.0
            Diagnostic-Code: smtp; 550 5.7.1 [11:22:33:44::1] Our system has detected that this
                5.7.1 message is likely unsolicited mail. To reduce the amount of spam sent
                5.7.1 to BlahMail, this message has been blocked.

            Original-Recipient: utf-8; ñaca@africa.org
            Final-Recipient: utf-8; newman@rcpt
            Action: failed
            Status: 4.0.0
            Diagnostic-Code: smtp; oh! the humanity!



            --\(boundary)
            Content-Type: message/rfc822
            Content-Description: Undelivered Message
            Content-Transfer-Encoding: 8bit

            Message-ID: <msgid-123@zaraza>

            Data ñaca.


            --\(boundary)--

            """
        #expect(dsn == expected)
        #expect(id != boundary)
    }
}
