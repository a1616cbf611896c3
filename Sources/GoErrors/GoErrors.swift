#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// chasquid's messages are Go's error strings, and admins, scripts and
// howtos grep for them: these spell system errors the way Go does.

/// An errno as Go's syscall package spells it: the C library's text with
/// its first letter in lower case (unless the word is an acronym), e.g.
/// `no such file or directory`, `permission denied`.
public func goErrnoText(_ code: Int32) -> String {
    lowerFirst(String(cString: strerror(code)))
}

/// How Go's os/exec reports a child that did not exit 0: `exit status 1`,
/// or `signal: killed` for one ended by a signal.
public func goExitText(exitStatus: Int32?, signal: Int32?) -> String {
    if let exitStatus { return "exit status \(exitStatus)" }
    guard let signal else { return "exit status -1" }
    guard let name = strsignal(signal) else { return "signal: signal \(signal)" }
    return "signal: " + lowerFirst(String(cString: name))
}

/// Go's tables are the C texts with the first letter lowered, except where
/// the first word is an acronym ("RFS specific error").
func lowerFirst(_ text: String) -> String {
    guard let first = text.first, first.isUppercase else { return text }
    if let second = text.dropFirst().first, second.isUppercase { return text }
    return first.lowercased() + text.dropFirst()
}
