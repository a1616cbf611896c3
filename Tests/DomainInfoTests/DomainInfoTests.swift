import ChasquidProto
import DurableFiles
import Foundation
import Synchronization
import Testing

@testable import DomainInfo

#if canImport(Glibc)
import Glibc
#endif

private func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "chasquid-domaininfo-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

private func put(_ text: String, _ directory: String, _ name: String) throws {
    try text.write(toFile: directory + "/" + name, atomically: false, encoding: .utf8)
}

/// A file's contents, or nil if it does not exist.
private func contents(_ directory: String, _ name: String) throws -> String? {
    let path = directory + "/" + name
    guard fileExists(path) else { return nil }
    return String(decoding: try readFile(path), as: UTF8.self)
}

private func permissions(_ path: String) -> mode_t {
    var st = stat()
    guard stat(path, &st) == 0 else { return 0 }
    return st.st_mode & 0o7777
}

private func names(_ directory: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
}

private func levels(_ incoming: SecurityLevel, _ outgoing: SecurityLevel) -> DomainLevels {
    DomainLevels(incoming: incoming, outgoing: outgoing)
}

@Suite struct SecurityLevelTests {
    @Test func orderNamesAndNumbersAreChasquids() {
        #expect(SecurityLevel.plain < .tlsClient)
        #expect(SecurityLevel.tlsClient < .tlsInsecure)
        #expect(SecurityLevel.tlsInsecure < .tlsSecure)
        #expect(!(SecurityLevel.tlsSecure < .tlsSecure))
        #expect(SecurityLevel.allCases.map(\.name) == ["PLAIN", "TLS_CLIENT", "TLS_INSECURE", "TLS_SECURE"])
        #expect("\(SecurityLevel.tlsInsecure)" == "TLS_INSECURE")
        for level in SecurityLevel.allCases {
            #expect(level.proto.rawValue == level.rawValue)
            #expect(SecurityLevel(level.proto) == level)
        }
        #expect(SecurityLevel(Domaininfo_SecLevel.UNRECOGNIZED(4)) == nil)
    }
}

@Suite struct DomainInfoStoreTests {
    // MARK: Checks

    @Test func unknownIncomingDomainIsRecordedAtOnceAtTheLevelSeen() async throws {
        let dir = try temporaryDirectory()
        let store = try DomainInfoStore(directory: dir)
        #expect(store.level(of: "example.com") == nil)

        #expect(await store.incomingAllowed(domain: "example.com", level: .tlsClient))
        #expect(store.level(of: "example.com") == levels(.tlsClient, .plain))
        #expect(try contents(dir, "s:example.com") == "name: \"example.com\"\nincoming_sec_level: TLS_CLIENT\n")
        #expect(permissions(dir + "/s:example.com") == 0o660)

        // A first plaintext contact is recorded too, with both levels omitted (zero).
        #expect(await store.incomingAllowed(domain: "plain.org", level: .plain))
        #expect(store.level(of: "plain.org") == levels(.plain, .plain))
        #expect(try contents(dir, "s:plain.org") == "name: \"plain.org\"\n")
        #expect(try names(dir) == ["s:example.com", "s:plain.org"])
    }

    @Test func unknownOutgoingDomainIsRecordedAtOnceAtTheLevelSeen() async throws {
        let dir = try temporaryDirectory()
        let store = try DomainInfoStore(directory: dir)
        #expect(await store.outgoingAllowed(domain: "example.com", level: .tlsInsecure))
        #expect(store.level(of: "example.com") == levels(.plain, .tlsInsecure))
        #expect(try contents(dir, "s:example.com") == "name: \"example.com\"\noutgoing_sec_level: TLS_INSECURE\n")
        #expect(permissions(dir + "/s:example.com") == 0o660)
    }

