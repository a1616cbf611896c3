import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import DNS

/// A real DNS server on loopback: tests/dnsserver/dnsserver.py, which speaks
/// DNS over UDP and TCP and answers from a JSON zone.
final class LoopbackDNSServer {
    let process = Process()
    let directory: URL
    let port: Int
    let address: String

    var queryLog: [String] {
        let text = (try? String(contentsOf: directory.appendingPathComponent("queries.log"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map(String.init)
    }

    init(zone: [String: Any], address: String = "127.0.0.1", dropAll: Bool = false, forgeUDP: Bool = false) throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("dnstest-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let zoneFile = directory.appendingPathComponent("zone.json")
        try JSONSerialization.data(withJSONObject: zone).write(to: zoneFile)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments =
            [
                "python3", repository.appendingPathComponent("tests/dnsserver/dnsserver.py").path,
                "--zone", zoneFile.path, "--addr", address, "--log",
                directory.appendingPathComponent("queries.log").path,
            ] + (dropAll ? ["--drop-all"] : []) + (forgeUDP ? ["--forge-udp"] : [])
        let output = Pipe()
        process.standardOutput = output
        // Not our stderr: a server that outlived us would hold the test
        // runner's output pipe open.
        process.standardError = FileHandle.nullDevice
        try process.run()
        // The server prints "port N" once both sockets listen.
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix("port "), let port = Int(text.dropFirst(5)) else {
            process.terminate()
            throw TestServerError(reason: "dnsserver.py did not start (is dnspython installed?): \(text)")
        }
        self.port = port
        self.address = address
    }

    func resolver(timeout: Duration = .seconds(2), attempts: Int = 1) throws -> StubResolver {
        StubResolver(
            configuration: ResolverConfiguration(
                servers: [try SocketAddress(ipAddress: address, port: port)], timeout: timeout, attempts: attempts))
    }

    deinit {
        // SIGKILL: nothing to clean up, and it works whatever signal mask the
        // child inherited. No waitUntilExit: it waits on a run loop, which
        // never turns inside a test's async context; Foundation reaps it.
        kill(process.processIdentifier, SIGKILL)
        try? FileManager.default.removeItem(at: directory)
    }
}

struct TestServerError: Error { var reason: String }

@Suite(.serialized) struct StubResolverTests {
    static var zone: [String: Any] {
        [
        "example.com": [
            "A": ["192.0.2.1", "192.0.2.2"], "AAAA": ["2001:db8::1"],
            "MX": [[20, "mx2.example.com"], [10, "mx1.example.com"]],
            "TXT": ["v=spf1 -all", ["two ", "strings"]],
        ],
        "1.2.0.192.in-addr.arpa": ["PTR": ["example.com"]],
        "alias.example.com": ["CNAME": "chain.example.com"],
        "chain.example.com": ["CNAME": "example.com"],
        "dangling.example.com": ["CNAME": "absent.example.com"],
        "loop1.example.com": ["CNAME": "loop2.example.com"],
        "loop2.example.com": ["CNAME": "loop1.example.com"],
        "null-mx.example.com": ["MX": [[0, ""]]],
        "big.example.com": ["TXT": (0..<20).map { "record \($0) " + String(repeating: "x", count: 100) }],
        "medium.example.com": ["TXT": (0..<6).map { "record \($0) " + String(repeating: "y", count: 100) }],
        "truncated.example.com": ["_truncate": true, "TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]],
        "servfail.example.com": ["_servfail": true, "A": ["192.0.2.9"]],
        "refused.example.com": ["_refused": true],
        "silent.example.com": ["_drop": true, "A": ["192.0.2.9"]],
        ]
    }

    @Test func recordsOfEachType() async throws {
        let server = try LoopbackDNSServer(zone: Self.zone)
        let dns = try server.resolver()
        #expect(Set(try await dns.addresses("example.com", ipv6: false)) == [IPAddress("192.0.2.1")!, IPAddress("192.0.2.2")!])
        #expect(try await dns.addresses("EXAMPLE.com.", ipv6: true) == [IPAddress("2001:db8::1")!])
        let mx = try await dns.mx("example.com").sorted { $0.preference < $1.preference }
        #expect(mx.map(\.exchange) == ["mx1.example.com", "mx2.example.com"])
        #expect(mx.map(\.preference) == [10, 20])
        #expect(Set(try await dns.txt("example.com")) == ["v=spf1 -all", "two strings"])
        #expect(try await dns.ptr(IPAddress("192.0.2.1")!.reverseName) == ["example.com"])
        #expect(try await dns.mx("null-mx.example.com").map(\.exchange) == [""])
    }

    @Test func noSuchNameDiffersFromNoRecords() async throws {
        let server = try LoopbackDNSServer(zone: Self.zone)
        let dns = try server.resolver()
        await #expect(throws: DNSError.nameNotFound("absent.example.com")) {
            try await dns.lookup("absent.example.com", .a)
        }
        #expect(try await dns.lookup("example.com", .ptr).isEmpty)
        #expect(try await dns.mx("alias.example.com").count == 2)
    }

    @Test func followsCNAMEChains() async throws {
        let server = try LoopbackDNSServer(zone: Self.zone)
        let dns = try server.resolver()
        #expect(Set(try await dns.addresses("alias.example.com", ipv6: false)).count == 2)
        #expect(try await dns.lookup("alias.example.com", .cname) == [.cname("chain.example.com")])
        await #expect(throws: DNSError.nameNotFound("absent.example.com")) {
            try await dns.lookup("dangling.example.com", .a)
        }
        // A recursive server answers a CNAME loop with SERVFAIL, as the
        // test server does: a temporary failure, never a hang.
        await #expect {
            try await dns.lookup("loop1.example.com", .a)
        } throws: { ($0 as? DNSError)?.isTemporary == true }
    }

    @Test func truncatedAnswersAreAskedAgainOverTCP() async throws {
        let server = try LoopbackDNSServer(zone: Self.zone)
        let dns = try server.resolver()
        #expect(try await dns.txt("truncated.example.com") == ["v=spf1 ip4:192.0.2.0/24 -all"])
        #expect(server.queryLog == ["udp truncated.example.com TXT", "tcp truncated.example.com TXT"])
        // Too big for our 1232-octet EDNS size: TC over UDP, then TCP.
        let big = try await dns.txt("big.example.com")
        #expect(big.count == 20)
        #expect(big.allSatisfy { $0.hasPrefix("record ") && $0.hasSuffix(String(repeating: "x", count: 100)) })
        #expect(server.queryLog.suffix(2) == ["udp big.example.com TXT", "tcp big.example.com TXT"])
    }

    @Test func ednsLetsAnswersOver512OctetsComeOverUDP() async throws {
        let server = try LoopbackDNSServer(zone: Self.zone)
        let dns = try server.resolver()
        #expect(try await dns.txt("medium.example.com").count == 6)
        #expect(server.queryLog == ["udp medium.example.com TXT"])
    }

    @Test func serverFailureIsTemporaryAndRefusalPermanent() async throws {
        let server = try LoopbackDNSServer(zone: Self.zone)
        let dns = try server.resolver(attempts: 2)
        await #expect {
            try await dns.lookup("servfail.example.com", .a)
        } throws: { ($0 as? DNSError)?.isTemporary == true }
        // SERVFAIL is asked again, once per attempt.
        #expect(server.queryLog == ["udp servfail.example.com A", "udp servfail.example.com A"])
        await #expect {
            try await dns.lookup("refused.example.com", .a)
        } throws: { error in
            if case .permanentFailure = error as? DNSError { return true }
            return false
        }
    }

    @Test func aServerThatDoesNotAnswerTimesOut() async throws {
        let server = try LoopbackDNSServer(zone: Self.zone, dropAll: true)
        let dns = try server.resolver(timeout: .milliseconds(300), attempts: 2)
        let start = ContinuousClock.now
        await #expect {
            try await dns.lookup("example.com", .a)
        } throws: { ($0 as? DNSError)?.isTemporary == true }
        let elapsed = ContinuousClock.now - start
        // Two attempts of 300 ms; generous bounds, this is not a timing test.
        #expect(elapsed >= .milliseconds(550))
        #expect(elapsed < .seconds(10))
        #expect(server.queryLog.count == 2)
    }

    /// Issue 13 §11: a lookup whose task is cancelled (its SPF check ran
    /// out of time) ends then, not at its own timeout, and asks no other
    /// server: one query reached the silent server, not two.
    @Test func aCancelledLookupEndsAndAsksNoMore() async throws {
        let server = try LoopbackDNSServer(zone: Self.zone, dropAll: true)
        let dns = try server.resolver(timeout: .seconds(60), attempts: 2)
        let start = ContinuousClock.now
        let lookup = Task { try await dns.lookup("example.com", .a) }
        while server.queryLog.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        lookup.cancel()
        await #expect {
            try await lookup.value
        } throws: { ($0 as? DNSError)?.isTemporary == true }
        // Not a timing test: without cancellation this takes 2 × 60 s.
        #expect(ContinuousClock.now - start < .seconds(30))
        try await Task.sleep(for: .milliseconds(200))
        #expect(server.queryLog.count == 1)
    }

    /// The same over TCP: a server that takes the connection and never
    /// answers holds a cancelled exchange no longer than the cancellation.
    @Test func aCancelledTCPExchangeEnds() async throws {
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        defer { silent.close(promise: nil) }
        let query = try DNSWire.query(id: 1, name: "example.com", type: .a)
        let start = ContinuousClock.now
        let exchange = Task {
            try await DNSTransport.tcpExchange(
                query: query, server: silent.localAddress!, timeout: .seconds(60),
                group: MultiThreadedEventLoopGroup.singleton)
        }
        try await Task.sleep(for: .milliseconds(300))
        exchange.cancel()
        await #expect(throws: DNSTransportError.self) { try await exchange.value }
        // Not a timing test: uncancelled, this waits 60 s.
        #expect(ContinuousClock.now - start < .seconds(30))
    }

    @Test func aNameThatIsNeverAnsweredTimesOutToo() async throws {
        let server = try LoopbackDNSServer(zone: Self.zone)
        let dns = try server.resolver(timeout: .milliseconds(300))
        await #expect {
            try await dns.lookup("silent.example.com", .a)
        } throws: { ($0 as? DNSError)?.isTemporary == true }
    }

    /// A datagram with the right ID but another question (what a blind
    /// spoofer sends) is ignored, and the real answer that follows is used.
    @Test func forgedAnswersAreIgnoredAndTheRealOneTaken() async throws {
        let server = try LoopbackDNSServer(zone: Self.zone, forgeUDP: true)
        let dns = try server.resolver()
        #expect(
            Set(try await dns.addresses("example.com", ipv6: false)) == [IPAddress("192.0.2.1")!, IPAddress("192.0.2.2")!])
        #expect(server.queryLog == ["udp example.com A"])
    }

    @Test func failsOverToTheNextServer() async throws {
        let silent = try LoopbackDNSServer(zone: Self.zone, dropAll: true)
        let good = try LoopbackDNSServer(zone: Self.zone)
        let dns = StubResolver(
            configuration: ResolverConfiguration(
                servers: [
                    try SocketAddress(ipAddress: "127.0.0.1", port: silent.port),
                    try SocketAddress(ipAddress: "127.0.0.1", port: good.port),
                ], timeout: .milliseconds(300), attempts: 1))
        #expect(try await dns.addresses("example.com", ipv6: false).count == 2)
        #expect(silent.queryLog == ["udp example.com A"])
        #expect(good.queryLog == ["udp example.com A"])
    }

    @Test func aClosedPortIsATemporaryFailure() async throws {
        // Nothing listens on the discard port: no answer, or an ICMP error.
        let dns = StubResolver(
            configuration: ResolverConfiguration(
                servers: [try SocketAddress(ipAddress: "127.0.0.1", port: 9)], timeout: .milliseconds(500), attempts: 1))
        await #expect {
            try await dns.lookup("example.com", .a)
        } throws: { ($0 as? DNSError)?.isTemporary == true }
    }

    @Test func worksOverIPv6Loopback() async throws {
        guard let server = try? LoopbackDNSServer(zone: Self.zone, address: "::1") else {
            // No IPv6 on this host's loopback: nothing to test.
            return
        }
        let dns = try server.resolver()
        #expect(try await dns.addresses("example.com", ipv6: true) == [IPAddress("2001:db8::1")!])
        #expect(try await dns.txt("truncated.example.com").count == 1)
    }

    @Test func invalidNamesFailWithoutAsking() async throws {
        let server = try LoopbackDNSServer(zone: Self.zone)
        let dns = try server.resolver()
        await #expect {
            try await dns.lookup("bad..name", .a)
        } throws: { error in
            if case .permanentFailure = error as? DNSError { return true }
            return false
        }
        #expect(server.queryLog.isEmpty)
    }
}
