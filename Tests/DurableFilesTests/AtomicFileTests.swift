import Foundation
import Testing

@testable import DurableFiles

@Suite struct AtomicFileTests {
    func directory() throws -> String {
        let path = NSTemporaryDirectory() + "chasquid-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as! NSNumber).intValue
    }

    @Test func writesNewFilesWithTheGivenMode() throws {
        let dir = try directory()
        try AtomicFile.write(Array("hello".utf8), to: dir + "/f", mode: 0o640)
        #expect(try readFile(dir + "/f") == Array("hello".utf8))
        #expect(try mode(dir + "/f") == 0o640)
        // No temporary file is left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["f"])
    }

    @Test func replacingKeepsTheExistingMode() throws {
        let dir = try directory()
        try AtomicFile.write(Array("one".utf8), to: dir + "/f", mode: 0o660)
        chmod(dir + "/f", 0o600)
        try AtomicFile.write(Array("two".utf8), to: dir + "/f", mode: 0o660)
        #expect(try readFile(dir + "/f") == Array("two".utf8))
        #expect(try mode(dir + "/f") == 0o600)
    }

    @Test func replacingKeepsTheOwner() throws {
        guard geteuid() == 0 else { return }  // Only root can give a file away.
        let dir = try directory()
        try AtomicFile.write(Array("one".utf8), to: dir + "/f", mode: 0o660)
        chown(dir + "/f", 65534, 65534)
        try AtomicFile.write(Array("two".utf8), to: dir + "/f", mode: 0o660)
        let attributes = try FileManager.default.attributesOfItem(atPath: dir + "/f")
        #expect((attributes[.ownerAccountID] as! NSNumber).intValue == 65534)
        #expect((attributes[.groupOwnerAccountID] as! NSNumber).intValue == 65534)
    }

    @Test func aFailedWriteLeavesTheOldFileAndNoTemporary() throws {
        let dir = try directory()
        try AtomicFile.write(Array("old".utf8), to: dir + "/f", mode: 0o600)
        // Renaming over a directory fails after the data is written.
        try FileManager.default.createDirectory(atPath: dir + "/d", withIntermediateDirectories: false)
        try FileManager.default.createDirectory(atPath: dir + "/d/inner", withIntermediateDirectories: false)
        #expect(throws: FileError.self) { try AtomicFile.write(Array("new".utf8), to: dir + "/d", mode: 0o600) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["d", "f"])
        #expect(try readFile(dir + "/f") == Array("old".utf8))
    }

    @Test func errorsNameTheFile() {
        #expect {
            try AtomicFile.write([1], to: "/nonexistent-dir/f", mode: 0o600)
        } throws: { error in
            let e = error as! FileError
            return e.isNotFound && e.description.contains("/nonexistent-dir/") && e.description.hasSuffix(": no such file or directory")
        }
        #expect(throws: FileError.self) { try readFile("/nonexistent-file") }
    }

    @Test func largeFilesAreWrittenWhole() throws {
        let dir = try directory()
        let data = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try AtomicFile.write(data, to: dir + "/big", mode: 0o600)
        #expect(try readFile(dir + "/big") == data)
    }
}