    @Test func incomingLevelsOnlyGoUp() async throws {
        let dir = try temporaryDirectory()
        let store = try DomainInfoStore(directory: dir)
        #expect(await store.incomingAllowed(domain: "d.com", level: .tlsClient))

        // Lower: refused, and nothing written (the removed file stays removed).
        try removeFile(dir + "/s:d.com")
        #expect(!(await store.incomingAllowed(domain: "d.com", level: .plain)))
        #expect(try contents(dir, "s:d.com") == nil)
        // Equal: allowed, nothing written.
        #expect(await store.incomingAllowed(domain: "d.com", level: .tlsClient))
        #expect(try contents(dir, "s:d.com") == nil)
        #expect(store.level(of: "d.com") == levels(.tlsClient, .plain))

        // Higher: stored, written, allowed.
        #expect(await store.incomingAllowed(domain: "d.com", level: .tlsSecure))
        #expect(store.level(of: "d.com") == levels(.tlsSecure, .plain))
        #expect(try contents(dir, "s:d.com") == "name: \"d.com\"\nincoming_sec_level: TLS_SECURE\n")
        for lower in [SecurityLevel.plain, .tlsClient, .tlsInsecure] {
            #expect(!(await store.incomingAllowed(domain: "d.com", level: lower)))
        }
        // The outgoing direction is separate.
        #expect(await store.outgoingAllowed(domain: "d.com", level: .plain))
        #expect(store.level(of: "d.com") == levels(.tlsSecure, .plain))
    }

    @Test func outgoingLevelsOnlyGoUp() async throws {
        let dir = try temporaryDirectory()
        let store = try DomainInfoStore(directory: dir)
        #expect(await store.incomingAllowed(domain: "d.com", level: .tlsClient))
        #expect(await store.outgoingAllowed(domain: "d.com", level: .tlsInsecure))
        #expect(store.level(of: "d.com") == levels(.tlsClient, .tlsInsecure))
        #expect(
            try contents(dir, "s:d.com")
                == "name: \"d.com\"\nincoming_sec_level: TLS_CLIENT\noutgoing_sec_level: TLS_INSECURE\n")

        try removeFile(dir + "/s:d.com")
        #expect(!(await store.outgoingAllowed(domain: "d.com", level: .plain)))
        #expect(!(await store.outgoingAllowed(domain: "d.com", level: .tlsClient)))
        #expect(await store.outgoingAllowed(domain: "d.com", level: .tlsInsecure))
        #expect(try contents(dir, "s:d.com") == nil)

