import Aliases
import ChasquidProto
import Courier
import DurableFiles
import Foundation
import GoCompat
import MailLog
import TestSupport
import Testing

@testable import MailQueue

/// The delivery loop: couriers by recipient kind, retries, the mail log (COMPAT.md §12.4, §18).
@Suite struct DeliveryTests {
    @Test func recipientsGoToTheirCouriers() async throws {
        let h = Harness(aliases: [
            "pipe@local.com": [Recipient("/usr/bin/deliver --to x", kind: .pipe)],
            "fwd@local.com": [Recipient("f@far.org", kind: .forward, via: ["mx.far.org"])],
        ])
        _ = try await h.queue.load()
        let data = "Subject: routes\n\nbody\n"
        let id = try await h.put(
            from: "s@local.com",
            to: ["u@local.com", "r@remote.org", "pipe@local.com", "fwd@local.com"],
            data: data
        )

        #expect(await h.waitForLine("\(id) from=s@local.com all done"))
        #expect(await h.local.calls == [.init(from: "s@local.com", to: "u@local.com", data: Array(data.utf8))])
        #expect(
            await h.pipe.calls == [.init(from: "s@local.com", to: "/usr/bin/deliver --to x", data: Array(data.utf8))]
        )
        let remote = await h.remote.calls
        #expect(Set(remote.map(\.to)) == ["r@remote.org", "f@far.org"])
        #expect(remote.allSatisfy { $0.from == "s@local.com" && $0.data == Array(data.utf8) })

        let lines = h.lines(of: id)
        for to in ["u@local.com", "r@remote.org", "/usr/bin/deliver --to x", "f@far.org"] {
            #expect(lines.contains("\(id) from=s@local.com to=\(to) sent"))
        }
        #expect(lines.last == "\(id) from=s@local.com all done")
        #expect(!lines.contains { $0.contains("completed loop") }, "nothing left pending, so no waiting")
        #expect(h.files() == [])
        #expect(await h.queue.count == 0)
    }

    /// SRS (COMPAT.md §12.4): a non-local sender is rewritten for remote
    /// EMAIL and FORWARD recipients, keyed by the original recipient.
    @Test func nonLocalSendersAreRewrittenForRemoteRecipients() async throws {
        let h = Harness(aliases: [
            "alias@local.com": [Recipient("x@remote.org")],
            "fwd@local.com": [Recipient("f@far.org", kind: .forward, via: ["mx.far.org"])],
        ])
        _ = try await h.queue.load()
        let id = try await h.put(
            from: "user@dodo.org",
            to: ["alias@local.com", "fwd@local.com", "u@local.com"],
            data: "x\n"
        )
        #expect(await h.waitForLine("\(id) from=user@dodo.org all done"))
        #expect(await h.local.calls.map(\.from) == ["user@dodo.org"])
        #expect(await h.remote.calls(to: "x@remote.org").map(\.from) == ["alias+fwd_from=user=dodo.org@local.com"])
        #expect(await h.remote.calls(to: "f@far.org").map(\.from) == ["fwd+fwd_from=user=dodo.org@local.com"])

        // Local senders and "<>" are never rewritten.
        let id2 = try await h.put(from: "s@local.com", to: ["alias@local.com"], data: "x\n")
        let id3 = try await h.put(from: "<>", to: ["fwd@local.com"], data: "x\n")
        #expect(await h.waitForLine("\(id2) from=s@local.com all done"))
        #expect(await h.waitForLine("\(id3) from=<> all done"))
        #expect(await h.remote.calls(to: "x@remote.org").map(\.from).last == "s@local.com")
        #expect(await h.remote.calls(to: "f@far.org").map(\.from).last == "<>")
    }

    @Test func temporaryFailuresAreRetriedSentAndPermanentAreNot() async throws {
        let local = FakeCourier { to, attempt in
            switch to {
            case "b@local.com": attempt == 1 ? .temporary("mailbox busy") : .sent
            case "c@local.com": .permanent("no such user")
            default: .sent
            }
        }
        // The real clock: the envelope is read between the rounds, which a
        // virtual clock's wait would let pass at once.
        let h = Harness(retryDelay: .milliseconds(300), local: local, time: .system)
        _ = try await h.queue.load()
        let id = try await h.put(from: "<>", to: ["a@local.com", "b@local.com", "c@local.com"], data: "x\n")

        // After the first round the envelope holds each recipient's state.
        #expect(await h.waitForLine("\(id) from=<> completed loop, next in 300ms"))
        let m = try h.envelope(id)
        #expect(m.rcpt.map(\.status) == [.sent, .pending, .failed])
        #expect(m.rcpt.map(\.lastFailureMessage) == ["", "mailbox busy", "no such user"])

        #expect(await h.waitForLine("\(id) from=<> all done"))
        #expect(await local.calls(to: "a@local.com").count == 1)
        #expect(await local.calls(to: "b@local.com").count == 2)
        #expect(await local.calls(to: "c@local.com").count == 1)
        #expect(
            h.lines(of: id).sorted() == [
                "\(id) from=<> all done",
                "\(id) from=<> completed loop, next in 300ms",
                "\(id) from=<> to=a@local.com sent",
                "\(id) from=<> to=b@local.com failed (temporary): mailbox busy",
                "\(id) from=<> to=b@local.com sent",
                "\(id) from=<> to=c@local.com failed (permanent): no such user",
            ]
        )
        let lines = h.lines(of: id)
        #expect(
            lines.firstIndex(of: "\(id) from=<> completed loop, next in 300ms")! < lines.firstIndex(
                of: "\(id) from=<> to=b@local.com sent"
            )!
        )
        #expect(lines.last == "\(id) from=<> all done")
        #expect(h.files() == [])
    }

    @Test func retriesKeepGoingEveryRound() async throws {
        let local = FakeCourier { _, attempt in attempt < 4 ? .temporary("not yet") : .sent }
        let h = Harness(local: local)
        _ = try await h.queue.load()
        let id = try await h.put(from: "s@local.com", to: ["u@local.com"], data: "x\n")
        #expect(await h.waitForLine("\(id) from=s@local.com all done"))
        #expect(await local.calls.count == 4)
        #expect(h.lines(of: id).filter { $0 == "\(id) from=s@local.com completed loop, next in 50ms" }.count == 3)
        #expect(await h.remote.calls.isEmpty, "no DSN after a success")
    }

    /// The "next in" duration is printed as Go's `time.Duration.String` does.
    @Test(arguments: [
        (Duration.milliseconds(50), "50ms"),
        (Duration.microseconds(1500), "1.5ms"),
        (Duration.seconds(90), "1m30s"),
        (Duration.seconds(65) + .nanoseconds(123_456_789), "1m5.123456789s"),
        (Duration.seconds(3600), "1h0m0s"),
        (Duration.seconds(1200) + .milliseconds(250), "20m0.25s"),
    ])
    func nextInIsAGoDuration(delay: Duration, expected: String) async throws {
        let h = Harness(retryDelay: delay, local: .always(.temporary("later")))
        _ = try await h.queue.load()
        let id = try await h.put(from: "s@local.com", to: ["u@local.com"], data: "x\n")
        #expect(await h.waitForLine("\(id) from=s@local.com completed loop, next in \(expected)"))
        await h.queue.stop()
    }
}

