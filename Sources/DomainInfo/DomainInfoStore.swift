#if canImport(Glibc)
import Glibc
#endif
import ChasquidProto
import DurableFiles
import GoCompat
import SwiftProtobuf
import Synchronization

/// A problem loading the store. Fatal at start-up and on SIGHUP (COMPAT.md §5).
public enum DomainInfoError: Error, CustomStringConvertible, Sendable {
    /// The directory could not be created or listed.
    case directory(FileError)
    /// An `s:*` file could not be read or parsed.
    case badFile(path: String, reason: String)

    public var description: String {
        switch self {
        case .directory(let error): error.description
        case .badFile(let path, let reason): "error loading \"\(path)\": \(reason)"
        }
    }
}

/// What a load (start-up or `reload()`) read.
public struct LoadReport: Equatable, Sendable {
    /// How many `s:*` files were read.
    public var loaded = 0
    /// `s:*` file names that were not read, because the part after `s:` does
    /// not unescape (Go's `url.QueryUnescape`), or is not escaped the way
    /// chasquid escapes (chasquid reads the canonically escaped name, so it
    /// never reads these either). Worth a log line.
    public var skipped: [String] = []

    public init() {}
}

/// A record file that could not be written.
public struct WriteFailure: Sendable, CustomStringConvertible {
    public var domain: String
    public var error: FileError

    public var description: String { "error writing domain info for \"\(domain)\": \(error)" }
}

/// The per-domain TLS security levels (chasquid's "domaininfo", COMPAT.md
/// §5, §6, §13): downgrade protection for incoming and outgoing mail.
///
/// One file per domain, `<directory>/s:<QueryEscape(name)>`, a text-format
/// `Domain` message written atomically with mode 0660. Files are read only by
/// `init` and `reload()` (SIGHUP); the in-memory map, keyed by the message's
/// `name`, is the truth in between.
///
/// **Checks** (`incomingAllowed`, `outgoingAllowed`) raise levels only
/// upward. The new level is in memory, and so enforced, before the check
/// returns; the check also waits for the file write that covers its change.
/// Writes for one domain run one at a time, each writing the domain's latest
/// state, so the last write on disk always carries the highest level (or the
/// latest `clear`) whatever order concurrent checks finish in. Writes run on
/// a thread of their own (`offloaded`), not on Swift's cooperative pool.
///
/// **Write errors** do not change a check's answer (the level is still
/// enforced from memory, as chasquid does): they go to `onWriteError` (once
/// per failed write, meant for the log) and to `lastWriteError`. `clear`
/// also throws them. A level that could not be written is lost at the next
/// restart or reload, as in chasquid.
public final class DomainInfoStore: Sendable {
    public let directory: String
    private let onWriteError: (@Sendable (_ domain: String, _ error: FileError) -> Void)?

    private struct Record {
        var levels: DomainLevels
        /// The store-wide change number of the last change (0: as loaded).
        var change: UInt64
    }

    /// What a caller of `update` is told.
    private enum Turn: Sendable {
        /// Nothing changed, so nothing to write.
        case answered(Bool)
        /// The caller writes the domain's file now (it holds the domain's write turn).
        case write
        /// Another caller's write covered this change.
        case written(FileError?)
    }

    /// A domain whose file is being written; later changes wait here.
    private struct Writer {
        var waiters: [(change: UInt64, continuation: CheckedContinuation<Turn, Never>)] = []
    }

    private struct State {
        var records: [String: Record]
        var changes: UInt64 = 0
        var writers: [String: Writer] = [:]
        var lastLoad: LoadReport
        var lastWriteError: WriteFailure?
    }

    private let state: Mutex<State>

    /// Creates `directory` (0770, with its parents) if missing and loads
    /// every `s:*` file in it.
    ///
    /// - Parameter onWriteError: called once for each file write that fails
    ///   (from whichever task did the write); for logging.
    /// - Throws: a directory that cannot be created or listed, or an `s:*`
    ///   file that cannot be read or parsed (the error names the file).
    public init(
        directory: String,
        onWriteError: (@Sendable (_ domain: String, _ error: FileError) -> Void)? = nil
    ) throws(DomainInfoError) {
        do {
            try makeDirectories(directory, mode: 0o770)
        } catch {
            throw .directory(error)
        }
        let (records, report) = try Self.load(directory)
        self.directory = directory
        self.onWriteError = onWriteError
        state = Mutex(State(records: records, lastLoad: report))
    }

