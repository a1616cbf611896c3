import DurableFiles
import Foundation
import Normalization
import TestSupport
import Testing

@testable import Courier

/// The MDA and pipe couriers (COMPAT.md §12.4, "MDA arguments" and the courier table).
@Suite struct LocalCourierTests {
    static let placeholders = ["%from%", "%from_user%", "%from_domain%", "%to%", "%to_user%", "%to_domain%"]

    @Test func placeholdersAreSubstituted() {
        let mda = MDACourier(binary: "/bin/true", arguments: ["-f", "%from%", "-d", "%to_user%"] + Self.placeholders)
        #expect(
            mda.expandedArguments(from: "jo@from.org", to: "ana@local.com")
                == [
                    "-f", "jo@from.org", "-d", "ana", "jo@from.org", "jo", "from.org", "ana@local.com", "ana",
                    "local.com",
                ]
        )
        // Several in one argument, and unknown ones left alone.
        let mixed = MDACourier(
            binary: "/bin/true",
            arguments: ["%to_user%+%from_user%@%to_domain%", "%unknown%", "100%"]
        )
        #expect(
            mixed.expandedArguments(from: "jo@from.org", to: "ana@local.com") == [
                "ana+jo@local.com", "%unknown%", "100%",
            ]
        )
    }

    @Test func theNullSender() {
        let mda = MDACourier(binary: "/bin/true", arguments: Self.placeholders)
        #expect(
            mda.expandedArguments(from: "<>", to: "ana@local.com") == [
                "<>", "<>", "", "ana@local.com", "ana", "local.com",
            ]
        )
    }

    /// Like Go's strings.Replacer: one pass, left to right, so a placeholder
    /// is never found across a substituted value.
    @Test func substitutionIsOnePass() {
        let mda = MDACourier(binary: "/bin/true", arguments: ["%to%from%", "%from%to%"])
        #expect(mda.expandedArguments(from: "f@x", to: "t@y") == ["t@yfrom%", "f@xto%"])
    }

    @Test(arguments: [
        ("a`b!c$d%e(f)g[h]i{j}k/l;m\"n'o\\p|q*r&s@dom.com", "abcdefghijklmnopqrs@dom.com"),
        ("us er\t@do\nmain.com\r", "user@domain.com"),
        ("x\u{7}y\u{0}z\u{85}w\u{A0}v\u{2003}@d.com", "xyzwv@d.com"),
        ("ñandú@dom.com", "ñandú@dom.com"),
        ("<a+b=c@d-e.com>", "<a+b=c@d-e.com>"),
    ])
    func addressesAreSanitised(address: String, clean: String) {
        let mda = MDACourier(binary: "/bin/true", arguments: ["%from%", "%to%"])
        #expect(mda.expandedArguments(from: address, to: address) == [clean, clean])
    }

    @Test func sanitisedPartsFeedTheUserAndDomain() {
        let mda = MDACourier(
            binary: "/bin/true",
            arguments: ["%from_user%", "%from_domain%", "%to_user%", "%to_domain%"]
        )
        #expect(mda.expandedArguments(from: "a;b@c d.com", to: "x$(rm)@y/z") == ["ab", "cd.com", "xrm", "yz"])
    }

    // MARK: Running the MDA

    @Test func theMDAGetsCRLFDataAndItsArguments() async throws {
        let dir = TempDir()
        let out = dir.path + "/out"
        let script = dir.script("mda", "cat > \"$1\"; printf '%s|%s|%s' \"$2\" \"$3\" \"$4\" > \"$1.args\"")
        let mda = MDACourier(binary: "/bin/sh", arguments: [script, out, "%from%", "%to_user%", "%to_domain%"])
        let result = await mda.deliver(
            from: "s@from.org",
            to: "ana@local.com",
            data: Array("Subject: x\n\nline 1\nline 2\n".utf8)
        )
        #expect(result == .sent)
        #expect(try readFile(out) == Array("Subject: x\r\n\r\nline 1\r\nline 2\r\n".utf8))
        #expect(String(decoding: try readFile(out + ".args"), as: UTF8.self) == "s@from.org|ana|local.com")
    }

    @Test func exit75IsTemporary() async {
        let dir = TempDir()
        let mda = MDACourier(
            binary: "/bin/sh",
            arguments: [dir.script("mda", "cat > /dev/null; printf 'mailbox locked'; exit 75")]
        )
        let result = await mda.deliver(from: "s@x", to: "u@y", data: Array("x\n".utf8))
        #expect(result == .temporary("MDA delivery failed: exit status 75 - \"mailbox locked\""))
    }

    @Test func otherExitsArePermanent() async {
        let dir = TempDir()
        let mda = MDACourier(
            binary: "/bin/sh",
            arguments: [dir.script("mda", "printf 'oops'; printf ' \"err\"' >&2; exit 1")]
        )
        let result = await mda.deliver(from: "s@x", to: "u@y", data: Array("x\n".utf8))
        #expect(result == .permanent("MDA delivery failed: exit status 1 - \"oops \\\"err\\\"\""))
    }

    @Test func aTimeoutIsTemporary() async {
        let dir = TempDir()
        let mda = MDACourier(binary: "/bin/sh", arguments: [dir.script("mda", "sleep 20")], timeout: .milliseconds(300))
        let start = ContinuousClock.now
        let result = await mda.deliver(from: "s@x", to: "u@y", data: Array("x\n".utf8))
        guard case .temporary = result else {
            Issue.record("expected a temporary failure, got \(result)")
            return
        }
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    /// A configuration mistake waits in the queue instead of bouncing.
    @Test func anMDAThatCannotStartIsTemporary() async {
        let dir = TempDir()
        let notExecutable = dir.path + "/mda"
        _ = FileManager.default.createFile(atPath: notExecutable, contents: Data("#!/bin/sh\n".utf8))
        for binary in ["/nonexistent/mda", "no-such-mda-in-path", notExecutable] {
            let result = await MDACourier(binary: binary, arguments: []).deliver(
                from: "s@x", to: "u@y", data: Array("x\n".utf8))
            guard case .temporary(let text) = result else {
                Issue.record("\(binary): expected a temporary failure, got \(result)")
                continue
            }
            #expect(text.hasPrefix("MDA delivery failed: fork/exec "), "\(text)")
        }
    }

    /// `mail_delivery_agent_bin` defaults to "maildrop": a bare name is
    /// looked up in $PATH, as Go's exec.Command does.
    @Test func aBareMDANameIsLookedUpInPath() async throws {
        let dir = TempDir()
        let out = dir.path + "/out"
        let mda = MDACourier(binary: "sh", arguments: ["-c", "cat > \(out)"])
        #expect(await mda.deliver(from: "s@x", to: "u@y", data: Array("a\nb\n".utf8)) == .sent)
        #expect(try readFile(out) == Array("a\r\nb\r\n".utf8))
    }

    // MARK: Pipes

    @Test func pipesGetLFDataAndSplitOnWhitespace() async throws {
        let dir = TempDir()
        let out = dir.path + "/out"
        let script = dir.script("pipe", "cat > \"$1\"; echo \"$#|$2\" > \"$1.args\"")
        let result = await PipeCourier().deliver(
            from: "s@x",
            to: "/bin/sh \(script)\t\(out)   second ",
            data: Array("a\nb\r\n".utf8)
        )
        #expect(result == .sent)
        #expect(try readFile(out) == Array("a\nb\r\n".utf8))
        #expect(String(decoding: try readFile(out + ".args"), as: UTF8.self) == "2|second\n")
    }

    @Test func pipeFailuresArePermanent() async {
        let dir = TempDir()
        // Recorded as chasquid records them: Go's exec error alone.
        for (body, error) in [("exit 75", "exit status 75"), ("exit 1", "exit status 1"), ("sleep 20", "signal: killed")] {
            let result = await PipeCourier(timeout: .milliseconds(300)).deliver(
                from: "s@x",
                to: "/bin/sh " + dir.script("pipe", body),
                data: Array("x\n".utf8)
            )
            #expect(result == .permanent(error), "\(body)")
        }
        guard case .permanent = await PipeCourier().deliver(from: "s@x", to: "  ", data: []) else {
            Issue.record("an empty command is a permanent failure")
            return
        }
    }

    @Test func aPipeCommandThatCannotStartIsTemporary() async {
        let result = await PipeCourier().deliver(from: "s@x", to: "/nonexistent/filter arg", data: Array("x\n".utf8))
        #expect(result == .temporary("fork/exec /nonexistent/filter: no such file or directory"))
    }

    @Test func aBarePipeCommandIsLookedUpInPath() async throws {
        let dir = TempDir()
        let out = dir.path + "/out"
        #expect(await PipeCourier().deliver(from: "s@x", to: "tee \(out)", data: Array("a\nb\n".utf8)) == .sent)
        #expect(try readFile(out) == Array("a\nb\n".utf8))
    }
}

