#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization

/// Group commit for one directory: many writers that just renamed files into
/// it wait for one `fsync` of the directory instead of each doing their own.
///
/// A writer calls `sync()` after its rename. Any fsync that *starts* after
/// the call covers that rename, so a writer waits for the next fsync to
/// start and finish; writers arriving while one runs share the one after it.
public final class DirectorySyncer: Sendable {
    public let path: String

    private struct State {
        var requested = 0
        var running = false
        var waiters: [(ticket: Int, continuation: CheckedContinuation<FileError?, Never>)] = []
    }

    private let state = Mutex(State())

    public init(path: String) {
        self.path = path
    }

    /// Returns once a directory fsync that started after this call has finished.
    public func sync() async throws(FileError) {
        let error: FileError? = await withCheckedContinuation { continuation in
            let startWorker = state.withLock { state in
                state.requested += 1
                state.waiters.append((state.requested, continuation))
                if state.running { return false }
                state.running = true
                return true
            }
            if startWorker { DispatchQueue(label: "chasquid.directory-sync").async { self.work() } }
        }
        if let error { throw error }
    }

    private func work() {
        while true {
            let target = state.withLock { $0.requested }
            var error: FileError?
            do {
                try AtomicFile.syncDirectory(path)
            } catch let e {
                error = e
            }
            let done: [CheckedContinuation<FileError?, Never>] = state.withLock { state in
                let ready = state.waiters.filter { $0.ticket <= target }.map(\.continuation)
                state.waiters.removeAll { $0.ticket <= target }
                if state.waiters.isEmpty { state.running = false }
                return ready
            }
            for continuation in done { continuation.resume(returning: error) }
            if state.withLock({ !$0.running }) { return }
        }
    }
}

/// Runs blocking file work on a thread of its own (a serial queue gets one
/// even when the CPU-wide global queue is busy), so neither a Swift
/// concurrency thread nor an actor is held by an fsync.
public func offloaded<T: Sendable>(_ work: @escaping @Sendable () throws(FileError) -> T) async throws(FileError) -> T {
    let result: Result<T, FileError> = await withCheckedContinuation { continuation in
        DispatchQueue(label: "chasquid.file-io").async {
            continuation.resume(returning: Result { () throws(FileError) -> T in try work() })
        }
    }
    return try result.get()
}
