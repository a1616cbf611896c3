import Synchronization
import Testing

@testable import ChasquidServer

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    private let instant = Mutex(ContinuousClock.now)
    var now: ContinuousClock.Instant { instant.withLock { $0 } }
    func advance(_ by: Duration) { instant.withLock { $0 += by } }
}

extension AuthThrottle {
    /// What an attempt would be told, leaving nothing pending.
    func verdict(ip: String, account: String) -> Verdict {
        let verdict = attempt(ip: ip, account: account)
        if case .proceed = verdict { finished(ip: ip, account: account, outcome: .undecided) }
        return verdict
    }
}

@Suite struct AuthThrottleTests {
    let clock = ManualClock()
    var throttle: AuthThrottle { AuthThrottle(now: { [clock] in clock.now }) }

    @Test func typingMistakesAreFreeThenTheDelayDoublesToItsCap() {
        let throttle = self.throttle
        var delays: [Duration] = []
        for _ in 0..<9 {
            guard case .proceed(let delay) = throttle.verdict(ip: "192.0.2.1", account: "a@x") else {
                Issue.record("refused too early")
                return
            }
            delays.append(delay)
            throttle.failed(ip: "192.0.2.1", account: "a@x")
        }
        #expect(delays == [0, 0, 0, 0, 0.5, 1, 2, 4, 8].map { Duration.milliseconds(Int($0 * 1000)) })
    }

    @Test func aNetworkIsRefusedAfterTenFailuresUntilTheLockoutEnds() {
        let throttle = self.throttle
        // One /64: each address a different account, as a guesser would.
        for i in 0..<10 { throttle.failed(ip: "2001:db8:1:2::\(i + 1)", account: "u\(i)@x") }
        #expect(throttle.verdict(ip: "2001:db8:1:2:ffff::9", account: "new@x") == .refuse)
        #expect(throttle.verdict(ip: "::ffff:192.0.2.1", account: "new@x") == .proceed(delay: .zero))
        #expect(throttle.verdict(ip: "2001:db8:1:3::1", account: "new@x") == .proceed(delay: .zero))
        clock.advance(.seconds(899))
        #expect(throttle.verdict(ip: "2001:db8:1:2::1", account: "new@x") == .refuse)
        clock.advance(.seconds(2))
        #expect(throttle.verdict(ip: "2001:db8:1:2::1", account: "new@x") == .proceed(delay: .zero))
    }

    @Test func anAccountIsDelayedButNeverRefusedAndItsOwnerResetsIt() {
        let throttle = self.throttle
        for i in 0..<30 { throttle.failed(ip: "198.51.100.\(i + 1)", account: "boss@x") }
        // Its owner, from a clean address: slowed, not refused.
        #expect(throttle.verdict(ip: "203.0.113.7", account: "boss@x") == .proceed(delay: .seconds(8)))
        throttle.succeeded(account: "boss@x")
        #expect(throttle.verdict(ip: "203.0.113.7", account: "boss@x") == .proceed(delay: .zero))
    }

    @Test func failuresOlderThanTheWindowAreForgotten() {
        let throttle = self.throttle
        for _ in 0..<9 {
            throttle.failed(ip: "192.0.2.1", account: "a@x")
            clock.advance(.seconds(601))
        }
        #expect(throttle.verdict(ip: "192.0.2.1", account: "a@x") == .proceed(delay: .zero))
    }

    @Test func loopbackIsCountedPerAccountOnly() {
        let throttle = self.throttle
        for i in 0..<50 {
            throttle.failed(ip: "127.0.0.1", account: "u\(i)@x")
            throttle.failed(ip: "::1", account: "v\(i)@x")
        }
        #expect(throttle.verdict(ip: "127.0.0.1", account: "other@x") == .proceed(delay: .zero))
        #expect(throttle.verdict(ip: "::1", account: "u1@x") == .proceed(delay: .zero))
    }

