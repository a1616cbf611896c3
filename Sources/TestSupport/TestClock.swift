import Foundation
import Synchronization

/// A clock that moves only when a test says so, for code that takes
/// `some Clock`. A manual clock moves with `advance`, and a sleep waits for
/// it; a virtual one jumps to a sleep's deadline at once, so a day of
/// retries runs in milliseconds.
public final class TestClock: Clock, Sendable {
    public struct Instant: InstantProtocol {
        public var offset: Duration
        public func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        public func duration(to other: Instant) -> Duration { other.offset - offset }
        public static func < (a: Instant, b: Instant) -> Bool { a.offset < b.offset }
    }

    /// The wall-clock date at offset zero.
    public static let base = Date(timeIntervalSince1970: 1_700_000_000)
    private let current = Mutex(Instant(offset: .zero))
    private let jumpsOnSleep: Bool

    /// - Parameter virtual: sleeps move the clock instead of waiting for it.
    public init(virtual: Bool = false) { jumpsOnSleep = virtual }

    public var now: Instant { current.withLock { $0 } }
    public var minimumResolution: Duration { .zero }

    /// The wall-clock date this clock stands at.
    public var date: Date {
        let (seconds, attoseconds) = now.offset.components
        return Self.base.addingTimeInterval(Double(seconds) + Double(attoseconds) / 1e18)
    }

    public func advance(by duration: Duration) { current.withLock { $0 = $0.advanced(by: duration) } }

    public func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        try Task.checkCancellation()
        if jumpsOnSleep {
            current.withLock { if $0 < deadline { $0 = deadline } }
            await Task.yield()
        } else {
            while now < deadline { try await Task.sleep(for: .milliseconds(1)) }
        }
        try Task.checkCancellation()
    }
}
