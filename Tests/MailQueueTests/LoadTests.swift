import Aliases
import ChasquidProto
import Courier
import DurableFiles
import Foundation
import MailLog
import SwiftProtobuf
import TestSupport
import Testing

@testable import MailQueue

/// Start-up: loading items, chasquid's legacy items, leftovers (COMPAT.md §0, §5, §6).
@Suite struct LoadTests {
    static func write(_ text: String, to path: String) throws {
        try AtomicFile.write(Array(text.utf8), to: path, mode: 0o600)
    }

    static func envelope(
        id: String,
        from: String,
        to: [String],
        created: Date = Date(),
        data: String = ""
    ) -> Queue_Message {
        var m = Queue_Message()
        m.id = id
        m.from = from
        m.to = to
        for address in to {
            var r = Queue_Recipient()
            r.address = address
            r.originalAddress = address
            m.rcpt.append(r)
        }
        m.createdAtTs = Google_Protobuf_Timestamp(date: created)
        m.data = Data(data.utf8)
        return m
    }

    @Test func itemsSurviveARestart() async throws {
        let dir = TempDir()
        let first = Harness(dir: dir, retryDelay: .seconds(600), local: .always(.temporary("later")), time: .system)
        _ = try await first.queue.load()
        let id = try await first.put(from: "s@local.com", to: ["u@local.com"], data: "Subject: kept\n\nbody\n")
        #expect(await first.waitForLine("\(id) from=s@local.com completed loop, next in 10m0s"))
        await first.queue.stop()
        #expect(first.files() == ["d:" + id, "m:" + id])

        let second = Harness(dir: dir)
        #expect(try await second.queue.load() == [])
        #expect(await second.waitForLine("\(id) from=s@local.com all done"))
        #expect(
            await second.local.calls == [
                .init(from: "s@local.com", to: "u@local.com", data: Array("Subject: kept\n\nbody\n".utf8))
            ]
        )
        #expect(second.files() == [])
    }

    /// chasquid's own items hold the data inline; they are converted to the
    /// envelope + data form, then delivered.
    @Test func legacyItemsAreConvertedAndDelivered() async throws {
        let h = Harness(
            retryDelay: .milliseconds(200),
            local: FakeCourier { _, attempt in attempt == 1 ? .temporary("t") : .sent }
        )
        try makeDirectories(h.queueDir, mode: 0o700)

        let swiftID = QueueID.generate()
        let legacyData = "Subject: legacy\n\nold body ñ\n"
        var legacy = Self.envelope(id: swiftID, from: "s@local.com", to: ["u@local.com"], data: legacyData)
        legacy.rcpt[0].lastFailureMessage = "earlier failure"
        try Self.write(legacy.textFormatString(), to: h.queueDir + "/m:" + swiftID)

        // As Go's prototext writes it: random double spaces, octal escapes.
        let goID = QueueID.generate()
        let now = Int(Date().timeIntervalSince1970)
        let goText = """
            ID:  "\(goID)"
            from:  "s@local.com"
            To:  "v@local.com"
            rcpt:  {
              address:  "v@local.com"
              original_address:  "v@local.com"
            }
            data:  "Subject: go\\n\\nbody \\303\\261\\n"
            created_at_ts:  {
              seconds:  \(now)
              nanos:  5000
            }

            """
        try Self.write(goText, to: h.queueDir + "/m:" + goID)

        #expect(try await h.queue.load() == [])
        // Converted before any delivery can finish (the first attempt fails).
        #expect(try readFile(h.queueDir + "/d:" + swiftID) == Array(legacyData.utf8))
        #expect(try readFile(h.queueDir + "/d:" + goID) == Array("Subject: go\n\nbody ñ\n".utf8))
        var converted = try h.envelope(swiftID)
        #expect(converted.data.isEmpty)
        #expect(converted.from == "s@local.com" && converted.to == ["u@local.com"])
        #expect(converted.rcpt.map(\.address) == ["u@local.com"])
        #expect(converted.createdAtTs == legacy.createdAtTs)
        converted = try h.envelope(goID)
        #expect(converted.data.isEmpty && converted.id == goID && converted.createdAtTs.nanos == 5000)

        #expect(await h.waitForLine("\(swiftID) from=s@local.com all done"))
        #expect(await h.waitForLine("\(goID) from=s@local.com all done"))
        #expect(await h.local.calls(to: "u@local.com").map(\.data) == [Array(legacyData.utf8), Array(legacyData.utf8)])
        #expect(await h.local.calls(to: "v@local.com").last?.text == "Subject: go\n\nbody ñ\n")
        #expect(h.files() == [])
    }

    @Test func leftoversAreRemovedAndBadItemsReported() async throws {
        let h = Harness(retryDelay: .seconds(600), local: .always(.temporary("later")), time: .system)
        try makeDirectories(h.queueDir, mode: 0o700)
        try Self.write("orphan data", to: h.queueDir + "/d:ORPHAN00000")
        try Self.write("half-received", to: h.queueDir + "/.incoming-abcdefghijk")
        try Self.write("half an envelope", to: h.queueDir + "/.m:SOMEID000001234567")
        try Self.write("this is { not a message", to: h.queueDir + "/m:BROKEN00000")
        try Self.write("the data of the broken item", to: h.queueDir + "/d:BROKEN00000")
        try Self.write("unknown: 1\n", to: h.queueDir + "/m:UNKNOWN0000")
        try Self.write(
            Self.envelope(id: "NODATA00000", from: "s@local.com", to: ["u@local.com"]).textFormatString(),
            to: h.queueDir + "/m:NODATA00000"
        )
        try Self.write("not ours", to: h.queueDir + "/README")

        let goodID = QueueID.generate()
        try Self.write(
            Self.envelope(id: goodID, from: "s@local.com", to: ["u@local.com"]).textFormatString(),
            to: h.queueDir + "/m:" + goodID
        )
        try Self.write("good data\n", to: h.queueDir + "/d:" + goodID)

        let problems = try await h.queue.load()
        #expect(problems.count == 5, "\(problems)")
        #expect(problems.contains("d:ORPHAN00000: data without an envelope (interrupted before its 250), removed"))
        #expect(problems.contains("removed 2 partly written file(s) (interrupted while being written)"))
        #expect(problems.contains { $0.contains("m:BROKEN00000") })
        #expect(problems.contains { $0.contains("m:UNKNOWN0000") }, "unknown fields are rejected")
        #expect(problems.contains { $0.contains("m:NODATA00000") })
        #expect(await h.queue.count == 1)
        #expect(await h.queue.snapshot.map(\.id) == [goodID])

        let files = h.files()
        #expect(!files.contains("d:ORPHAN00000"))
        #expect(!files.contains { $0.hasPrefix(".incoming-") || $0.hasPrefix(".m:") })
        #expect(files.contains("README"), "files without a known prefix are left alone")
        #expect(files.contains("m:BROKEN00000"), "unreadable items are skipped, not deleted")
        #expect(files.contains("d:BROKEN00000"), "nor is the data of an unreadable item")
        #expect(files.contains("m:" + goodID) && files.contains("d:" + goodID))
        #expect(await eventually { await h.local.calls.count == 1 })
        await h.queue.stop()
    }

    /// An item older than give_up_send_after gets no attempt, only the DSN.
    @Test func anItemTooOldAtLoadOnlyGetsTheDSN() async throws {
        let h = Harness(giveUpAfter: .seconds(3600), time: .system)
        try makeDirectories(h.queueDir, mode: 0o700)
        let id = QueueID.generate()
        try Self.write(
            Self.envelope(id: id, from: "s@local.com", to: ["r@remote.org"], created: Date().addingTimeInterval(-7200))
                .textFormatString(),
            to: h.queueDir + "/m:" + id
        )
        try Self.write("Message-ID: <old@local.com>\n\nold\n", to: h.queueDir + "/d:" + id)

        #expect(try await h.queue.load() == [])
        #expect(await h.waitForLine("\(id) from=s@local.com all done"))
        #expect(await eventually { await !h.local.calls(from: "<>").isEmpty })
        #expect(await h.remote.calls.isEmpty, "no delivery attempt")
        let dsn = try #require(await h.local.calls(from: "<>").first)
        #expect(dsn.to == "s@local.com")
        #expect(dsn.text.contains("Final-Recipient: utf-8; r@remote.org\nAction: failed\nStatus: 4.0.0\n"))
        #expect(dsn.text.contains("In-Reply-To: <old@local.com>\n"))
        #expect(dsn.text.contains("Message-ID: <old@local.com>\n\nold\n"))
        // No delivery lines: only the DSN's queueing and the end.
        let lines = h.lines(of: id)
        #expect(lines.count == 2)
        #expect(lines.first?.hasPrefix("\(id) from=s@local.com DSN queued as ") == true)
        #expect(lines.last == "\(id) from=s@local.com all done")
    }
}
