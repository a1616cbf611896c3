import Foundation
import Synchronization
import Testing

@testable import ChildProcess

@Suite struct ChildProcessTests {
    @Test func passesArgumentsInputAndEnvironment() async throws {
        let out = try await ChildProcess.run(
            "/bin/sh", arguments: ["-c", "printf '%s|%s|' \"$1\" \"$GREETING\"; cat; echo err >&2", "sh", "arg one"],
            environment: ["GREETING": "hola", "PATH": "/usr/bin:/bin"], input: Array("from stdin".utf8),
            timeout: .seconds(10))
        #expect(out.exitStatus == 0 && out.succeeded)
        #expect(String(decoding: out.stdout, as: UTF8.self) == "arg one|hola|from stdin")
        #expect(String(decoding: out.stderr, as: UTF8.self) == "err\n")
    }

    /// A descriptor of ours without CLOEXEC (as a listener or client socket
    /// may be) does not reach the child: it sees 0, 1, 2 and nothing else
    /// (issue 13 §3).
    @Test func onlyTheStandardDescriptorsReachTheChild() async throws {
        let leaked = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(leaked > 2)
        #expect(fcntl(leaked, F_SETFD, 0) == 0)  // inheritable
        defer { close(leaked) }
        let out = try await ChildProcess.run(
            "/bin/sh", arguments: ["-c", "cd /proc/self/fd && echo *"], timeout: .seconds(10))
        // The shell's own glob reads the directory through one more fd of its own.
        let fds = String(decoding: out.stdout, as: UTF8.self).split(separator: " ").compactMap {
            Int32($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        #expect(!fds.contains(leaked), "\(fds)")
        #expect(fds.filter { $0 > 2 }.count <= 1, "\(fds)")
    }

    @Test func onlyTheGivenEnvironmentIsPassed() async throws {
        let out = try await ChildProcess.run("/usr/bin/env", environment: ["ONLY": "1"], timeout: .seconds(10))
        #expect(String(decoding: out.stdout, as: UTF8.self) == "ONLY=1\n")
    }

    @Test func mergedStderrKeepsOrder() async throws {
        let out = try await ChildProcess.run(
            "/bin/sh", arguments: ["-c", "echo a; echo b >&2; echo c"], mergeStderr: true, timeout: .seconds(10))
        #expect(String(decoding: out.stdout, as: UTF8.self) == "a\nb\nc\n")
    }

    @Test func exitStatusAndWorkingDirectory() async throws {
        let out = try await ChildProcess.run(
            "/bin/sh", arguments: ["-c", "pwd; exit 20"], workingDirectory: "/tmp", timeout: .seconds(10))
        #expect(out.exitStatus == 20 && !out.succeeded)
        #expect(String(decoding: out.stdout, as: UTF8.self) == "/tmp\n")
    }

    /// The shell's child `sleep` holds the pipe too; killing the group ends both.
    @Test func theWholeGroupIsKilledAtTheDeadline() async throws {
        let start = ContinuousClock.now
        let out = try await ChildProcess.run(
            "/bin/sh", arguments: ["-c", "echo started; sleep 120; echo never"], timeout: .milliseconds(500))
        #expect(out.timedOut && out.signal == SIGKILL)
        #expect(String(decoding: out.stdout, as: UTF8.self) == "started\n")
        #expect(ContinuousClock.now - start < .seconds(60))
    }

    @Test func largeInputAndOutputDoNotDeadlock() async throws {
        let input = [UInt8](repeating: UInt8(ascii: "x"), count: 5_000_000)
        let out = try await ChildProcess.run("/bin/cat", input: input, timeout: .seconds(30))
        #expect(out.stdout.count == input.count)
    }

    @Test func inputInPiecesArrivesInOrderAndEmptyPiecesAreSkipped() async throws {
        let pieces = Mutex([[], Array("ab".utf8), [], [], Array("c\n".utf8), [UInt8](repeating: 0x79, count: 200_000), []])
        let out = try await ChildProcess.run(
            "/bin/cat",
            stdin: .pieces(next: { pieces.withLock { $0.isEmpty ? nil : $0.removeFirst() } }, failed: { false }),
            timeout: .seconds(30))
        #expect(out.stdout == Array("abc\n".utf8) + [UInt8](repeating: 0x79, count: 200_000))
    }

    @Test func inputThatFailsMidwayKillsTheChildInsteadOfEndingCleanly() async throws {
        let served = Mutex(0)
        // The child would exit 0 after a clean end of input.
        let out = try await ChildProcess.run(
            "/bin/sh", arguments: ["-c", "cat > /dev/null; exit 0"],
            stdin: .pieces(
                next: { served.withLock { count in
                    count += 1
                    return count == 1 ? Array("partial".utf8) : nil
                } }, failed: { true }),
            timeout: .seconds(30))
        #expect(out.exitStatus == nil)
        #expect(out.signal == SIGKILL)
    }

    @Test func aChildThatIgnoresStdinStillFinishes() async throws {
        let input = [UInt8](repeating: 0, count: 5_000_000)
        let out = try await ChildProcess.run("/bin/true", input: input, timeout: .seconds(30))
        #expect(out.exitStatus == 0 && !out.timedOut)
    }

    @Test func aMissingProgramIsAFailure() async {
        await #expect(throws: ChildProcess.Failure.self) {
            try await ChildProcess.run("/nonexistent/program", timeout: .seconds(1))
        }
    }
}
