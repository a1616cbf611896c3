import SPF
import Synchronization
import Testing

@testable import ChasquidServer

@Suite struct DeadlineTests {
    /// The timer is cancelled when the work ends first: with a one-hour
    /// deadline, a timer left sleeping would keep the call from returning
    /// (the time limit fails the test instead of letting it hang).
    @Test(.timeLimit(.minutes(1))) func aFastOperationGivesItsResultAndCancelsTheTimer() async {
        #expect(await ServerPolicy.withDeadline(.seconds(3600)) { 42 } == 42)
    }

    /// Issue 13 §11: at the deadline the work is cancelled and has ended
    /// by the time the call returns, so no lookup goes on after the reply.
    @Test func theDeadlineCancelsTheWorkAndWaitsForItsEnd() async {
        let ended = Mutex<Bool?>(nil)
        let start = ContinuousClock.now
        let result: Int? = await ServerPolicy.withDeadline(.milliseconds(200)) {
            try? await Task.sleep(for: .seconds(60))
            ended.withLock { $0 = Task.isCancelled }
            return 7
        }
        #expect(result == nil)
        #expect(ended.withLock { $0 } == true)
        // Not a timing test: uncancelled, the work takes 60 s.
        #expect(ContinuousClock.now - start < .seconds(30))
    }
}

@Suite struct AsyncLimiterTests {
    @Test func holdersAreBoundedAndWaitersServedInTurn() async throws {
        let limiter = AsyncLimiter(limit: 2)
        #expect(await limiter.acquire())
        #expect(await limiter.acquire())
        let third = Task { await limiter.acquire() }
        while limiter.counts.waiting == 0 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(limiter.counts == (0, 1))
        limiter.release()
        #expect(await third.value)
        #expect(limiter.counts == (0, 0))
        limiter.release()
        limiter.release()
        #expect(limiter.counts == (2, 0))
    }

    /// A check whose deadline passes while it waits leaves the queue and
    /// takes no slot.
    @Test func aCancelledWaiterLeavesAndTakesNoSlot() async throws {
        let limiter = AsyncLimiter(limit: 1)
        #expect(await limiter.acquire())
        let waiter = Task { await limiter.acquire() }
        while limiter.counts.waiting == 0 { try await Task.sleep(for: .milliseconds(5)) }
        waiter.cancel()
        #expect(await waiter.value == false)
        #expect(limiter.counts == (0, 0))
        limiter.release()
        #expect(limiter.counts == (1, 0))
        let late = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return await limiter.acquire()
        }
        #expect(await late.value == false)
        #expect(limiter.counts == (1, 0))
    }
}

@Suite struct BoundedSPFCheckTests {
    /// A check that gets no slot before its deadline is a temperror and
    /// never runs; it leaves no waiter behind. With a slot free, it runs
    /// and gives the slot back.
    @Test func aCheckRunsOnlyWithASlotAndWithinTheDeadline() async {
        let slots = AsyncLimiter(limit: 1)
        #expect(await slots.acquire())
        let ran = Mutex(false)
        let starved = await ServerPolicy.boundedCheck(slots: slots, deadline: .milliseconds(200)) {
            ran.withLock { $0 = true }
            return SPFOutcome(result: .pass, reason: nil)
        }
        #expect(starved.result == .temperror)
        #expect(!ran.withLock { $0 })
        #expect(slots.counts == (0, 0))
        slots.release()
        let checked = await ServerPolicy.boundedCheck(slots: slots, deadline: .seconds(3600)) {
            SPFOutcome(result: .pass, reason: nil)
        }
        #expect(checked.result == .pass)
        #expect(slots.counts == (1, 0))
    }
}