    /// Reads every `s:*` file again (SIGHUP). On error nothing changes.
    ///
    /// Records changed since the reload began, or whose write is still in
    /// progress, keep their in-memory state: it is newer than what was read
    /// (and is what their file will hold). Everything else comes from disk:
    /// external edits are picked up, and a domain whose file was removed is
    /// forgotten.
    @discardableResult
    public func reload() throws(DomainInfoError) -> LoadReport {
        let start = state.withLock { $0.changes }
        let (loaded, report) = try Self.load(directory)
        state.withLock { s in
            var records = loaded
            for (name, record) in s.records where record.change > start || s.writers[name] != nil {
                records[name] = record
            }
            s.records = records
            s.lastLoad = report
        }
        return report
    }

    /// What the last load (`init` or `reload()`) read.
    public var lastLoad: LoadReport { state.withLock { $0.lastLoad } }

    /// The most recent failed write, if any.
    public var lastWriteError: WriteFailure? { state.withLock { $0.lastWriteError } }

    /// The file holding `domain`'s record.
    public func path(for domain: String) -> String {
        directory + "/s:" + GoQuery.escape(domain)
    }

    /// The incoming check (COMPAT.md §13), for mail from `domain` that
    /// arrived at `level`. An unknown domain is recorded at once at `level`
    /// (outgoing `PLAIN`) and allowed; a level below the stored one is
    /// refused; a higher one is stored and allowed; an equal one is allowed.
    /// Only a new or raised level writes the file.
    public func incomingAllowed(domain: String, level: SecurityLevel) async -> Bool {
        await update(domain) { levels in
            guard let current = levels else { return .change(DomainLevels(incoming: level, outgoing: .plain)) }
            if level < current.incoming { return .answer(false) }
            if level == current.incoming { return .answer(true) }
            return .change(DomainLevels(incoming: level, outgoing: current.outgoing))
        }.answer
    }

    /// The outgoing check (COMPAT.md §12.5, §13): the same rules as
    /// `incomingAllowed`, on the outgoing level.
    public func outgoingAllowed(domain: String, level: SecurityLevel) async -> Bool {
        await update(domain) { levels in
            guard let current = levels else { return .change(DomainLevels(incoming: .plain, outgoing: level)) }
            if level < current.outgoing { return .answer(false) }
            if level == current.outgoing { return .answer(true) }
            return .change(DomainLevels(incoming: current.incoming, outgoing: level))
        }.answer
    }

    /// `domaininfo-remove` (the `DomaininfoClear` RPC, COMPAT.md §13, §16):
    /// resets both levels of `domain` (matched exactly) to `PLAIN` and writes
    /// the file, which is kept.
    ///
    /// - Returns: false if the domain is unknown ("does not exist").
    /// - Throws: the write error; the levels are cleared in memory anyway.
    public func clear(domain: String) async throws(FileError) -> Bool {
        let (known, error) = await update(domain) { levels in
            guard levels != nil else { return .answer(false) }
            return .change(DomainLevels(incoming: .plain, outgoing: .plain))
        }
        if let error { throw error }
        return known
    }

    /// The stored levels of `domain` (matched exactly), or nil if unknown.
    public func level(of domain: String) -> DomainLevels? {
        state.withLock { $0.records[domain]?.levels }
    }

    /// Every known domain with its levels (for the monitoring page).
    public func records() -> [String: DomainLevels] {
        state.withLock { $0.records.mapValues(\.levels) }
    }

    /// The names that no check can reach once callers normalise domains
    /// before looking them up (COMPAT.md §22 item 7): those `normalize`
    /// changes or rejects (returns nil for). Sorted; for a log line each.
    public func orphanedNames(normalize: (String) -> String?) -> [String] {
        records().keys.filter { normalize($0) != $0 }.sorted()
    }

    // MARK: - Changes and writes

    private enum Decision {
        case answer(Bool)
        case change(DomainLevels)
    }

    /// Applies `decide` to `domain`'s levels (nil: unknown) under the lock.
    /// A change is stored at once, then written; the answer for a change is
    /// true, and comes back with the error of the write that covered it.
    private func update(
        _ domain: String, _ decide: (DomainLevels?) -> Decision
    ) async -> (answer: Bool, error: FileError?) {
        let turn: Turn = await withCheckedContinuation { continuation in
            let immediate: Turn? = state.withLock { s in
                switch decide(s.records[domain]?.levels) {
                case .answer(let answer):
                    return .answered(answer)
                case .change(let levels):
                    s.changes += 1
                    s.records[domain] = Record(levels: levels, change: s.changes)
                    if s.writers[domain] != nil {
                        s.writers[domain]!.waiters.append((s.changes, continuation))
                        return nil
                    }
                    s.writers[domain] = Writer()
                    return .write
                }
            }
            if let immediate { continuation.resume(returning: immediate) }
        }
        switch turn {
        case .answered(let answer): return (answer, nil)
        case .written(let error): return (true, error)
        case .write: return (true, await write(domain))
        }
    }

