import Testing

@testable import SMTPServer

@Suite struct ClientLogBudgetTests {
    @Test func aNetworkGetsItsBurstThenOneLinePerRefillWithTheDroppedCount() {
        var settings = ClientLogBudget.Settings()
        settings.burst = 3
        settings.refill = .seconds(2)
        let budget = ClientLogBudget(settings: settings, networkOf: { $0.hasPrefix("10.") ? "10/8" : $0 })
        let start = ContinuousClock.now
        let first = (0..<5).map { budget.admit(ip: "10.0.0.\($0)", now: start) }
        #expect(first == [.log(dropped: 0), .log(dropped: 0), .log(dropped: 0), .drop, .drop])
        // Another network is not affected.
        #expect(budget.admit(ip: "192.0.2.1", now: start) == .log(dropped: 0))
        #expect(budget.admit(ip: "10.9.9.9", now: start + .seconds(1)) == .drop)
        #expect(budget.admit(ip: "10.9.9.9", now: start + .seconds(2)) == .log(dropped: 3))
        #expect(budget.admit(ip: "10.9.9.9", now: start + .seconds(2)) == .drop)
        // Refilled to the burst, no further.
        let later = (0..<4).map { _ in budget.admit(ip: "10.1.1.1", now: start + .seconds(60)) }
        #expect(later == [.log(dropped: 1), .log(dropped: 0), .log(dropped: 0), .drop])
    }

    @Test func unlimitedClientsAreAlwaysLogged() {
        let budget = ClientLogBudget(networkOf: { $0 == "127.0.0.1" ? nil : $0 })
        #expect((0..<100).allSatisfy { _ in budget.admit(ip: "127.0.0.1") == .log(dropped: 0) })
        #expect(budget.count == 0)
    }

    @Test func networksRememberedStayBounded() {
        var settings = ClientLogBudget.Settings()
        settings.maxNetworks = 100
        let budget = ClientLogBudget(settings: settings)
        let start = ContinuousClock.now
        for i in 0..<1000 { _ = budget.admit(ip: "198.51.\(i / 256).\(i % 256)", now: start + .milliseconds(i)) }
        #expect(budget.count <= 100)
    }
}
