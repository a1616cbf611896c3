import Logging
import Synchronization

/// A log line that a flood could repeat without end (a full disk refusing
/// every message, garbage from many clients): written at most once per
/// `interval`, with the count of those left out since the last one.
public final class RateLimitedLog: Sendable {
    private let logger: Logger
    private let interval: Duration
    private struct State {
        var last: ContinuousClock.Instant?
        var suppressed = 0
    }
    private let state = Mutex(State())

    public init(logger: Logger, interval: Duration = .seconds(10)) {
        self.logger = logger
        self.interval = interval
    }

    /// The line as it would be written now, or nil while lines are held back.
    public func line(_ message: @autoclosure () -> String, now: ContinuousClock.Instant = .now) -> String? {
        let suppressed: Int? = state.withLock { state in
            if let last = state.last, now - last < interval {
                state.suppressed += 1
                return nil
            }
            defer { (state.last, state.suppressed) = (now, 0) }
            return state.suppressed
        }
        guard let suppressed else { return nil }
        return suppressed > 0 ? "\(message()) (and \(suppressed) more like it since the last such line)" : message()
    }

    public func error(_ message: @autoclosure () -> String, now: ContinuousClock.Instant = .now) {
        if let line = line(message(), now: now) { logger.error("\(line)") }
    }

    public func info(_ message: @autoclosure () -> String, now: ContinuousClock.Instant = .now) {
        if let line = line(message(), now: now) { logger.info("\(line)") }
    }
}