    /// Writes `domain`'s current record, holding its write turn; then wakes
    /// the waiters this write covered and hands the turn to the first of the
    /// rest (their changes came after the snapshot written).
    private func write(_ domain: String) async -> FileError? {
        let snapshot = state.withLock { s in s.records[domain] }
        var failure: FileError?
        if let snapshot {
            let bytes = Self.serialize(domain, snapshot.levels)
            let file = path(for: domain)
            do {
                try await offloaded { () throws(FileError) in
                    try AtomicFile.write(bytes, to: file, mode: 0o660)
                }
            } catch {
                failure = error
            }
        }
        let written = snapshot?.change ?? .max
        let (covered, next) = state.withLock { s in
            var writer = s.writers.removeValue(forKey: domain) ?? Writer()
            let covered = writer.waiters.filter { $0.change <= written }.map(\.continuation)
            writer.waiters.removeAll { $0.change <= written }
            var next: CheckedContinuation<Turn, Never>?
            if !writer.waiters.isEmpty {
                next = writer.waiters.removeFirst().continuation
                s.writers[domain] = writer
            }
            if let failure { s.lastWriteError = WriteFailure(domain: domain, error: failure) }
            return (covered, next)
        }
        if let failure { onWriteError?(domain, failure) }
        for continuation in covered { continuation.resume(returning: .written(failure)) }
        next?.resume(returning: .write)
        return failure
    }

    /// The file contents chasquid writes: text format, zero values omitted.
    static func serialize(_ domain: String, _ levels: DomainLevels) -> [UInt8] {
        var message = Domaininfo_Domain()
        message.name = domain
        message.incomingSecLevel = levels.incoming.proto
        message.outgoingSecLevel = levels.outgoing.proto
        return Array(message.textFormatString().utf8)
    }

    // MARK: - Loading

    private static func load(_ directory: String) throws(DomainInfoError) -> ([String: Record], LoadReport) {
        let names: [[UInt8]]
        do {
            names = try listDirectory(directory)
        } catch {
            throw .directory(error)
        }
        var records: [String: Record] = [:]
        var report = LoadReport()
        // Byte order, as Go's os.ReadDir: if two files hold the same name, the last wins.
        for bytes in names.sorted(by: { $0.lexicographicallyPrecedes($1) }) where bytes.starts(with: "s:".utf8) {
            guard let file = String(validating: bytes, as: UTF8.self) else {
                report.skipped.append(String(decoding: bytes, as: UTF8.self))
                continue
            }
            let escaped = String(file.dropFirst(2))
            guard let id = try? GoQuery.unescape(escaped), GoQuery.escape(id) == escaped else {
                report.skipped.append(file)
                continue
            }
            let path = directory + "/" + file
            let domain = try parse(path)
            records[domain.name] = Record(levels: domain.levels, change: 0)
            report.loaded += 1
        }
        return (records, report)
    }

    private static func parse(_ path: String) throws(DomainInfoError) -> (name: String, levels: DomainLevels) {
        let bytes: [UInt8]
        do {
            bytes = try readFile(path)
        } catch {
            throw .badFile(path: path, reason: error.description)
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .badFile(path: path, reason: "not valid UTF-8")
        }
        let message: Domaininfo_Domain
        do {
            message = try Domaininfo_Domain(textFormatString: text)
        } catch {
            throw .badFile(path: path, reason: "\(error)")
        }
        guard let incoming = SecurityLevel(message.incomingSecLevel),
            let outgoing = SecurityLevel(message.outgoingSecLevel)
        else {
            throw .badFile(
                path: path,
                reason: "unknown security level (incoming \(message.incomingSecLevel.rawValue), "
                    + "outgoing \(message.outgoingSecLevel.rawValue))")
        }
        return (message.name, DomainLevels(incoming: incoming, outgoing: outgoing))
    }

    /// The entry names in `directory`, as raw bytes, without `.` and `..`.
    private static func listDirectory(_ directory: String) throws(FileError) -> [[UInt8]] {
        guard let dir = opendir(directory) else { throw FileError("open", path: directory, errno: errno) }
        defer { closedir(dir) }
        var names: [[UInt8]] = []
        while true {
            errno = 0
            guard let entry = readdir(dir) else {
                if errno != 0 { throw FileError("read", path: directory, errno: errno) }
                break
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                Array(raw.prefix { $0 != 0 })
            }
            if name == Array(".".utf8) || name == Array("..".utf8) { continue }
            names.append(name)
        }
        return names
    }
}
