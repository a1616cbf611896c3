import Foundation
import Synchronization
import Testing

@testable import BlockingWork

final class Observed: Sendable {
    let running = Mutex((now: 0, most: 0))
    let threads = Mutex(Set<pthread_t>())
    let released = Atomic<Bool>(false)
}

@Suite struct BlockingWorkTests {
    /// Issue 13 §12: however many callers block at once, the calls share
    /// the pool's fixed threads; the rest wait their turn, and all finish.
    @Test(arguments: [
        (BlockingWork.ProcessPool.session, BlockingWork.sessionProcessThreads),
        (.delivery, BlockingWork.deliveryProcessThreads),
    ])
    func manyBlockingCallsShareTheFixedThreads(pool: BlockingWork.ProcessPool, threads: Int) async {
        let callers = threads * 4
        let observed = Observed()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<callers {
                group.addTask {
                    await BlockingWork.onProcessThread(pool) {
                        observed.running.withLock { $0.now += 1; $0.most = max($0.most, $0.now) }
                        observed.threads.withLock { _ = $0.insert(pthread_self()) }
                        usleep(20_000)
                        observed.running.withLock { $0.now -= 1 }
                    }
                }
            }
        }
        #expect(observed.running.withLock { $0.most } <= threads)
        #expect(observed.threads.withLock { $0.count } <= threads)
        #expect(observed.running.withLock { $0.now } == 0)
    }

    /// Deliveries that hold every delivery thread hold up neither a
    /// session's hook nor an fsync: those run while the deliveries still
    /// wait.
    @Test func aFullPoolHoldsUpNoOtherPool() async throws {
        let observed = Observed()
        let blockers = Task {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<(BlockingWork.deliveryProcessThreads * 2) {
                    group.addTask {
                        await BlockingWork.onProcessThread(.delivery) {
                            while !observed.released.load(ordering: .acquiring) { usleep(1_000) }
                        }
                    }
                }
            }
        }
        #expect(await BlockingWork.onProcessThread(.session) { 1 } == 1)
        #expect(await BlockingWork.onFileThread { 2 } == 2)
        observed.released.store(true, ordering: .releasing)
        await blockers.value
    }

    @Test func workRunsOffTheCallersThreadAndItsResultComesBack() async {
        let caller = pthread_self()
        let worker = await BlockingWork.onFileThread { pthread_self() }
        #expect(worker != caller)
        #expect(await BlockingWork.onFileThread { 6 * 7 } == 42)
    }
}
