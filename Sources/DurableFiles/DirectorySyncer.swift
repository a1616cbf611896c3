#if canImport(Glibc)
import Glibc
#endif
import BlockingWork
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
        /// Workers looping now, and the most ever at once (tests: one).
        var workers = 0
        var peakWorkers = 0
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
            if startWorker { BlockingWork.startOnFileThread { self.work() } }
        }
        if let error { throw error }
    }

    /// The most workers that ever ran at once for this directory.
    var peakWorkers: Int { state.withLock { $0.peakWorkers } }

    private func work() {
        state.withLock { state in
            state.workers += 1
            state.peakWorkers = max(state.peakWorkers, state.workers)
        }
        while true {
            let target = state.withLock { $0.requested }
            var error: FileError?
            do {
                try AtomicFile.syncDirectory(path)
            } catch let e {
                error = e
            }
            // Whether to stop is decided in the same critical section that
            // clears `running`: a `sync()` after it starts a new worker, one
            // before it is served by this one, never both.
            let (done, stop): ([CheckedContinuation<FileError?, Never>], Bool) = state.withLock { state in
                let ready = state.waiters.filter { $0.ticket <= target }.map(\.continuation)
                state.waiters.removeAll { $0.ticket <= target }
                if state.waiters.isEmpty {
                    state.running = false
                    state.workers -= 1
                }
                return (ready, !state.running)
            }
            for continuation in done { continuation.resume(returning: error) }
            if stop { return }
        }
    }
}

/// Runs blocking file work on a file thread (`BlockingWork`), so neither a
/// Swift concurrency thread nor an actor is held by an fsync.
public func offloaded<T: Sendable>(_ work: @escaping @Sendable () throws(FileError) -> T) async throws(FileError) -> T {
    let result: Result<T, FileError> = await BlockingWork.onFileThread {
        Result { () throws(FileError) -> T in try work() }
    }
    return try result.get()
}
