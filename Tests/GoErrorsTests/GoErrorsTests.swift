import Glibc
import GoErrors
import Testing

/// The texts chasquid's messages carry, from Go's syscall and os/exec.
@Suite struct GoErrorsTests {
    @Test(arguments: [
        (ENOENT, "no such file or directory"), (EACCES, "permission denied"), (ENOTDIR, "not a directory"),
        (EEXIST, "file exists"), (ENOSPC, "no space left on device"), (EADDRINUSE, "address already in use"),
    ])
    func errnoTextsAreGos(code: Int32, text: String) {
        #expect(goErrnoText(code) == text)
    }

    @Test func exitTextsAreGos() {
        #expect(goExitText(exitStatus: 1, signal: nil) == "exit status 1")
        #expect(goExitText(exitStatus: nil, signal: SIGKILL) == "signal: killed")
        #expect(goExitText(exitStatus: nil, signal: SIGTERM) == "signal: terminated")
    }
}
