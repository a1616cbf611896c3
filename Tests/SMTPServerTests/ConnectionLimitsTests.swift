import Testing

@testable import SMTPServer

@Suite struct ConnectionLimitsTests {
    /// Networks as the daemon gives them: the text before the last `.`
    /// stands for a /64 here, and `lo` is not limited.
    let limits = ConnectionLimits(total: 5, perNetwork: 2) { ip in
        ip.hasPrefix("lo") ? nil : String(ip.split(separator: ".").first!)
    }

    func admitted(_ ip: String, now: ContinuousClock.Instant = .now) -> (@Sendable () -> Void)? {
        if case .admitted(let release) = limits.admit(ip: ip, now: now) { return release }
        return nil
    }

    @Test func eachNetworkGetsItsShareAndGetsItBackOnRelease() throws {
        let first = try #require(admitted("a.1"))
        _ = try #require(admitted("a.2"))
        guard case .refused(let reply, let log) = limits.admit(ip: "a.3") else {
            Issue.record("a third connection from network a was admitted")
            return
        }
        #expect(reply == "4.7.0 Too many connections from your network, try again later")
        #expect(log == "too many connections from a (limit 2), refused")
        #expect(admitted("b.1") != nil)
        first()
        #expect(admitted("a.3") != nil)
        #expect(limits.current == 3)
    }

    @Test func theTotalCountsEveryoneLoopbackIncluded() throws {
        for i in 0..<5 { _ = try #require(admitted("lo\(i)")) }
        guard case .refused(let reply, _) = limits.admit(ip: "lo9") else {
            Issue.record("a sixth connection was admitted")
            return
        }
        #expect(reply == "4.7.0 Too many connections, try again later")
    }

    @Test func refusalsAreLoggedAtMostEveryTenSeconds() {
        let start = ContinuousClock.now
        _ = admitted("a.1", now: start)
        _ = admitted("a.2", now: start)
        var logs: [String?] = []
        for second in [0, 1, 2, 11] {
            if case .refused(_, let log) = limits.admit(ip: "a.9", now: start + .seconds(second)) { logs.append(log) }
        }
        #expect(
            logs == [
                "too many connections from a (limit 2), refused", nil, nil,
                "too many connections from a (limit 2), refused, 2 more refused since the last line",
            ])
    }

    @Test func zeroMeansNoLimit() {
        let open = ConnectionLimits(total: 0, perNetwork: 0) { $0 }
        for _ in 0..<1000 {
            guard case .admitted = open.admit(ip: "a.1") else {
                Issue.record("refused without limits")
                return
            }
        }
    }
}
