import NIOCore
import SMTPCore
import Synchronization

/// The live connections, so that a shutdown can drain them (COMPAT.md §22.1):
/// stop accepting, close idle sessions with a 421, let transactions already
/// in DATA finish, then exit.
public final class ConnectionRegistry: Sendable {
    private struct Entry {
        var channel: any Channel
        var inData: Bool
    }

    private struct State {
        var nextID = 0
        var entries: [Int: Entry] = [:]
        var shuttingDown = false
    }

    private let state = Mutex(State())

    public init() {}

    public var isShuttingDown: Bool { state.withLock { $0.shuttingDown } }
    public var count: Int { state.withLock { $0.entries.count } }

    func register(_ channel: any Channel) -> Int {
        state.withLock { state in
            state.nextID += 1
            state.entries[state.nextID] = Entry(channel: channel, inData: false)
            return state.nextID
        }
    }

    func unregister(_ id: Int) { _ = state.withLock { $0.entries.removeValue(forKey: id) } }

    /// Returns whether a shutdown has begun, read under the same lock: a
    /// connection leaving DATA then was skipped by `beginShutdown` and must
    /// drain itself.
    @discardableResult
    func setInData(_ id: Int, _ inData: Bool) -> Bool {
        state.withLock {
            $0.entries[id]?.inData = inData
            return $0.shuttingDown
        }
    }

    /// Closes every connection still open (after the drain's time is up).
    public func closeAll() {
        let channels = state.withLock { $0.entries.values.map(\.channel) }
        for channel in channels { channel.close(promise: nil) }
    }

    /// Starts the drain: idle connections get a 421 and are closed now;
    /// those in DATA are closed by their own loop once the message is done.
    public func beginShutdown() {
        let idle: [any Channel] = state.withLock { state in
            state.shuttingDown = true
            return state.entries.values.filter { !$0.inData }.map(\.channel)
        }
        for channel in idle {
            let reply = ByteBuffer(string: Reply.shuttingDown.encoded)
            channel.writeAndFlush(SMTPOutbound.bytes(reply)).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    /// Waits until every connection is gone or `timeout` passes.
    public func drain(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while count > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
    }
}
