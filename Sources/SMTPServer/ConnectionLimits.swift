import Synchronization

/// How many connections the server holds at once, in all and per client
/// network, over every listener [SEC]. A client over a limit gets a 421 at
/// once and is closed; the others are served as before.
public final class ConnectionLimits: Sendable {
    /// 0: no limit.
    public let total: Int
    /// 0: no limit.
    public let perNetwork: Int
    /// The client's network (an IPv4 address, an IPv6 /64), or nil when it
    /// is not limited per network (loopback).
    private let networkOf: @Sendable (String) -> String?

    private struct State {
        var total = 0
        var perNetwork: [String: Int] = [:]
        var refusedSinceLog = 0
        var lastLog: ContinuousClock.Instant?
    }

    private let state = Mutex(State())

    public enum Admission: Sendable {
        /// Admitted: call `release` when the connection ends.
        case admitted(release: @Sendable () -> Void)
        /// Refused with this reply text (after `421 `); `log` is the line to
        /// log, nil while refusals are being rate-limited.
        case refused(reply: String, log: String?)
    }

    public init(total: Int, perNetwork: Int, networkOf: @escaping @Sendable (String) -> String?) {
        self.total = total
        self.perNetwork = perNetwork
        self.networkOf = networkOf
    }

    public var current: Int { state.withLock { $0.total } }

    /// Admits a connection from `ip`, or says why not.
    public func admit(ip: String, now: ContinuousClock.Instant = .now) -> Admission {
        let network = perNetwork > 0 ? networkOf(ip) : nil
        return state.withLock { state in
            var refusal: String?
            if total > 0 && state.total >= total {
                refusal = "4.7.0 Too many connections, try again later"
            } else if let network, state.perNetwork[network, default: 0] >= perNetwork {
                refusal = "4.7.0 Too many connections from your network, try again later"
            }
            if let refusal {
                // At most one line per 10 s, so a flood cannot fill the log.
                state.refusedSinceLog += 1
                if let last = state.lastLog, now - last < .seconds(10) { return .refused(reply: refusal, log: nil) }
                let what = refusal.contains("network") ? "from \(network ?? ip) (limit \(perNetwork))" : "(limit \(total))"
                let more = state.refusedSinceLog > 1 ? ", \(state.refusedSinceLog - 1) more refused since the last line" : ""
                state.lastLog = now
                state.refusedSinceLog = 0
                return .refused(reply: refusal, log: "too many connections \(what), refused\(more)")
            }
            state.total += 1
            if let network { state.perNetwork[network, default: 0] += 1 }
            return .admitted(release: { [weak self] in self?.release(network: network) })
        }
    }

    private func release(network: String?) {
        state.withLock { state in
            state.total -= 1
            guard let network, let count = state.perNetwork[network] else { return }
            if count <= 1 { state.perNetwork.removeValue(forKey: network) } else { state.perNetwork[network] = count - 1 }
        }
    }
}