/// Records each batch it is given; a recipient named `temp…` fails for now.
actor FakeBatchCourier: BatchCourier {
    struct Batch: Equatable, Sendable {
        var from: String
        var to: [String]
        var via: [String]
    }
    private(set) var batches: [Batch] = []

    func deliver(from: String, to: String, data: MessageData) async -> DeliveryResult {
        batches.append(Batch(from: from, to: [to], via: []))
        return .sent
    }

    func deliver(from: String, to: [String], data: MessageData, via: [String]) async -> [DeliveryResult] {
        batches.append(Batch(from: from, to: to, via: via))
        return to.map { $0.hasPrefix("temp") ? .temporary("try later") : .sent }
    }
}

@Suite struct BatchDeliveryTests {
    @Test func recipientsAtOneDomainGoInOneTransaction() async throws {
        let dir = TempDir()
        let log = try MailLog(.memory)
        let batch = FakeBatchCourier()
        let aliases: [String: [Recipient]] = [
            "fwd@local.com": [Recipient("f@far.org", kind: .forward, via: ["mx.far.org"])]
        ]
        let queue = MailQueue(
            settings: QueueSettings(
                directory: dir.path + "/queue", maxItems: 10, giveUpAfter: .seconds(60),
                retryDelay: { _ in .milliseconds(50) }),
            environment: QueueEnvironment(
                resolve: { aliases[$0] ?? [Recipient($0)] }, isLocal: { $0 == "local.com" }),
            couriers: Couriers(local: FakeCourier(), pipe: FakeCourier(), remote: batch), log: log)
        _ = try await queue.load()
        let spool = try queue.newSpool()
        try spool.append(Array("x\n".utf8))
        let id = try await queue.put(
            from: "s@local.com", to: ["a@far.org", "b@far.org", "temp@far.org", "c@near.org", "fwd@local.com"],
            spool: spool)
        #expect(await eventually { await batch.batches.count >= 4 })
        let batches = await batch.batches
        // far.org: one batch of three; near.org alone; the FORWARD with its via.
        #expect(batches.contains(.init(from: "s@local.com", to: ["a@far.org", "b@far.org", "temp@far.org"], via: [])))
        #expect(batches.contains(.init(from: "s@local.com", to: ["c@near.org"], via: [])))
        #expect(batches.contains(.init(from: "s@local.com", to: ["f@far.org"], via: ["mx.far.org"])))
        // The next round carries only the one still pending.
        #expect(batches.dropFirst(3).allSatisfy { $0.to == ["temp@far.org"] })
        let lines = log.lines.filter { $0.hasPrefix(id + " ") }
        #expect(lines.contains("\(id) from=s@local.com to=a@far.org sent"))
        #expect(lines.contains("\(id) from=s@local.com to=temp@far.org failed (temporary): try later"))
    }
}
