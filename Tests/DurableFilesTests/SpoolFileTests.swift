import Foundation
import Testing

@testable import DurableFiles

/// A spool keeps a small message in memory until it is committed: reads and
/// the trace-header rewrite work there, and the file it commits holds
/// exactly what a disk-backed spool would.
@Suite struct SpoolFileTests {
    func path() throws -> String {
        let directory = NSTemporaryDirectory() + "chasquid-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory + "/spool"
    }

    func readAll(_ spool: SpoolFile, from offset: Int = 0, chunkSize: Int = 256 * 1024) throws -> [UInt8] {
        var out: [UInt8] = []
        try spool.read(from: offset, chunkSize: chunkSize) { out += $0 }
        return out
    }

    @Test func aSmallSpoolIsReadAndRewrittenInMemory() throws {
        let path = try path()
        let spool = try SpoolFile(creating: path)
        try spool.append(Array("Received: x\n".utf8))
        try spool.append(Array("Subject: s\n\nbody\n".utf8)[...])
        for chunkSize in [1, 3, 1000] {
            #expect(try readAll(spool, from: 12, chunkSize: chunkSize) == Array("Subject: s\n\nbody\n".utf8))
        }
        #expect(spool.replacePrefix(12, with: "Authentication-Results: y\nReceived: x\n".utf8))
        #expect(spool.size == 38 + 17)
        // Nothing reached the file before the commit; all of it after.
        #expect(try readFile(path).isEmpty)
        try spool.commit()
        #expect(try readFile(path) == Array("Authentication-Results: y\nReceived: x\nSubject: s\n\nbody\n".utf8))
    }

    @Test func onceDataIsOnDiskThePrefixIsNotReplacedAndReadsComeFromTheFile() throws {
        let path = try path()
        let spool = try SpoolFile(creating: path)
        let large = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 % 251) }
        try spool.append(Array("H: 1\n".utf8))
        try spool.append(large)
        #expect(!spool.replacePrefix(5, with: "X: 2\n".utf8))
        #expect(try readAll(spool, from: 5, chunkSize: 65536) == large)
        #expect(try spool.contents() == Array("H: 1\n".utf8) + large)
        spool.discard()
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func bytesWithoutContiguousStorageAreAppendedToo() throws {
        let spool = try SpoolFile(creating: try path())
        try spool.append(Array("abc".utf8).lazy.map { $0 + 1 })
        #expect(try spool.contents() == Array("bcd".utf8))
        spool.discard()
    }
}
