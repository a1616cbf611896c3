import Aliases
import ChasquidProto
import Courier
import DurableFiles
import Foundation
import MailLog
import SwiftProtobuf
import Testing

@testable import MailQueue

/// Queueing: the files `put` writes, alias expansion, refusals (COMPAT.md §5, §6, §12.4).
@Suite struct QueuePutTests {
    /// Every courier fails temporarily and the next round is far away (in real
    /// time: a virtual clock would reach it at once), so the
    /// item stays on disk as `put` wrote it.
    static func idleHarness(
        aliases: [String: [Recipient]] = [:],
        failing: Set<String> = [],
        maxItems: Int = 100
    ) -> Harness {
        Harness(
            aliases: aliases,
            failing: failing,
            maxItems: maxItems,
            retryDelay: .seconds(600),
            local: .always(.temporary("later")),
            remote: .always(.temporary("later")),
            pipe: .always(.temporary("later")),
            time: .system
        )
    }

    @Test func putWritesTheEnvelopeAndTheData() async throws {
        let h = Self.idleHarness(aliases: [
            "list@local.com": [
                Recipient("a@remote.org"),
                Recipient("/usr/bin/procmail -d x", kind: .pipe),
                Recipient("b@far.org", kind: .forward, via: ["mx1.far.org", "mx2.far.org"]),
            ]
        ])
        let problems = try await h.queue.load()
        #expect(problems.isEmpty)
        #expect(fileMode(h.queueDir) == 0o700)

        let data = "Subject: hola\nFrom: s@local.com\n\ncuerpo con ñ\r\nand a lone CR\rend\n"
        let before = Date()
        let id = try await h.put(from: "s@local.com", to: ["u@local.com", "list@local.com"], data: data)
        defer { Task { await h.queue.stop() } }

        #expect(isQueueID(id))
        #expect(h.files() == ["d:" + id, "m:" + id], "no .incoming-* or temporary files left")
        #expect(try readFile(h.queueDir + "/d:" + id) == Array(data.utf8))
        #expect(fileMode(h.queueDir + "/m:" + id) == 0o600)
        #expect(fileMode(h.queueDir + "/d:" + id) == 0o600)

        let text = String(decoding: try readFile(h.queueDir + "/m:" + id), as: UTF8.self)
        // Exact, case-sensitive field names from chasquid's schema.
        #expect(text.contains("ID: \"\(id)\""))
        #expect(text.contains("To: \"u@local.com\""))
        #expect(text.contains("original_address: \"list@local.com\""))
        #expect(text.contains("created_at_ts {"))
        #expect(text.contains("type: PIPE") && text.contains("type: FORWARD") && text.contains("via: \"mx1.far.org\""))

        let m = try Queue_Message(textFormatString: text)
        #expect(m.id == id)
        #expect(m.from == "s@local.com")
        #expect(m.to == ["u@local.com", "list@local.com"])
        #expect(m.data.isEmpty, "the data lives in d:<ID>")
        let created = m.createdAtTs.date
        #expect(created >= before.addingTimeInterval(-1) && created <= Date().addingTimeInterval(1))

        let rcpts = m.rcpt.map {
            [$0.address, DSN.typeName($0.type), $0.originalAddress, $0.via.joined(separator: ",")]
        }
        #expect(
            rcpts == [
                ["u@local.com", "EMAIL", "u@local.com", ""],
                ["a@remote.org", "EMAIL", "list@local.com", ""],
                ["/usr/bin/procmail -d x", "PIPE", "list@local.com", ""],
                ["b@far.org", "FORWARD", "list@local.com", "mx1.far.org,mx2.far.org"],
            ]
        )
        #expect(m.rcpt.allSatisfy { $0.status == .pending })

        #expect(await h.queue.count == 1)
        #expect(await h.queue.snapshot.map(\.id) == [id])
    }

    @Test func resolutionErrorRefusesAndRemovesTheSpool() async throws {
        let h = Self.idleHarness(failing: ["bad@local.com"])
        _ = try await h.queue.load()
        let spool = try h.queue.newSpool()
        try spool.append(Array("Subject: x\n\nbody\n".utf8))
        #expect(h.files().count == 1 && h.files()[0].hasPrefix(".incoming-"))
        do {
            _ = try await h.queue.put(from: "s@local.com", to: ["ok@local.com", "bad@local.com"], spool: spool)
            Issue.record("put should have failed")
        } catch {
            guard case .resolution(let reason) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(reason.contains("cannot resolve bad@local.com"))
        }
        #expect(h.files() == [])
        #expect(await h.queue.count == 0)
    }

    @Test func aFullQueueRefuses() async throws {
        let h = Self.idleHarness(maxItems: 1)
        _ = try await h.queue.load()
        let first = try await h.put(from: "s@local.com", to: ["u@local.com"], data: "one\n")
        defer { Task { await h.queue.stop() } }

        let spool = try h.queue.newSpool()
        try spool.append(Array("two\n".utf8))
        do {
            _ = try await h.queue.put(from: "s@local.com", to: ["u@local.com"], spool: spool)
            Issue.record("put should have failed")
        } catch {
            #expect(error == .full)
        }
        #expect(QueueError.full.description == "Queue size too big, try again later")
        #expect(h.files() == ["d:" + first, "m:" + first])
        #expect(await h.queue.count == 1)
    }

    @Test func queueIDsAreElevenCharactersOfBase64URL() {
        var seen = Set<String>()
        for _ in 0..<2000 {
            let id = QueueID.generate()
            #expect(isQueueID(id), "\(id)")
            seen.insert(id)
        }
        #expect(seen.count == 2000)

        // The encoding is RFC 4648 §5 without padding.
        for bytes: [UInt8] in [[0, 1, 2, 3, 4, 5, 6, 7], [0xFB, 0xEF, 0xFF, 0xFE, 0xFF, 0xBF, 0x3E, 0xFF]] {
            let expected = Data(bytes).base64EncodedString()
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
            #expect(QueueID.encode(bytes) == expected)
        }
        #expect(QueueID.encode([0, 1, 2, 3, 4, 5, 6, 7]) == "AAECAwQFBgc")
    }
}