    @Test func recordsStayBounded() {
        var settings = AuthThrottle.Settings()
        settings.maxRecords = 100
        let throttle = AuthThrottle(settings: settings, now: { [clock] in clock.now })
        for i in 0..<1000 {
            throttle.failed(ip: "10.0.\(i / 256).\(i % 256)", account: "u\(i)@x")
            clock.advance(.milliseconds(1))
        }
        #expect(throttle.recordCount <= 100)
        // The most recent are kept.
        for _ in 0..<9 { throttle.failed(ip: "10.0.3.231", account: "last@x") }
        #expect(throttle.verdict(ip: "10.0.3.231", account: "z@x") == .refuse)
    }

    /// Guesses sent at once are delayed and refused as if sent one after
    /// another: no more are checked than the limit.
    @Test func parallelGuessesCountWhileTheyArePending() {
        let throttle = self.throttle
        let verdicts = (0..<20).map { throttle.attempt(ip: "192.0.2.1", account: "u\($0)@x") }
        let delays: [AuthThrottle.Verdict] = [0, 0, 0, 0, 0.5, 1, 2, 4, 8, 8].map {
            .proceed(delay: .milliseconds(Int($0 * 1000)))
        }
        #expect(verdicts == delays + Array(repeating: .wait, count: 10))
        // Not locked until they fail; other networks unaffected.
        #expect(!throttle.isRefused(ip: "192.0.2.1"))
        #expect(throttle.verdict(ip: "192.0.2.2", account: "v@x") == .proceed(delay: .zero))
        for i in 0..<9 { throttle.finished(ip: "192.0.2.1", account: "u\(i)@x", outcome: .failed) }
        #expect(!throttle.isRefused(ip: "192.0.2.1"))
        throttle.finished(ip: "192.0.2.1", account: "u9@x", outcome: .failed)
        #expect(throttle.isRefused(ip: "192.0.2.1"))
        clock.advance(.seconds(901))
        #expect(throttle.verdict(ip: "192.0.2.1", account: "v@x") == .proceed(delay: .zero))
    }

    /// Parallel right passwords wait for each other, never refused.
    @Test func parallelRightPasswordsWaitAndThenProceed() {
        let throttle = self.throttle
        let verdicts = (0..<11).map { throttle.attempt(ip: "192.0.2.1", account: "u\($0)@x") }
        #expect(verdicts.last == .wait)
        throttle.finished(ip: "192.0.2.1", account: "u0@x", outcome: .succeeded)
        #expect(throttle.attempt(ip: "192.0.2.1", account: "u10@x") != .wait)
    }

    /// A right password gives its place back.
    @Test func successfulAttemptsInFlightAreNotFailures() {
        let throttle = self.throttle
        for _ in 0..<20 {
            #expect(throttle.attempt(ip: "192.0.2.1", account: "a@x") == .proceed(delay: .zero))
            throttle.finished(ip: "192.0.2.1", account: "a@x", outcome: .succeeded)
        }
    }

    /// An attempt still pending keeps counting after its account's owner logs in.
    @Test func aSuccessKeepsOtherPendingAttemptsCounted() {
        let throttle = self.throttle
        for _ in 0..<5 { _ = throttle.attempt(ip: "192.0.2.1", account: "a@x") }
        throttle.finished(ip: "192.0.2.1", account: "a@x", outcome: .succeeded)
        #expect(throttle.verdict(ip: "198.51.100.1", account: "a@x") == .proceed(delay: .milliseconds(500)))
        for _ in 0..<4 { throttle.finished(ip: "192.0.2.1", account: "a@x", outcome: .undecided) }
        #expect(throttle.verdict(ip: "198.51.100.1", account: "a@x") == .proceed(delay: .zero))
    }

    /// A flood of new names from elsewhere must not end a lockout.
    @Test func aLockedNetworkSurvivesAFloodOfRecords() {
        var settings = AuthThrottle.Settings()
        settings.maxRecords = 100
        let throttle = AuthThrottle(settings: settings, now: { [clock] in clock.now })
        for i in 0..<10 { throttle.failed(ip: "192.0.2.1", account: "a\(i)@x") }
        clock.advance(.seconds(1))
        for i in 0..<1000 { throttle.failed(ip: "198.51.100.\(i % 200)", account: "made-up-\(i)@x") }
        #expect(throttle.verdict(ip: "192.0.2.1", account: "b@x") == .refuse)
        #expect(throttle.recordCount <= 100)
    }
}
