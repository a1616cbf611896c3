import Aliases
import ChasquidProto
import Courier
import DurableFiles
import GoCompat
import Instrumentation
import Foundation
import Logging
import MailLog
import Normalization
import SwiftProtobuf

/// Why a message could not be queued; each becomes a 451 to the client.
public enum QueueError: Error, CustomStringConvertible, Sendable, Equatable {
    case full
    case resolution(String)
    case storage(FileError)

    public var description: String {
        switch self {
        case .full: "Queue size too big, try again later"
        case .resolution(let reason): "error resolving aliases: \(reason)"
        case .storage(let error): "error writing to the queue: \(error)"
        }
    }

    /// The disk (or quota) holding the queue is full.
    public var isOutOfSpace: Bool {
        if case .storage(let error) = self { return error.isOutOfSpace }
        return false
    }
}

/// What the queue needs to know about the rest of the server.
public struct QueueEnvironment: Sendable {
    /// Expands an accepted recipient through the aliases.
    public var resolve: @Sendable (String) async throws -> [Recipient]
    /// Is this (normalised) domain local?
    public var isLocal: @Sendable (String) -> Bool

    public init(
        resolve: @escaping @Sendable (String) async throws -> [Recipient], isLocal: @escaping @Sendable (String) -> Bool
    ) {
        self.resolve = resolve
        self.isLocal = isLocal
    }
}

public struct QueueSettings: Sendable {
    public var directory: String
    public var maxItems: Int
    public var giveUpAfter: Duration
    /// How long to wait before the next round, given the item's age.
    public var retryDelay: @Sendable (Duration) -> Duration

    public init(
        directory: String, maxItems: Int, giveUpAfter: Duration,
        retryDelay: @escaping @Sendable (Duration) -> Duration = QueueSettings.chasquidRetryDelay
    ) {
        self.directory = directory
        self.maxItems = maxItems
        self.giveUpAfter = giveUpAfter
        self.retryDelay = retryDelay
    }

    /// chasquid's schedule: 1, 5, 10, then 20 minutes, by the item's age,
    /// plus a random 0–60 s so retries spread out.
    public static let chasquidRetryDelay: @Sendable (Duration) -> Duration = { age in
        let base: Duration =
            age < .seconds(60) ? .seconds(60) : age < .seconds(300) ? .seconds(300) : age < .seconds(600) ? .seconds(600) : .seconds(1200)
        return base + .milliseconds(Int.random(in: 0...60_000))
    }
}

/// The queue's sense of time: wall-clock dates for what it records (when an
/// item was created, when it is next tried; they outlive the process), and a
/// clock to wait on between attempts, which tests replace to move time on
/// without sleeping.
public struct QueueTime: Sendable {
    public var now: @Sendable () -> Date
    public var clock: any Clock<Duration>

    public init(now: @escaping @Sendable () -> Date, clock: any Clock<Duration>) {
        self.now = now
        self.clock = clock
    }

    public static let system = QueueTime(now: Date.init, clock: ContinuousClock())
}

/// The couriers, by kind of recipient.
public struct Couriers: Sendable {
    public var local: any Courier
    public var pipe: any Courier
    public var remote: any Courier

    public init(local: any Courier, pipe: any Courier, remote: any Courier) {
        self.local = local
        self.pipe = pipe
        self.remote = remote
    }
}