/// The MDA's input: the message in pieces, converted as it goes.
func toCRLF(_ bytes: [UInt8]) -> [UInt8] {
    let pieces = MessageData(bytes).pieces(toCRLF: true)
    var out: [UInt8] = []
    while let piece = pieces.next() { out += piece }
    return out
}

@Suite struct StreamedDeliveryTests {
    @Test func aLargeQueuedFileReachesTheMDAWholeInCRLF() async throws {
        let dir = TempDir()
        let line = Array(String(repeating: "z", count: 99).utf8) + [0x0A]
        // Several pieces, and a CR LF split across a piece boundary.
        var message: [UInt8] = Array(repeating: 0x41, count: MessagePieces.pieceSize - 1) + [0x0D, 0x0A]
        for _ in 0..<3000 { message += line }
        try AtomicFile.write(message, to: dir.path + "/d:x", mode: 0o600)
        let mda = MDACourier(binary: "/bin/sh", arguments: ["-c", "cat > \(dir.path)/out"])
        #expect(await mda.deliver(from: "s@x", to: "u@y", data: MessageData(path: dir.path + "/d:x")) == .sent)
        #expect(try readFile(dir.path + "/out") == CRLFConverter.convert(message))
    }

    @Test func aDataFileThatCannotBeReadIsATemporaryFailure() async {
        let dir = TempDir()
        // The MDA is never started for a message that cannot be read.
        let mda = MDACourier(binary: "/bin/sh", arguments: ["-c", "touch \(dir.path)/started"])
        guard case .temporary(let why) = await mda.deliver(from: "s@x", to: "u@y", data: MessageData(path: dir.path + "/gone"))
        else {
            Issue.record("a missing data file must be retried")
            return
        }
        #expect(why.contains("reading message data"))
        #expect(why.contains("/gone"))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/started"))
    }
}

@Suite struct CRLFConversionTests {
    @Test func bareLineFeedsBecomeCRLFAndExistingCRLFStaysOne() {
        let stored = Array("Authentication-Results: mx\r\n\t;spf=pass (matched ip)\nReceived-SPF: pass\n\nbody\n".utf8)
        #expect(
            toCRLF(stored)
                == Array("Authentication-Results: mx\r\n\t;spf=pass (matched ip)\r\nReceived-SPF: pass\r\n\r\nbody\r\n".utf8))
        #expect(toCRLF(Array("a\rb\n".utf8)) == Array("a\rb\r\n".utf8))
        #expect(toCRLF([]) == [])
    }
}
