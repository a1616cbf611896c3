import Dispatch
import Testing

@testable import ChasquidServer

@Suite struct DeadlineTests {
    @Test func aFastOperationGivesItsResult() async {
        #expect(await ServerPolicy.withDeadline(.seconds(5)) { 42 } == 42)
    }

    /// The SPF deadline must hold even when the work ignores cancellation,
    /// as DNS waits on NIO futures do.
    /// The work takes 60 s; the check is that the deadline does not wait
    /// for it, with a bound loose enough for a loaded machine (this is not a
    /// timing test: a task group would take the full 60 s).
    @Test func theDeadlineDoesNotWaitForWorkThatIgnoresCancellation() async {
        let start = ContinuousClock.now
        let result: Int? = await ServerPolicy.withDeadline(.milliseconds(200)) {
            await withCheckedContinuation { continuation in
                DispatchQueue.global().asyncAfter(deadline: .now() + 60) { continuation.resume(returning: 7) }
            }
        }
        #expect(result == nil)
        #expect(ContinuousClock.now - start < .seconds(30))
    }
}
