import NIOPosix

/// Where blocking system calls run: fixed pools of threads, made once, so
/// that the thread count stays bounded however many sessions wait on a disk
/// or a child at once (issue 13 §12). Neither a Swift concurrency thread
/// nor an event loop is ever held by such a call. Work beyond a pool's
/// threads waits in its queue, in order.
///
/// Three pools, so that no kind of work can starve or deadlock another: a
/// child holds its thread up to its timeout (30 s for the MDA, a minute for
/// a hook), and
/// - slow hooks must not hold up the fsyncs every `250` after DATA waits on;
/// - the queue's deliveries (the MDA once per local recipient, pipe
///   aliases) must not hold up the hooks that sessions wait on, nor the
///   other way round; and a pipe alias that sends mail back to us over SMTP
///   needs a session hook while it holds a delivery thread.
public enum BlockingWork {
    /// Threads for file work: fsyncs, renames, spool writes. These calls
    /// are short; a stalled disk holds at most this many threads.
    public static let fileThreads = 8

    /// Threads for the children an SMTP session waits on: the post-data and
    /// alias-resolve hooks.
    public static let sessionProcessThreads = 32

    /// Threads for the children the queue runs: the MDA and pipe aliases.
    public static let deliveryProcessThreads = 16

    /// Which process pool a child runs on.
    public enum ProcessPool: Sendable {
        case session, delivery
    }

    static let filePool = startedPool(fileThreads)
    static let sessionProcessPool = startedPool(sessionProcessThreads)
    static let deliveryProcessPool = startedPool(deliveryProcessThreads)

    private static func startedPool(_ threads: Int) -> NIOThreadPool {
        let pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
        return pool
    }

    /// Runs `work` on a file thread and returns its result.
    public static func onFileThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await run(on: filePool, work)
    }

    /// Starts `work` on a file thread and returns at once.
    public static func startOnFileThread(_ work: @escaping @Sendable () -> Void) {
        filePool.submit { _ in work() }
    }

    /// Runs `work` on a thread of a process pool and returns its result.
    public static func onProcessThread<T: Sendable>(
        _ pool: ProcessPool, _ work: @escaping @Sendable () -> T
    ) async -> T {
        switch pool {
        case .session: await run(on: sessionProcessPool, work)
        case .delivery: await run(on: deliveryProcessPool, work)
        }
    }

    private static func run<T: Sendable>(on pool: NIOThreadPool, _ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            // The pools are never shut down, so every item runs; and once
            // submitted it runs even if the caller's task is cancelled: an
            // fsync or a child's wait is never dropped half way.
            pool.submit { _ in continuation.resume(returning: work()) }
        }
    }
}
