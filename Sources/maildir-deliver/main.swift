// maildir-deliver: a minimal local delivery agent. (No Foundation: it runs
// once per delivered message, and loading Foundation costs more than the
// delivery itself.) It stores the message on
// stdin in a Maildir (tmp/, then new/), fsyncing before the rename, so a
// successful exit means the message is on disk. The Maildir is created if
// missing.
//
//   mail_delivery_agent_bin: "/usr/local/bin/maildir-deliver"
//   mail_delivery_agent_args: "/var/mail/%to_domain%/%to_user%"
//
// Exit 0: delivered. Exit 75 (EX_TEMPFAIL): a disk problem, try again later,
// and also bad arguments (no Maildir path, an option, chasquid's default
// `-f %from% -d %to_user%` left in mail_delivery_agent_args): a mistake in
// the configuration keeps mail queued until it is fixed, where EX_USAGE
// would bounce it. --help prints the usage and exits 0.

import DurableFiles

#if canImport(Glibc)
import Glibc
#endif

func fail(_ message: String, _ status: Int32) -> Never {
    let text = "maildir-deliver: \(message)\n"
    _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    exit(status)
}

func removingCRBeforeLF(_ bytes: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    for (i, byte) in bytes.enumerated() {
        if byte == UInt8(ascii: "\r") && i + 1 < bytes.count && bytes[i + 1] == UInt8(ascii: "\n") { continue }
        out.append(byte)
    }
    return out
}

let usage = """
    Usage: maildir-deliver <maildir>

    Stores the message read on stdin in the Maildir <maildir> (created if
    missing), synced to disk before it exits 0. Exit 75 (try again
    later): a disk problem, or bad arguments, so that a mistake in
    mail_delivery_agent_args keeps mail in chasquid's queue.

    In chasquid.conf:
      mail_delivery_agent_bin: "/usr/local/bin/maildir-deliver"
      mail_delivery_agent_args: "/var/mail/%to_domain%/%to_user%"

    A path that starts with "-" is given after "--", or as "./-name".

    """

var arguments = Array(CommandLine.arguments.dropFirst())
if arguments == ["--help"] || arguments == ["-help"] || arguments == ["-h"] {
    _ = usage.withCString { write(STDOUT_FILENO, $0, strlen($0)) }
    exit(0)
}
// An option is never a Maildir: `--help` once made a Maildir named so.
if arguments.first == "--" {
    arguments.removeFirst()
} else if let option = arguments.first(where: { $0.hasPrefix("-") }) {
    fail("unknown option \"\(option)\"\n\(usage)", 75)
}
guard arguments.count == 1, !arguments[0].isEmpty else { fail("expected one Maildir path\n\(usage)", 75) }
let maildir = arguments[0]

do {
    for sub in ["", "/tmp", "/new", "/cur"] { try makeDirectories(maildir + sub, mode: 0o700) }
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    var host = [CChar](repeating: 0, count: 256)
    gethostname(&host, host.count)
    // Maildir names may not hold "/" or ":" (the info separator).
    var hostname = ""
    for byte in host.prefix(while: { $0 != 0 }).map({ UInt8(bitPattern: $0) }) {
        switch byte {
        case UInt8(ascii: "/"): hostname += "\\057"
        case UInt8(ascii: ":"): hostname += "\\072"
        default: hostname.unicodeScalars.append(Unicode.Scalar(byte))
        }
    }
    let unique = "\(now.tv_sec).M\(now.tv_nsec / 1000)P\(getpid())R\(UInt32.random(in: 0...UInt32.max)).\(hostname)"
    let tmpPath = maildir + "/tmp/" + unique
    let spool = try SpoolFile(creating: tmpPath, mode: 0o600)
    var buffer = [UInt8](repeating: 0, count: 65536)
    var pendingCR = false
    while true {
        let n = read(STDIN_FILENO, &buffer, buffer.count)
        if n < 0 {
            if errno == EINTR { continue }
            spool.discard()
            fail("reading stdin: \(String(cString: strerror(errno)))", 75)
        }
        if n == 0 { break }
        // Maildirs hold LF line endings; the MDA gets CRLF (COMPAT.md §12.4).
        var chunk = Array(buffer[0..<n])
        if pendingCR {
            chunk.insert(UInt8(ascii: "\r"), at: 0)
            pendingCR = false
        }
        if chunk.last == UInt8(ascii: "\r") {
            chunk.removeLast()
            pendingCR = true
        }
        try spool.append(removingCRBeforeLF(chunk))
    }
    if pendingCR { try spool.append([UInt8(ascii: "\r")]) }
    try spool.commit()
    try renameFile(tmpPath, to: maildir + "/new/" + unique)
    try AtomicFile.syncDirectory(maildir + "/new")
} catch {
    fail("\(error)", 75)
}
