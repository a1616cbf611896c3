import Dispatch
import Testing

@testable import ChasquidServer

@Suite struct DeadlineTests {
    @Test func aFastOperationGivesItsResult() async {
        #expect(await ServerPolicy.withDeadline(.seconds(5)) { 42 } == 42)
    }

    /// The SPF deadline must hold even when the work ignores cancellation,
    /// as DNS waits on NIO futures do.
    @Test func theDeadlineDoesNotWaitForWorkThatIgnoresCancellation() async {
        let start = ContinuousClock.now
        let result: Int? = await ServerPolicy.withDeadline(.milliseconds(200)) {
            await withCheckedContinuation { continuation in
                DispatchQueue.global().asyncAfter(deadline: .now() + 3) { continuation.resume(returning: 7) }
            }
        }
        #expect(result == nil)
        #expect(ContinuousClock.now - start < .seconds(2))
    }
}