/// The durable mail queue (COMPAT.md §5, §6, §12.4).
///
/// On disk, in `<data_dir>/queue`: `m:<ID>` is the §6 `Message` envelope in
/// text format, and `d:<ID>` the message data beside it, so data streams to
/// disk as it arrives and is never held whole in memory. Items in chasquid's
/// own form (data inside `m:<ID>`) are converted at start-up.
public actor MailQueue {
    public let settings: QueueSettings
    let environment: QueueEnvironment
    let couriers: Couriers
    let log: MailLog
    let metrics: ServerMetrics
    let traces: TraceRegistry?
    /// The daemon log's queue lines, as chasquid writes them
    /// (`Queue.SendLoop <id>: <recipient> sent`): tools and howtos grep them.
    let logger: Logger
    let time: QueueTime
    private var items: [String: Queue_Message] = [:]
    private var loops: [String: Task<Void, Never>] = [:]
    private var itemTraces: [String: Trace] = [:]
    private var nextAttempts: [String: Date] = [:]
    private var inFlight = 0

    public init(
        settings: QueueSettings, environment: QueueEnvironment, couriers: Couriers, log: MailLog,
        metrics: ServerMetrics = .discarding, traces: TraceRegistry? = nil,
        logger: Logger = Logger(label: "queue", factory: { _ in SwiftLogNoOpLogHandler() }), time: QueueTime = .system
    ) {
        self.logger = logger
        self.time = time
        self.settings = settings
        self.environment = environment
        self.couriers = couriers
        self.log = log
        self.metrics = metrics
        self.traces = traces
        self.directorySyncer = DirectorySyncer(path: settings.directory)
    }

    public var count: Int { items.count }

    public var snapshot: [Queue_Message] { items.values.sorted { $0.id < $1.id } }

    /// The items with when each is next tried, for the monitoring pages.
    public var status: [QueueItemStatus] {
        items.values.sorted { $0.id < $1.id }.map {
            QueueItemStatus(message: $0, nextAttempt: nextAttempts[$0.id], traceID: itemTraces[$0.id]?.id)
        }
    }

    nonisolated func envelopePath(_ id: String) -> String { settings.directory + "/m:" + id }
    nonisolated func dataPath(_ id: String) -> String { settings.directory + "/d:" + id }

    /// A new file for incoming message data, in the queue's directory so it
    /// can be renamed into place.
    private let directorySyncer: DirectorySyncer

    public nonisolated func newSpool() throws(QueueError) -> SpoolFile {
        do {
            return try SpoolFile(creating: settings.directory + "/.incoming-" + QueueID.generate())
        } catch {
            throw .storage(error)
        }
    }

    /// Queues a message whose data is in `spool`; returns its ID. When this
    /// returns, the message is on disk: data fsynced, envelope fsynced,
    /// directory fsynced. On error the spool is discarded.
    /// - Parameter remote: the client's address, for the mail log's
    ///   `queued` line, written before the first delivery attempt starts
    ///   (so the log never shows a delivery of a message it never queued,
    ///   even when we are killed between the two); nil: no line.
    public nonisolated func put(
        from: String, to: [String], spool: sending SpoolFile, remote: String? = nil
    ) async throws(QueueError) -> String {
        // Count puts still in progress too, so concurrent puts cannot
        // overshoot the limit while they resolve aliases and write.
        guard await reserveSlot() else {
            spool.discard()
            throw .full
        }
        metrics.count(MetricCatalog.putCount)
        var message = Queue_Message()
        message.from = from
        message.to = to
        for address in to {
            let recipients: [Recipient]
            do {
                recipients = try await environment.resolve(address)
            } catch {
                spool.discard()
                await releaseSlot()
                throw .resolution("\(error)")
            }
            for r in recipients {
                var entry = Queue_Recipient()
                entry.address = r.address
                entry.type = r.kind == .pipe ? .pipe : (r.kind == .forward ? .forward : .email)
                entry.via = r.via
                entry.originalAddress = address
                message.rcpt.append(entry)
            }
        }
        let id = QueueID.generate()
        message.id = id
        message.createdAtTs = Google_Protobuf_Timestamp(date: time.now())
        // The disk work runs off the actor, so concurrent puts fsync in
        // parallel, and their renames share one directory fsync.
        let envelope = Array(message.textFormatString().utf8)
        let dataPath = dataPath(id)
        let envelopePath = envelopePath(id)
        do {
            let file = spool
            try await offloaded { () throws(FileError) in
                try file.commit()
                try renameFile(file.path, to: dataPath)
                try AtomicFile.write(envelope, to: envelopePath, mode: 0o600, syncDirectory: false)
            }
            try await directorySyncer.sync()
        } catch {
            spool.discard()
            try? removeFile(dataPath)
            try? removeFile(envelopePath)
            await releaseSlot()
            throw .storage(error)
        }
        if let remote { log.queued(id: id, from: from, remote: remote, to: to) }
        await register(message)
        return id
    }

    private func reserveSlot() -> Bool {
        guard items.count + inFlight < settings.maxItems else { return false }
        inFlight += 1
        return true
    }

    private func releaseSlot() { inFlight -= 1 }

    private func register(_ message: Queue_Message) {
        inFlight -= 1
        metrics.count(MetricCatalog.itemsWritten)
        items[message.id] = message
        itemsChanged()
        startLoop(message.id, fresh: true)
    }

    private func itemsChanged() {
        metrics.set(MetricCatalog.queueLength, Double(items.count))
    }

    /// Queues a message we made ourselves (a DSN).
    func put(from: String, to: [String], data: [UInt8]) async throws(QueueError) -> String {
        let spool = try newSpool()
        do {
            try spool.append(data)
        } catch {
            spool.discard()
            throw .storage(error)
        }
        return try await put(from: from, to: to, spool: spool)
    }

    private func writeEnvelope(_ message: Queue_Message) throws(FileError) {
        try AtomicFile.write(Array(message.textFormatString().utf8), to: envelopePath(message.id), mode: 0o600)
        metrics.count(MetricCatalog.itemsWritten)
    }

    /// Loads the queue at start-up and starts every item's delivery loop.
    /// Unreadable items are reported and skipped (their files are kept);
    /// data files without an envelope (a crash between the two writes, before
    /// the 250) are removed.
    public func load() throws(QueueError) -> [String] {
        var problems: [String] = []
        do {
            try makeDirectories(settings.directory, mode: 0o700)
        } catch {
            throw .storage(error)
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: settings.directory)) ?? []
        for name in names.sorted() where name.hasPrefix("m:") {
            let id = String(name.dropFirst(2))
            do {
                let bytes = try readFile(envelopePath(id))
                var message = try Queue_Message(textFormatString: String(decoding: bytes, as: UTF8.self))
                message.id = id
                if !message.data.isEmpty {
                    // chasquid's form: move the data beside the envelope.
                    try AtomicFile.write(Array(message.data), to: dataPath(id), mode: 0o600)
                    message.data = Data()
                    try writeEnvelope(message)
                }
                guard fileExists(dataPath(id)) else {
                    problems.append("\(name): missing data file, skipped")
                    continue
                }
                items[id] = message
            } catch {
                problems.append("\(name): \(error)")
            }
        }
        // What a crash (or a kill) leaves behind, before any 250 was sent
        // for it: the data of a message whose envelope was not written yet,
        // and files being written (incoming data, an envelope's temporary).
        // Removed, and said, so an admin who finds files gone knows why.
        let envelopes = Set(names.filter { $0.hasPrefix("m:") }.map { String($0.dropFirst(2)) })
        for name in names.sorted() where name.hasPrefix("d:") && !envelopes.contains(String(name.dropFirst(2))) {
            try? removeFile(settings.directory + "/" + name)
            problems.append("\(name): data without an envelope (interrupted before its 250), removed")
        }
        let unfinished = names.filter { $0.hasPrefix(".incoming-") || $0.hasPrefix(".m:") || $0.hasPrefix(".d:") }
        for name in unfinished { try? removeFile(settings.directory + "/" + name) }
        if !unfinished.isEmpty {
            problems.append("removed \(unfinished.count) partly written file(s) (interrupted while being written)")
        }
        itemsChanged()
        for id in items.keys.sorted() { startLoop(id) }
        return problems
    }

    /// - Parameter fresh: a message just accepted gets its first attempt
    ///   whatever the clock says; only items loaded at start-up can be too
    ///   old to try (COMPAT.md §6).
    /// One `Queue.SendLoop <id>: ...` line at info level, the message
    /// Go-quoted inside as chasquid's trace log writes it.
    private func sendLoopLog(_ id: String, _ message: String) {
        logger.info("Queue.SendLoop \(id): \(goQuotedInner(message))")
    }

    private func startLoop(_ id: String, fresh: Bool = false) {
        if let message = items[id] { sendLoopLog(id, "from \(message.from)") }
        if let traces, let message = items[id] {
            let trace = traces.start(family: "Queue.Item", title: id)
            trace.log("from \(message.from) to \(message.to.joined(separator: ", "))")
            for r in message.rcpt {
                trace.log("recipient \(r.address) (\(r.type), \(r.status))" + (r.via.isEmpty ? "" : " via \(r.via)"))
            }
            itemTraces[id] = trace
        }
        loops[id] = Task { await self.deliveryLoop(id, fresh: fresh) }
    }

    /// Stops all delivery loops (shutdown, tests). Items stay on disk.
    public func stop() {
        for task in loops.values { task.cancel() }
        loops = [:]
    }

    func age(_ message: Queue_Message) -> Duration {
        let created = message.createdAtTs.date
        return .milliseconds(Int64(max(0, time.now().timeIntervalSince(created)) * 1000))
    }

    private func deliveryLoop(_ id: String, fresh: Bool) async {
        var first = fresh
        while !Task.isCancelled {
            guard let message = items[id] else { return }
            if !first && age(message) >= settings.giveUpAfter { break }
            first = false
            await attemptPending(id)
            guard let updated = items[id] else { return }
            if !updated.rcpt.contains(where: { $0.status == .pending }) { break }
            if age(updated) >= settings.giveUpAfter { break }
            let delay = settings.retryDelay(age(updated))
            let (seconds, attoseconds) = delay.components
            let nanoseconds = seconds * 1_000_000_000 + attoseconds / 1_000_000_000
            let nextIn = GoDuration.format(nanoseconds: nanoseconds)
            log.loopCompleted(id: id, from: updated.from, nextIn: nextIn)
            sendLoopLog(id, "waiting for \(nextIn)")
            itemTraces[id]?.log("next attempt in \(nextIn)")
            nextAttempts[id] = time.now().addingTimeInterval(Double(nanoseconds) / 1e9)
            do {
                try await time.clock.sleep(for: delay)
            } catch {
                return
            }
            nextAttempts[id] = nil
        }
        if Task.isCancelled { return }
        await finish(id)
    }

    /// One round: every pending recipient, in parallel; the envelope is
    /// rewritten after each result.
    private func attemptPending(_ id: String) async {
        guard let message = items[id] else { return }
        // Not read here: each courier reads the file as it needs it (the
        // MDA in pieces), so no message is held whole, and no file is read
        // on the actor.
        let data = MessageData(path: dataPath(id))
        // Recipients that one SMTP transaction can carry (same courier, same
        // envelope sender, same domain, same `via`) go together (§22.15);
        // the rest one by one. All of it in parallel.
        struct BatchKey: Hashable {
            var from: String
            var domain: String
            var via: [String]
        }
        var batches: [BatchKey: (courier: any BatchCourier, indices: [Int])] = [:]
        var batchOrder: [BatchKey] = []
        await withTaskGroup(of: [(Int, DeliveryResult)].self) { group in
            for (index, recipient) in message.rcpt.enumerated() where recipient.status == .pending {
                let courier = courier(for: recipient)
                let from = envelopeSender(message.from, for: recipient)
                let via = recipient.type == .forward ? recipient.via : []
                if let batchCourier = courier as? any BatchCourier {
                    let key = BatchKey(from: from, domain: Address.domain(of: recipient.address), via: via)
                    if batches[key] == nil { batchOrder.append(key) }
                    batches[key, default: (batchCourier, [])].indices.append(index)
                    continue
                }
                let attempt = attemptTrace(id, to: [recipient.address], kind: recipientKind(recipient))
                group.addTask {
                    let result = await Trace.$current.withValue(attempt.trace) {
                        await courier.deliver(from: from, to: recipient.address, data: data, via: via)
                    }
                    attempt.finish([result])
                    return [(index, result)]
                }
            }
            for key in batchOrder {
                let (courier, indices) = batches[key]!
                let addresses = indices.map { message.rcpt[$0].address }
                let attempt = attemptTrace(id, to: addresses, kind: recipientKind(message.rcpt[indices[0]]))
                group.addTask {
                    let results = await Trace.$current.withValue(attempt.trace) {
                        await courier.deliver(from: key.from, to: addresses, data: data, via: key.via)
                    }
                    attempt.finish(results)
                    return Array(zip(indices, results))
                }
            }
            for await pairs in group {
                for (index, result) in pairs { record(id, index, result) }
            }
        }
        // The results are written once per round, and only if the item stays:
        // one that is done is removed next. A crash before this write makes a
        // restart retry these recipients: a duplicate, never a loss.
        if let updated = items[id], updated.rcpt.contains(where: { $0.status == .pending }) {
            // The fsyncs run on a file thread: the actor runs on an event loop.
            let text = Array(updated.textFormatString().utf8)
            let path = envelopePath(id)
            if (try? await offloaded({ () throws(FileError) in try AtomicFile.write(text, to: path, mode: 0o600) })) != nil {
                metrics.count(MetricCatalog.itemsWritten)
            }
        }
    }

    /// One delivery attempt's trace (a child of the item's) and metrics.
    private struct Attempt: Sendable {
        let trace: Trace
        let addresses: [String]
        let kind: String
        let started: ContinuousClock.Instant
        let metrics: ServerMetrics

        func finish(_ results: [DeliveryResult]) {
            metrics.record(MetricCatalog.deliveryDuration, kind, duration: .now - started)
            for (address, result) in zip(addresses, results) {
                switch result {
                case .sent: trace.log("\(address): sent")
                case .temporary(let error): trace.error("\(address): temporary failure: \(error)")
                case .permanent(let error): trace.error("\(address): permanent failure: \(error)")
                }
            }
            trace.finish()
        }
    }

    private func attemptTrace(_ id: String, to addresses: [String], kind: String) -> Attempt {
        metrics.count(MetricCatalog.deliverAttempts, kind, by: addresses.count)
        let title = "\(id) to \(addresses.joined(separator: ", "))"
        let trace = itemTraces[id]?.child(family: "Delivery", title: title) ?? .disabled
        trace.log("\(kind) delivery to \(addresses.joined(separator: ", "))")
        return Attempt(trace: trace, addresses: addresses, kind: kind, started: .now, metrics: metrics)
    }

    /// chasquid's `deliverAttempts` label: `email:local`, `email:remote`, `pipe`, `forward`.
    private func recipientKind(_ recipient: Queue_Recipient) -> String {
        switch recipient.type {
        case .pipe: "pipe"
        case .forward: "forward"
        default: isLocalAddress(recipient.address) ? "email:local" : "email:remote"
        }
    }

    private func courier(for recipient: Queue_Recipient) -> any Courier {
        switch recipient.type {
        case .pipe: couriers.pipe
        case .forward: couriers.remote
        default: isLocalAddress(recipient.address) ? couriers.local : couriers.remote
        }
    }

    /// chasquid's `envelope.DomainIn`: an address without a domain (and so
    /// `<>`) counts as local.
    private func isLocalAddress(_ address: String) -> Bool {
        let domain = Address.domain(of: address)
        return domain.isEmpty || environment.isLocal(domain)
    }

    /// The MAIL FROM for one recipient. SRS (COMPAT.md §12.4): a sender whose
    /// domain is not local is rewritten for remote EMAIL and FORWARD
    /// recipients, so the next hop's SPF checks see one of our domains.
    private func envelopeSender(_ from: String, for recipient: Queue_Recipient) -> String {
        switch recipient.type {
        case .pipe: return from
        case .forward: break
        default: if isLocalAddress(recipient.address) { return from }
        }
        return isLocalAddress(from) ? from : Self.rewriteSender(from, originalAddress: recipient.originalAddress)
    }

    /// `<orig-rcpt-user>+fwd_from=<sender with @ as =>@<orig-rcpt-domain>`.
    static func rewriteSender(_ from: String, originalAddress: String) -> String {
        let (user, domain) = Address.split(originalAddress)
        let sender = String(String.UnicodeScalarView(from.unicodeScalars.map { $0 == "@" ? "=" : $0 }))
        return user + "+fwd_from=" + sender + "@" + domain
    }

    private func record(_ id: String, _ index: Int, _ result: DeliveryResult) {
        guard var message = items[id] else { return }
        let address = message.rcpt[index].address
        let trace = itemTraces[id]
        switch result {
        case .sent:
            trace?.log("\(address): sent")
            message.rcpt[index].status = .sent
            log.sent(id: id, from: message.from, to: address)
            sendLoopLog(id, "\(address) sent")
        case .temporary(let error):
            trace?.log("\(address): temporary failure: \(error)")
            message.rcpt[index].lastFailureMessage = error
            log.failed(id: id, from: message.from, to: address, permanent: false, error: error)
            sendLoopLog(id, "\(address) temporary error: \(error)")
        case .permanent(let error):
            trace?.error("\(address): permanent failure: \(error)")
            message.rcpt[index].status = .failed
            message.rcpt[index].lastFailureMessage = error
            log.failed(id: id, from: message.from, to: address, permanent: true, error: error)
            sendLoopLog(id, "error: \(address) permanent error: \(error)")
        }
        items[id] = message
    }

    /// The end of an item: a DSN for what was not sent, then removal.
    private func finish(_ id: String) async {
        guard let message = items[id] else { return }
        let undelivered = message.rcpt.contains { $0.status != .sent }
        if undelivered && message.from != "<>" {
            let path = dataPath(id)
            let data = (try? await offloaded { () throws(FileError) in try readFile(path) }) ?? []
            let dsn = DSN.make(for: message, originalData: data, reportingDomain: reportingDomain(message), now: time.now())
            // A full disk would lose the bounce: the item stays (on disk, so
            // a restart tries again too) until the bounce can be queued.
            var queued: Result<String, QueueError>
            while true {
                do {
                    queued = .success(try await put(from: "<>", to: [message.from], data: dsn))
                    break
                } catch where error.isOutOfSpace {
                    let delay = settings.retryDelay(age(message))
                    let (seconds, attoseconds) = delay.components
                    let wait = GoDuration.format(nanoseconds: seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
                    log.write("\(id) from=\(message.from) failed to queue DSN: \(error); trying again in \(wait)")
                    sendLoopLog(id, "error: failed to queue DSN: \(error); trying again in \(wait)")
                    do { try await time.clock.sleep(for: delay) } catch { return }
                } catch {
                    queued = .failure(error)
                    break
                }
            }
            switch queued {
            case .success(let dsnID):
                metrics.count(MetricCatalog.dsnQueued)
                log.write("\(id) from=\(message.from) DSN queued as \(dsnID)")
                itemTraces[id]?.log("DSN queued as \(dsnID)")
                sendLoopLog(id, "queued DSN: \(dsnID)")
            case .failure(let error):
                log.write("\(id) from=\(message.from) failed to queue DSN: \(error)")
                itemTraces[id]?.error("failed to queue DSN: \(error)")
                sendLoopLog(id, "error: failed to queue DSN: \(error)")
            }
        }
        // No directory fsync: if a crash undoes the removal, the item is
        // tried again (a duplicate at worst).
        let (envelope, data) = (envelopePath(id), dataPath(id))
        _ = try? await offloaded { () throws(FileError) in
            try? removeFile(envelope)
            try? removeFile(data)
        }
        items[id] = nil
        loops[id] = nil
        nextAttempts[id] = nil
        itemsChanged()
        itemTraces[id]?.log("all done")
        itemTraces.removeValue(forKey: id)?.finish()
        log.allDone(id: id, from: message.from)
        sendLoopLog(id, "all done")
    }

    /// The sender's domain if local, else the first local original
    /// recipient's, else "unknown".
    private func reportingDomain(_ message: Queue_Message) -> String {
        let senderDomain = Address.domain(of: message.from)
        if environment.isLocal(senderDomain) { return senderDomain }
        for to in message.to where environment.isLocal(Address.domain(of: to)) {
            return Address.domain(of: to)
        }
        return "unknown"
    }
}

/// One queue item as the monitoring pages show it.
public struct QueueItemStatus: Sendable {
    public var message: Queue_Message
    /// When the next round starts; nil while one runs.
    public var nextAttempt: Date?
    /// The item's trace, while it is kept.
    public var traceID: UInt64?

    public init(message: Queue_Message, nextAttempt: Date? = nil, traceID: UInt64? = nil) {
        self.message = message
        self.nextAttempt = nextAttempt
        self.traceID = traceID
    }
}
