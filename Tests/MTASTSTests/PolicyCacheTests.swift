import DNS
import Foundation
import NIOSSL
import Synchronization
import Testing

@testable import MTASTS

/// No DNS at all: every fetch fails, so only the cache can answer.
struct NoDNS: DNSLookup {
    func lookup(_ name: String, _ type: DNSRecordType) async throws(DNSError) -> [DNSRecordData] {
        throw .nameNotFound(name)
    }
}

final class Events: Sendable {
    let seen = Mutex<[STSPolicyCache.Event]>([])
    func add(_ event: STSPolicyCache.Event) { seen.withLock { $0.append(event) } }
    var all: [STSPolicyCache.Event] { seen.withLock { $0 } }
}

@Suite struct STSPolicyCacheTests {
    static func cache(now: @escaping @Sendable () -> Date = { Date() }, events: Events) throws -> (STSPolicyCache, String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sts-\(UUID())").path + "/sts-cache"
        let fetcher = STSPolicyFetcher(dns: NoDNS(), tlsContext: try NIOSSLContext(configuration: .makeClientConfiguration()))
        return (try STSPolicyCache(directory: directory, fetcher: fetcher, now: now, onEvent: { events.add($0) }), directory)
    }

    static let policy: STSPolicy = STSPolicy(parsing: "version: STSv1\nmode: enforce\nmx: mx.example.com\nmx: *.example.net\nmax_age: 86400\n")

    @Test func storedAsChasquidsJSONAndReadBack() async throws {
        let events = Events()
        let (cache, directory) = try Self.cache(events: events)
        await cache.store("example.com", Self.policy)
        let text = try String(contentsOfFile: directory + "/pol:example.com", encoding: .utf8)
        #expect(text == #"{"version":"STSv1","mode":"enforce","mx":["mx.example.com","*.example.net"],"max_age":86400000000000}"#)
        let attributes = try FileManager.default.attributesOfItem(atPath: directory + "/pol:example.com")
        let expiry = try #require(attributes[.modificationDate] as? Date)
        #expect(abs(expiry.timeIntervalSinceNow - 86400) < 60)
        #expect(await cache.policy(for: "example.com", timeout: .seconds(1)) == Self.policy)
        #expect(events.all == [.fetches, .hits])
    }

    @Test func expiredEntriesAreNotUsed() async throws {
        let events = Events()
        let (writer, directory) = try Self.cache(events: Events())
        await writer.store("old.example", Self.policy)  // expires in a day
        let later = Date().addingTimeInterval(2 * 86400)
        let reader = try STSPolicyCache(directory: directory, fetcher: writer.fetcher, now: { later }, onEvent: { events.add($0) })
        #expect(await reader.policy(for: "old.example", timeout: .seconds(1)) == nil)
        #expect(events.all == [.fetches, .expired, .failedFetch])
    }

    @Test func brokenOrInvalidEntriesAreMisses() async throws {
        let events = Events()
        let (cache, directory) = try Self.cache(events: events)
        let future = Date().addingTimeInterval(3600)
        for (domain, text) in [("junk.example", "not json"), ("bad.example", #"{"version":"STSv2","mode":"enforce","mx":["a"],"max_age":1000000000}"#)] {
            let path = directory + "/pol:" + domain
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.modificationDate: future], ofItemAtPath: path)
        }
        #expect(cache.load("junk.example") == nil)
        #expect(cache.load("bad.example") == nil)
        #expect(events.all == [.unmarshalErrors, .invalid])
        #expect(cache.path("a/b") == nil)
    }

    @Test func aFileInTheDirectorysPlaceIsAnError() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sts-file-\(UUID())").path
        try "x".write(toFile: path, atomically: true, encoding: .utf8)
        let fetcher = STSPolicyFetcher(dns: NoDNS(), tlsContext: try NIOSSLContext(configuration: .makeClientConfiguration()))
        #expect(throws: (any Error).self) { try STSPolicyCache(directory: path, fetcher: fetcher) }
    }
}

@Suite struct STSPolicyRefreshTests {
    @Test func aFailedRefreshKeepsTheCachedPolicy() async throws {
        let events = Events()
        let (cache, directory) = try STSPolicyCacheTests.cache(events: events)
        await cache.store("example.com", STSPolicyCacheTests.policy)
        let before = try FileManager.default.attributesOfItem(atPath: directory + "/pol:example.com")[.modificationDate] as? Date
        await cache.refresh(timeout: .seconds(1))
        #expect(events.all == [.refreshCycles, .refreshes, .refreshErrors])
        let after = try FileManager.default.attributesOfItem(atPath: directory + "/pol:example.com")[.modificationDate] as? Date
        #expect(before == after)
        #expect(cache.load("example.com") == STSPolicyCacheTests.policy)
    }
}