        #expect(await store.outgoingAllowed(domain: "d.com", level: .tlsSecure))
        #expect(!(await store.outgoingAllowed(domain: "d.com", level: .tlsInsecure)))
        #expect(store.level(of: "d.com") == levels(.tlsClient, .tlsSecure))
        #expect(
            try contents(dir, "s:d.com")
                == "name: \"d.com\"\nincoming_sec_level: TLS_CLIENT\noutgoing_sec_level: TLS_SECURE\n")
        // The incoming direction is separate, and still enforced.
        #expect(!(await store.incomingAllowed(domain: "d.com", level: .plain)))
    }

    @Test func levelsSurviveARestart() async throws {
        let dir = try temporaryDirectory()
        do {
            let store = try DomainInfoStore(directory: dir)
            #expect(await store.incomingAllowed(domain: "a.com", level: .tlsClient))
            #expect(await store.outgoingAllowed(domain: "a.com", level: .tlsSecure))
            #expect(await store.outgoingAllowed(domain: "b.com", level: .tlsInsecure))
        }
        let store = try DomainInfoStore(directory: dir)
        #expect(store.lastLoad.loaded == 2)
        #expect(store.records() == ["a.com": levels(.tlsClient, .tlsSecure), "b.com": levels(.plain, .tlsInsecure)])
        #expect(!(await store.outgoingAllowed(domain: "a.com", level: .tlsInsecure)))
    }

    @Test func matchingIsExactOnTheName() async throws {
        let store = try DomainInfoStore(directory: try temporaryDirectory())
        #expect(await store.outgoingAllowed(domain: "example.com", level: .tlsSecure))
        // Callers normalise (COMPAT.md §22 item 7); the store does not.
        #expect(await store.outgoingAllowed(domain: "EXAMPLE.com", level: .plain))
        #expect(store.level(of: "EXAMPLE.com") == levels(.plain, .plain))
        #expect(store.level(of: "example.com") == levels(.plain, .tlsSecure))
        #expect(store.orphanedNames { $0.lowercased() } == ["EXAMPLE.com"])
        #expect(store.orphanedNames { $0 == "example.com" ? $0 : nil } == ["EXAMPLE.com"])
    }

    // MARK: clear

    @Test func clearResetsBothLevelsAndKeepsTheFile() async throws {
        let dir = try temporaryDirectory()
        let store = try DomainInfoStore(directory: dir)
        #expect(await store.incomingAllowed(domain: "example.com", level: .tlsClient))
        #expect(await store.outgoingAllowed(domain: "example.com", level: .tlsSecure))

        #expect(try await store.clear(domain: "example.com"))
        #expect(store.level(of: "example.com") == levels(.plain, .plain))
        #expect(try contents(dir, "s:example.com") == "name: \"example.com\"\n")
        #expect(permissions(dir + "/s:example.com") == 0o660)
        // Downgrade protection starts over.
        #expect(await store.outgoingAllowed(domain: "example.com", level: .plain))
        #expect(await store.incomingAllowed(domain: "example.com", level: .plain))
        #expect(try contents(dir, "s:example.com") == "name: \"example.com\"\n")

        // A restart reads the cleared state.
        let again = try DomainInfoStore(directory: dir)
        #expect(again.level(of: "example.com") == levels(.plain, .plain))
    }

    @Test func clearOfAnUnknownDomainSaysSoAndWritesNothing() async throws {
        let dir = try temporaryDirectory()
        let store = try DomainInfoStore(directory: dir)
        #expect(await store.outgoingAllowed(domain: "example.com", level: .tlsSecure))
        #expect(try await store.clear(domain: "other.com") == false)
        #expect(try await store.clear(domain: "Example.com") == false)
        #expect(try await store.clear(domain: "example.com.") == false)
        #expect(store.level(of: "other.com") == nil)
        #expect(store.level(of: "example.com") == levels(.plain, .tlsSecure))
        #expect(try names(dir) == ["s:example.com"])
    }

    // MARK: Files as chasquid writes them

    @Test func readsFilesAsChasquidWritesThem() async throws {
        let dir = try temporaryDirectory()
        try put("name: \"example.com\"\nincoming_sec_level: TLS_CLIENT\noutgoing_sec_level: TLS_SECURE\n", dir, "s:example.com")
        // Go's prototext sometimes writes two spaces after the colon.
        try put("name:  \"two.org\"\noutgoing_sec_level:  TLS_INSECURE\n", dir, "s:two.org")
        try put("name: \"ñandú.com\"\nincoming_sec_level: TLS_CLIENT\n", dir, "s:%C3%B1and%C3%BA.com")
        // Standard syntax: comments, numbers for enums, single quotes.
        try put("# a comment\nname: 'num.net' outgoing_sec_level: 3\n", dir, "s:num.net")
        // A cleared record: everything but the name omitted.
        try put("name: \"cleared.com\"\n", dir, "s:cleared.com")

        let store = try DomainInfoStore(directory: dir)
        #expect(store.lastLoad.loaded == 5)
        #expect(store.lastLoad.skipped == [])
        #expect(
            store.records() == [
                "example.com": levels(.tlsClient, .tlsSecure),
                "two.org": levels(.plain, .tlsInsecure),
                "ñandú.com": levels(.tlsClient, .plain),
                "num.net": levels(.plain, .tlsSecure),
                "cleared.com": levels(.plain, .plain),
            ])
        #expect(!(await store.outgoingAllowed(domain: "example.com", level: .tlsInsecure)))
        #expect(!(await store.incomingAllowed(domain: "ñandú.com", level: .plain)))
    }

    @Test func theKeyIsTheNameFieldNotTheFileName() async throws {
        let dir = try temporaryDirectory()
        try put("name: \"real.com\"\noutgoing_sec_level: TLS_SECURE\n", dir, "s:other.com")
        let store = try DomainInfoStore(directory: dir)
        #expect(store.level(of: "other.com") == nil)
        #expect(store.level(of: "real.com") == levels(.plain, .tlsSecure))
        // Writes go to the file the name maps to.
        #expect(await store.incomingAllowed(domain: "real.com", level: .tlsClient))
        #expect(
            try contents(dir, "s:real.com")
                == "name: \"real.com\"\nincoming_sec_level: TLS_CLIENT\noutgoing_sec_level: TLS_SECURE\n")
    }

    @Test func unicodeAndSpecialNamesAreQueryEscaped() async throws {
        let dir = try temporaryDirectory()
        let store = try DomainInfoStore(directory: dir)
        #expect(await store.outgoingAllowed(domain: "ñandú.com", level: .tlsSecure))
        #expect(await store.incomingAllowed(domain: "a b/c+d~e_f-g", level: .tlsClient))
        #expect(try names(dir) == ["s:%C3%B1and%C3%BA.com", "s:a+b%2Fc%2Bd~e_f-g"])
        #expect(store.path(for: "ñandú.com") == dir + "/s:%C3%B1and%C3%BA.com")
        #expect(permissions(dir + "/s:%C3%B1and%C3%BA.com") == 0o660)

        // What we wrote parses back as the message chasquid expects.
        let text = try #require(try contents(dir, "s:%C3%B1and%C3%BA.com"))
        #expect(text == "name: \"ñandú.com\"\noutgoing_sec_level: TLS_SECURE\n")  // raw UTF-8, as Go writes it
        let message = try Domaininfo_Domain(textFormatString: text)
        #expect(message.name == "ñandú.com")
        #expect(message.incomingSecLevel == .plain)
        #expect(message.outgoingSecLevel == .tlsSecure)

        let again = try DomainInfoStore(directory: dir)
        #expect(again.records() == ["ñandú.com": levels(.plain, .tlsSecure), "a b/c+d~e_f-g": levels(.tlsClient, .plain)])
    }

    @Test func createsAMissingDirectory() async throws {
        let dir = try temporaryDirectory() + "/data/domaininfo"
        let store = try DomainInfoStore(directory: dir)
        #expect(isDirectory(dir))
        #expect(permissions(dir) & 0o707 == 0o700)  // 0770 less the umask
        #expect(await store.incomingAllowed(domain: "x.org", level: .tlsClient))
        #expect(try names(dir) == ["s:x.org"])
    }

    @Test func skipsBadNamesAndIgnoresOtherFiles() throws {
        let dir = try temporaryDirectory()
        let garbage = "this is not a Domain {"
        try put("name: \"good.com\"\nincoming_sec_level: TLS_CLIENT\n", dir, "s:good.com")
        try put(garbage, dir, "s:%ZZbad")  // fails to unescape
        try put(garbage, dir, "s:%C3")  // unescapes to invalid UTF-8
        try put(garbage, dir, "s:%c3%b1.com")  // not how chasquid escapes; chasquid reads s:%C3%B1.com
        try put(garbage, dir, "s:a%2Eb")  // likewise ("." is not escaped)
        try put(garbage, dir, ".s:good.com12345")  // a temporary file
        try put(garbage, dir, "pol:good.com")
        try put(garbage, dir, "README")
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: false)

        let store = try DomainInfoStore(directory: dir)
        #expect(store.records() == ["good.com": levels(.tlsClient, .plain)])
        #expect(store.lastLoad.loaded == 1)
        #expect(store.lastLoad.skipped.sorted() == ["s:%C3", "s:%ZZbad", "s:%c3%b1.com", "s:a%2Eb"])
    }

    @Test(arguments: [
        ("s:bad.com", "name: \"bad.com\"\nincoming_sec_level: TLS_CLIENT\n{"),
        ("s:unknown-field.com", "name: \"unknown-field.com\"\nfavourite_colour: \"blue\"\n"),
        ("s:unknown-enum.com", "name: \"unknown-enum.com\"\nincoming_sec_level: TLS_ULTRA\n"),
        ("s:enum-number.com", "name: \"enum-number.com\"\noutgoing_sec_level: 7\n"),
        ("s:bytes.com", "name: \"\\xff.com\"\n"),
    ])
    func aBrokenFileIsFatalAtStartupAndNamesTheFile(file: String, text: String) throws {
        let dir = try temporaryDirectory()
        try put("name: \"good.com\"\n", dir, "s:good.com")
        try put(text, dir, file)
        do {
            _ = try DomainInfoStore(directory: dir)
            Issue.record("\(file) was accepted")
        } catch {
            guard case .badFile(let path, _) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(path == dir + "/" + file)
            #expect(error.description.contains(dir + "/" + file))
        }
    }

    @Test func anUnreadableDirectoryIsAnError() throws {
        let file = try temporaryDirectory() + "/not-a-directory"
        try put("", (file as NSString).deletingLastPathComponent, "not-a-directory")
        #expect(throws: DomainInfoError.self) { try DomainInfoStore(directory: file) }
    }

    // MARK: reload

    @Test func reloadPicksUpExternalEdits() async throws {
        let dir = try temporaryDirectory()
        let store = try DomainInfoStore(directory: dir)
        #expect(await store.outgoingAllowed(domain: "lowered.com", level: .tlsSecure))
        #expect(await store.outgoingAllowed(domain: "removed.com", level: .tlsSecure))
        #expect(await store.incomingAllowed(domain: "kept.com", level: .tlsClient))

        try put("name: \"lowered.com\"\noutgoing_sec_level: TLS_INSECURE\n", dir, "s:lowered.com")
        try removeFile(dir + "/s:removed.com")
        try put("name: \"added.com\"\nincoming_sec_level: TLS_CLIENT\n", dir, "s:added.com")
        try put("junk", dir, "s:%G0")

        // Nothing is read before the reload.
        #expect(store.level(of: "added.com") == nil)
        #expect(store.level(of: "lowered.com") == levels(.plain, .tlsSecure))

        let report = try store.reload()
        #expect(report.loaded == 3)
        #expect(report.skipped == ["s:%G0"])
        #expect(store.lastLoad == report)
        #expect(
            store.records() == [
                "lowered.com": levels(.plain, .tlsInsecure),
                "added.com": levels(.tlsClient, .plain),
                "kept.com": levels(.tlsClient, .plain),
            ])
        #expect(await store.outgoingAllowed(domain: "lowered.com", level: .tlsInsecure))
        #expect(!(await store.incomingAllowed(domain: "added.com", level: .plain)))
    }

    @Test func aBrokenFileOnReloadKeepsTheOldState() async throws {
        let dir = try temporaryDirectory()
        let store = try DomainInfoStore(directory: dir)
        #expect(await store.outgoingAllowed(domain: "a.com", level: .tlsSecure))
        #expect(await store.incomingAllowed(domain: "b.com", level: .tlsClient))
        let before = store.records()

        // Sorted after the broken file, and before it: neither may leak in.
        try put("name: \"a.com\"\n", dir, "s:a.com")
        try put("name: \"c.com\"\noutgoing_sec_level: TLS_SECURE\n", dir, "s:c.com")
        try put("name: \"b.com\" !!!", dir, "s:b.com")

        do {
            try store.reload()
            Issue.record("the broken file was accepted")
        } catch {
            #expect(error.description.contains(dir + "/s:b.com"))
        }
        #expect(store.records() == before)
        #expect(!(await store.outgoingAllowed(domain: "a.com", level: .plain)))

        // Once fixed, the next reload takes it all.
        try put("name: \"b.com\"\n", dir, "s:b.com")
        try store.reload()
        #expect(
            store.records() == [
                "a.com": levels(.plain, .plain), "b.com": levels(.plain, .plain), "c.com": levels(.plain, .tlsSecure),
            ])
    }

    // MARK: Write errors

    @Test func aWriteErrorDoesNotChangeTheAnswerAndIsReported() async throws {
        let dir = try temporaryDirectory()
        let reported = Mutex<[String]>([])
        let store = try DomainInfoStore(directory: dir) { domain, error in
            reported.withLock { $0.append("\(domain): \(error.errno)") }
        }
        // 100 "ñ" escape to 600 bytes: too long for a file name.
        let long = String(repeating: "ñ", count: 100) + ".com"
        #expect(await store.incomingAllowed(domain: long, level: .tlsClient))
        #expect(store.level(of: long) == levels(.tlsClient, .plain))
        #expect(store.lastWriteError?.domain == long)
        #expect(store.lastWriteError?.error.errno == ENAMETOOLONG)
        #expect(reported.withLock { $0 } == ["\(long): \(ENAMETOOLONG)"])

        // The level is still enforced from memory.
        #expect(!(await store.incomingAllowed(domain: long, level: .plain)))
        #expect(reported.withLock { $0.count } == 1)

        await #expect(throws: FileError.self) { try await store.clear(domain: long) }
        #expect(store.level(of: long) == levels(.plain, .plain))
        #expect(reported.withLock { $0.count } == 2)
        #expect(try names(dir) == [])
    }

    // MARK: Concurrency

    @Test func concurrentChecksEndWithTheHighestLevelOnDisk() async throws {
        for round in 0..<10 {
            let dir = try temporaryDirectory()
            let store = try DomainInfoStore(directory: dir)
            let domains = ["a.com", "b.com", "c.com"]
            var plan: [(domain: String, incoming: Bool, level: SecurityLevel)] = []
            for _ in 0..<300 {
                plan.append((domains.randomElement()!, Bool.random(), SecurityLevel.allCases.randomElement()!))
            }
            // The top level comes late in the plan, so lower writes race with it.
            plan.append(("a.com", false, .tlsSecure))
            plan.append(("a.com", true, .tlsClient))
            plan.shuffle()

            let refused = await withTaskGroup(of: Bool.self) { group in
                for step in plan {
                    group.addTask {
                        step.incoming
                            ? await store.incomingAllowed(domain: step.domain, level: step.level)
                            : await store.outgoingAllowed(domain: step.domain, level: step.level)
                    }
                }
                var refused = 0
                for await allowed in group where !allowed { refused += 1 }
                return refused
            }

            var expected: [String: DomainLevels] = [:]
            for step in plan {
                var l = expected[step.domain] ?? levels(.plain, .plain)
                if step.incoming { l.incoming = max(l.incoming, step.level) } else { l.outgoing = max(l.outgoing, step.level) }
                expected[step.domain] = l
            }
            #expect(store.records() == expected, "round \(round)")
            #expect(store.lastWriteError == nil)
            // Every check below the level already stored was refused, so some were.
            #expect(refused > 0)
            // On disk: the same, for every domain.
            let fromDisk = try DomainInfoStore(directory: dir)
            #expect(fromDisk.records() == expected, "round \(round)")
            #expect(try names(dir) == expected.keys.map { "s:" + $0 }.sorted(), "no temporary files left behind")
        }
    }

    @Test func clearAndChecksRacingLeaveDiskAndMemoryAgreeing() async throws {
        for _ in 0..<10 {
            let dir = try temporaryDirectory()
            let store = try DomainInfoStore(directory: dir)
            #expect(await store.outgoingAllowed(domain: "a.com", level: .tlsClient))
            await withTaskGroup(of: Void.self) { group in
                for i in 0..<100 {
                    group.addTask {
                        if i % 10 == 0 {
                            _ = try? await store.clear(domain: "a.com")
                        } else {
                            _ = await store.outgoingAllowed(
                                domain: "a.com", level: SecurityLevel.allCases.randomElement()!)
                        }
                    }
                }
            }
            let fromDisk = try DomainInfoStore(directory: dir)
            #expect(fromDisk.records() == store.records())
        }
    }
}
