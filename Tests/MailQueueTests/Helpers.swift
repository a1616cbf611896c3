import Aliases
import ChasquidProto
import Courier
import DurableFiles
import Foundation
import MailLog
import SwiftProtobuf
import TestSupport
import Synchronization
import Testing

@testable import MailQueue

/// A courier that records every call and answers from a script:
/// `(recipient, attempt number for that recipient, starting at 1)`.
actor FakeCourier: Courier {
    struct Call: Sendable, Equatable {
        var from: String
        var to: String
        var data: [UInt8]
        var text: String { String(decoding: data, as: UTF8.self) }
    }

    private(set) var calls: [Call] = []
    private let script: @Sendable (String, Int) -> DeliveryResult

    init(_ script: @escaping @Sendable (String, Int) -> DeliveryResult = { _, _ in .sent }) {
        self.script = script
    }

    static func always(_ result: DeliveryResult) -> FakeCourier { FakeCourier { _, _ in result } }

    func deliver(from: String, to: String, data: MessageData) async -> DeliveryResult {
        calls.append(Call(from: from, to: to, data: (try? await data.bytes()) ?? []))
        return script(to, calls.filter { $0.to == to }.count)
    }

    func calls(to: String) -> [Call] { calls.filter { $0.to == to } }
    func calls(from: String) -> [Call] { calls.filter { $0.from == from } }
}

struct ResolveFailure: Error, CustomStringConvertible {
    var description: String
}

/// A queue in a fresh directory, with fake couriers and a memory log.
struct Harness {
    let dir: TempDir
    let log: MailLog
    let local: FakeCourier
    let remote: FakeCourier
    let pipe: FakeCourier
    let queue: MailQueue

    var queueDir: String { dir.path + "/queue" }

    init(
        dir: TempDir = TempDir(),
        aliases: [String: [Recipient]] = [:],
        failing: Set<String> = [],
        localDomains: Set<String> = ["local.com"],
        maxItems: Int = 100,
        giveUpAfter: Duration = .seconds(60),
        retryDelay: Duration = .milliseconds(50),
        local: FakeCourier = FakeCourier(),
        remote: FakeCourier = FakeCourier(),
        pipe: FakeCourier = FakeCourier(),
        retrySchedule: (@Sendable (Duration) -> Duration)? = nil,
        time: QueueTime = TestClock(virtual: true).queueTime
    ) {
        self.dir = dir
        self.log = try! MailLog(.memory)
        self.local = local
        self.remote = remote
        self.pipe = pipe
        let environment = QueueEnvironment(
            resolve: { address in
                if failing.contains(address) { throw ResolveFailure(description: "cannot resolve \(address)") }
                return aliases[address] ?? [Recipient(address)]
            },
            isLocal: { localDomains.contains($0) }
        )
        queue = MailQueue(
            settings: QueueSettings(
                directory: dir.path + "/queue",
                maxItems: maxItems,
                giveUpAfter: giveUpAfter,
                retryDelay: retrySchedule ?? { _ in retryDelay }
            ),
            environment: environment,
            couriers: Couriers(local: local, pipe: pipe, remote: remote),
            log: log,
            time: time
        )
    }

    /// Queues `data` through a spool file, as the SMTP server does.
    func put(from: String, to: [String], data: String) async throws -> String {
        let spool = try queue.newSpool()
        try spool.append(Array(data.utf8))
        return try await queue.put(from: from, to: to, spool: spool)
    }

    /// The names in the queue directory, sorted.
    func files() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: queueDir)) ?? []).sorted()
    }

    func envelope(_ id: String) throws -> Queue_Message {
        try Queue_Message(textFormatString: String(decoding: try readFile(queueDir + "/m:" + id), as: UTF8.self))
    }

    func lines(of id: String) -> [String] { log.lines.filter { $0.hasPrefix(id + " ") } }

    /// Waits for the mail log to hold `line`.
    func waitForLine(_ line: String, timeout: Duration = .seconds(15)) async -> Bool {
        await eventually(timeout: timeout) { log.lines.contains(line) }
    }
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(15), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return await condition()
}

func matches(_ text: String, _ pattern: String) -> Bool {
    (try? Regex(pattern)).map { text.wholeMatch(of: $0) != nil } ?? false
}

func isQueueID(_ id: String) -> Bool {
    id.utf8.count == 11
        && id.unicodeScalars.allSatisfy {
            ($0.isASCII && $0.properties.isAlphabetic) || ("0"..."9").contains($0) || $0 == "-" || $0 == "_"
        }
}

func fileMode(_ path: String) -> Int? {
    (try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue
}

/// A parsed message: header fields (continuations unfolded with "\n") and body.
struct ParsedMail {
    var headerLines: [String] = []
    var body = ""

    init(_ text: String) {
        let split = text.range(of: "\n\n")
        let head = split.map { String(text[..<$0.lowerBound]) } ?? text
        body = split.map { String(text[$0.upperBound...]) } ?? ""
        for line in head.split(separator: "\n", omittingEmptySubsequences: false) {
            if let first = line.first, first == " " || first == "\t", !headerLines.isEmpty {
                headerLines[headerLines.count - 1] += "\n" + line
            } else {
                headerLines.append(String(line))
            }
        }
    }

    /// The values of every field named `name` (case-insensitive), after ": ".
    func values(_ name: String) -> [String] {
        headerLines.compactMap { line in
            guard let colon = line.firstIndex(of: ":"), line[..<colon].lowercased() == name.lowercased() else {
                return nil
            }
            var value = line[line.index(after: colon)...]
            if value.first == " " { value = value.dropFirst() }
            return String(value)
        }
    }

    func value(_ name: String) -> String? { values(name).first }
}

extension TestClock {
    /// The queue's time on this clock: its dates follow it too.
    var queueTime: QueueTime { QueueTime(now: { [self] in date }, clock: self) }
}
