#if canImport(Glibc)
import Glibc
#endif
import BlockingWork
import CSystemShims
import GoErrors

/// Runs hooks and delivery agents: a program with arguments, an environment,
/// bytes on stdin, and a deadline.
///
/// The child runs in its own process group, and at the deadline the whole
/// group is killed: a shell script's `sleep` dies with it, and so nothing
/// keeps our pipes open past the deadline.
public enum ChildProcess {
    public struct Output: Sendable, Equatable {
        /// The exit status, or nil when killed by a signal.
        public var exitStatus: Int32?
        public var signal: Int32?
        public var timedOut: Bool
        public var stdout: [UInt8]
        /// Standard error; empty when it was merged into `stdout`.
        public var stderr: [UInt8]

        public var succeeded: Bool { exitStatus == 0 && !timedOut }

        /// Go's os/exec error for this outcome (`exit status 1`, `signal:
        /// killed`), as chasquid reports a failed hook or pipe. A child
        /// killed at its deadline was killed with SIGKILL.
        public var goErrorText: String {
            goExitText(exitStatus: exitStatus, signal: timedOut && exitStatus == nil ? (signal ?? SIGKILL) : signal)
        }
    }

    public struct Failure: Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
    }

    /// The threads that wait for a child (`BlockingWork`).
    public typealias Pool = BlockingWork.ProcessPool

    /// What the child reads on stdin.
    public enum Input: Sendable {
        case bytes([UInt8])
        /// Pieces from `next` until it returns nil, asked for on the
        /// waiting thread as the child reads (it may block on a file). An
        /// empty piece is skipped. When `failed` says the input could not
        /// be read to its end, the child is killed rather than given a
        /// clean end of a cut message.
        case pieces(next: @Sendable () -> [UInt8]?, failed: @Sendable () -> Bool)
        /// The file `open` returns (an open descriptor, read from its
        /// current offset): the child reads it itself. Unlike a pipe, whose
        /// clean end a child also sees when we are killed mid-way, a file
        /// ends only at its real end, so a delivery agent never takes a cut
        /// message for a whole one. `open` runs on the waiting thread (it
        /// may copy a whole message); the descriptor is closed after the run.
        case file(open: @Sendable () throws -> Int32)
    }

    /// Runs `path` and waits for it, without blocking a Swift concurrency
    /// thread (a thread of `pool` waits).
    ///
    /// - Parameters:
    ///   - environment: the child's entire environment, or nil to inherit ours.
    ///   - mergeStderr: send stderr to the same pipe as stdout, in order.
    ///   - pool: the threads that wait for it: `.session` for what an SMTP
    ///     session waits on (hooks), `.delivery` for the queue's children.
    ///   - timeout: from this call, time spent waiting for a thread included.
    public static func run(
        _ path: String,
        arguments: [String] = [],
        environment: [String: String]? = nil,
        workingDirectory: String? = nil,
        input: [UInt8] = [],
        mergeStderr: Bool = false,
        pool: Pool = .session,
        timeout: Duration
    ) async throws(Failure) -> Output {
        try await run(
            path, arguments: arguments, environment: environment, workingDirectory: workingDirectory,
            stdin: .bytes(input), mergeStderr: mergeStderr, pool: pool, timeout: timeout)
    }

    /// `run` with stdin given as pieces: a large input (a message for the
    /// MDA) is read as the child takes it, never held whole.
    public static func run(
        _ path: String,
        arguments: [String] = [],
        environment: [String: String]? = nil,
        workingDirectory: String? = nil,
        stdin input: Input,
        mergeStderr: Bool = false,
        pool: Pool = .session,
        timeout: Duration
    ) async throws(Failure) -> Output {
        _ = ignoreSIGPIPE
        // A process thread (`BlockingWork`) waits for the child; their
        // number is bounded, so a burst of hooks queues instead of growing
        // the thread count. The wait for a thread counts against the
        // timeout; a child whose time ran out in the queue still gets a
        // moment, and its timeout then kills it as usual.
        let deadline = ContinuousClock.now + timeout
        let result: Result<Output, Failure> = await BlockingWork.onProcessThread(pool) {
            Result { () throws(Failure) -> Output in
                try runBlocking(
                    path, arguments: arguments, environment: environment, workingDirectory: workingDirectory,
                    input: input, mergeStderr: mergeStderr,
                    timeout: max(deadline - ContinuousClock.now, .milliseconds(10)))
            }
        }
        return try result.get()
    }

    /// A child that exits without reading its input must not kill us with
    /// SIGPIPE; the write then fails with EPIPE, which we handle. (The child
    /// gets the default disposition back, through posix_spawn.)
    private static let ignoreSIGPIPE: Void = {
        signal(SIGPIPE, SIG_IGN)
    }()

    static func runBlocking(
        _ path: String, arguments: [String], environment: [String: String]?, workingDirectory: String?,
        input: Input, mergeStderr: Bool, timeout: Duration
    ) throws(Failure) -> Output {
        var stdinPipe: [Int32] = [-1, -1], stdoutPipe: [Int32] = [-1, -1], stderrPipe: [Int32] = [-1, -1]
        guard csystem_pipe_cloexec(&stdinPipe) == 0, csystem_pipe_cloexec(&stdoutPipe) == 0,
            csystem_pipe_cloexec(&stderrPipe) == 0
        else { throw Failure(description: "pipe: \(goErrnoText(errno))") }

        // Nothing else of ours reaches the child (csystem_spawn closes every
        // descriptor from 3 up): not the listeners (a hook's background job
        // would keep port 25 bound across a restart, a pipe alias could
        // accept() on them), not client sockets, not epoll. Many of those
        // are opened without CLOEXEC by libraries. The child has its own
        // process group, and dies with us (see csystem_spawn).
        var stdinFile: Int32?
        if case .file(let open) = input {
            do {
                stdinFile = try open()
            } catch {
                throw Failure(description: "reading message data: \(error)")
            }
        }
        defer { if let stdinFile { close(stdinFile) } }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        // nil: the child gets our own environment as it is, with no copy.
        let envStrings = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer {
            argv.forEach { free($0) }
            envStrings?.forEach { free($0) }
        }
        var envArray = envStrings ?? []
        func spawn() -> Int32 {
            argv.withUnsafeBufferPointer { argvPointer in
                envArray.withUnsafeMutableBufferPointer { envPointer in
                    (workingDirectory ?? "").withCString { directory in path.withCString { path in
                        var request = csystem_spawn_request(
                            path: path, argv: argvPointer.baseAddress,
                            envp: envStrings == nil ? environ : envPointer.baseAddress,
                            stdin_fd: stdinFile ?? stdinPipe[0], stdout_fd: stdoutPipe[1],
                            stderr_fd: mergeStderr ? stdoutPipe[1] : stderrPipe[1],
                            directory: workingDirectory == nil ? nil : directory)
                        return csystem_spawn(&request)
                    } }
                }
            }
        }
        var spawned = spawn()
        // A script being written right now (an admin saving a hook, or another
        // thread's child still holding it open) gives ETXTBSY for a moment.
        for _ in 0..<20 where spawned == -ETXTBSY {
            usleep(50_000)
            spawned = spawn()
        }
        for fd in [stdinPipe[0], stdoutPipe[1], stderrPipe[1]] { close(fd) }
        guard spawned > 0 else {
            for fd in [stdinPipe[1], stdoutPipe[0], stderrPipe[0]] { close(fd) }
            throw Failure(description: "fork/exec \(path): \(goErrnoText(-spawned))")
        }
        let pid = pid_t(spawned)

        var output = Output(exitStatus: nil, signal: nil, timedOut: false, stdout: [], stderr: [])
        exchange(
            pid: pid, input: input, stdin: stdinPipe[1], stdout: stdoutPipe[0], stderr: stderrPipe[0],
            timeout: timeout, output: &output)

        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let termSignal = status & 0x7F
        if termSignal == 0 {
            output.exitStatus = (status >> 8) & 0xFF
        } else {
            output.signal = termSignal
        }
        return output
    }

    private static func nonEmptyPiece(_ next: () -> [UInt8]?) -> [UInt8]? {
        while let piece = next() {
            if !piece.isEmpty { return piece }
        }
        return nil
    }

    /// Feeds stdin and drains stdout/stderr until both close, killing the
    /// process group at the deadline.
    private static func exchange(
        pid: pid_t, input: Input, stdin: Int32, stdout: Int32, stderr: Int32, timeout: Duration,
        output: inout Output
    ) {
        for fd in [stdin, stdout, stderr] { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        // The piece being written, and what comes after it.
        var piece: [UInt8]
        var nextPiece: () -> [UInt8]?
        var inputFailed: () -> Bool = { false }
        switch input {
        case .bytes(let bytes):
            piece = bytes
            nextPiece = { nil }
        case .file:
            // The child has the file; our end of the unused pipe just closes.
            piece = []
            nextPiece = { nil }
        case .pieces(let next, let failed):
            piece = nonEmptyPiece(next) ?? []
            nextPiece = next
            inputFailed = failed
        }
        /// The input ended: a failed read kills the child first.
        func endInput(_ fd: Int32) {
            if inputFailed() {
                kill(-pid, SIGKILL)
                kill(pid, SIGKILL)
            }
            close(fd)
        }
        var stdinFD = piece.isEmpty ? Int32(-1) : stdin
        if piece.isEmpty { endInput(stdin) }
        var openReaders: [Int32] = [stdout, stderr]
        var written = 0
        let deadline = ContinuousClock.now + timeout
        var buffer = [UInt8](repeating: 0, count: 65536)

        while !openReaders.isEmpty {
            let remaining = deadline - ContinuousClock.now
            if remaining <= .zero && !output.timedOut {
                output.timedOut = true
                kill(-pid, SIGKILL)
                kill(pid, SIGKILL)
                if stdinFD >= 0 {
                    close(stdinFD)
                    stdinFD = -1
                }
            }
            var fds = openReaders.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if stdinFD >= 0 { fds.append(pollfd(fd: stdinFD, events: Int16(POLLOUT), revents: 0)) }
            // After the kill, give stragglers that escaped the group a second.
            let waitMs = output.timedOut ? 1000 : max(1, Int32(clamping: remaining.components.seconds * 1000
                + remaining.components.attoseconds / 1_000_000_000_000_000))
            let ready = poll(&fds, nfds_t(fds.count), waitMs)
            if ready < 0 && errno == EINTR { continue }
            if ready == 0 && output.timedOut { break }
            for entry in fds where entry.revents != 0 {
                if entry.fd == stdinFD {
                    let n = piece.withUnsafeBytes { write(stdinFD, $0.baseAddress! + written, $0.count - written) }
                    if n > 0 { written += n }
                    if written == piece.count, let next = nonEmptyPiece(nextPiece) {
                        (piece, written) = (next, 0)
                        continue
                    }
                    if n < 0 && errno != EAGAIN && errno != EINTR {
                        close(stdinFD)  // The child stopped reading (EPIPE).
                        stdinFD = -1
                    } else if written == piece.count {
                        endInput(stdinFD)
                        stdinFD = -1
                    }
                    continue
                }
                let n = buffer.withUnsafeMutableBytes { read(entry.fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    if entry.fd == stdout { output.stdout += buffer[0..<n] } else { output.stderr += buffer[0..<n] }
                } else if n == 0 || (errno != EAGAIN && errno != EINTR) {
                    close(entry.fd)
                    openReaders.removeAll { $0 == entry.fd }
                }
            }
        }
        if stdinFD >= 0 { close(stdinFD) }
        for fd in openReaders { close(fd) }
    }
}
