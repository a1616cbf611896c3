import Foundation
import Testing

@testable import DurableFiles

@Suite struct DirectorySyncerTests {
    /// Bursts of writers, each arriving as the last worker may be stopping:
    /// all are served, and never by two workers at once (each would hold a
    /// file thread of the fixed pool for back-to-back fsyncs).
    @Test func burstsAreServedByOneWorkerAtATime() async throws {
        let path = NSTemporaryDirectory() + "chasquid-sync-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let syncer = DirectorySyncer(path: path)
        for burst in 0..<50 {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<(1 + burst % 7) { group.addTask { try await syncer.sync() } }
                try await group.waitForAll()
            }
        }
        #expect(syncer.peakWorkers == 1)
    }
}
