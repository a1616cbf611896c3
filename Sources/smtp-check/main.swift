// smtp-check: checks a domain's mail setup as the world sees it, with
// chasquid's flags, steps and output (COMPAT.md §20; docs/smtp-check.md).
//
//   smtp-check [-port=smtp] [-localname=localhost] [-skip_tls_check] <domain>

import DNS
import GoFlags
import NIOSSL
import RemoteDelivery
import SetupCheck

#if canImport(Glibc)
import Glibc
#endif

var flags = GoFlags([
    .init("port", .string, "smtp", "port to use for connecting to the MX servers"),
    .init("localname", .string, "localhost", "specify the local name for the EHLO command"),
    .init("skip_tls_check", .bool, "false", "skip TLS check (useful if connections are blocked)"),
    .init("config_dir", .string, "/etc/chasquid", "chasquid's configuration directory, for the DKIM keys to check"),
    .init("strict", .bool, "false", "fail (exit 1) on warnings too, not only on chasquid's failures"),
    .init("testing__dns_addr", .string, "", "DNS server address (host:port) instead of /etc/resolv.conf, ONLY FOR TESTING"),
    .init("testing__sts_port", .int, "443", "HTTPS port of MTA-STS policy hosts, ONLY FOR TESTING"),
])

/// Writes all of `text`, whatever bytes it holds.
func printError(_ text: String) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let written = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        if written < 0 && errno == EINTR { continue }
        guard written > 0 else { return }
        bytes = bytes.dropFirst(written)
    }
}

/// Go's standard logger: `2006/01/02 15:04:05 ` in local time, to stderr.
@Sendable func log(_ line: String) {
    var now = time(nil)
    var parts = tm()
    localtime_r(&now, &parts)
    var buffer = [CChar](repeating: 0, count: 32)
    let length = strftime(&buffer, buffer.count, "%Y/%m/%d %H:%M:%S ", &parts)
    let prefix = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    printError(prefix + line + "\n")
}

func fatal(_ line: String) -> Never {
    log(line)
    exit(1)
}

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first.map({ ["-h", "-help", "--help", "--h"].contains($0) }) == true {
    printError("Usage of smtp-check:\n\(flags.usage)\n")
    exit(0)
}
do {
    try flags.parse(arguments)
} catch {
    printError("\(error)\nUsage of smtp-check:\n\(flags.usage)\n")
    exit(2)
}

/// A port number, or a service name as Go's dialer takes one.
func port(_ text: String) -> Int? {
    if let number = Int(text), (1...65535).contains(number) { return number }
    if let entry = getservbyname(text, "tcp") { return Int(UInt16(bigEndian: UInt16(truncatingIfNeeded: entry.pointee.s_port))) }
    return ["smtp": 25, "submission": 587, "submissions": 465, "smtps": 465][text]
}

guard let domain = flags.arguments.first, !domain.isEmpty else { fatal("Use: smtp-check <domain>") }
guard let smtpPort = port(flags.string("port")) else { fatal("unknown port \"\(flags.string("port"))\"") }

let resolver: ResolverConfiguration
if flags.string("testing__dns_addr").isEmpty {
    resolver = .system()
} else {
    do {
        resolver = try .single(flags.string("testing__dns_addr"))
    } catch {
        fatal("invalid -testing__dns_addr: \(error)")
    }
}

var options = SetupCheck.Options()
options.domain = domain
options.port = smtpPort
options.localName = flags.string("localname")
options.skipTLSCheck = flags.bool("skip_tls_check")
options.configDirectory = flags.string("config_dir").isEmpty ? nil : flags.string("config_dir")
guard (1...65535).contains(flags.int("testing__sts_port")) else { fatal("invalid -testing__sts_port") }
options.stsPort = flags.int("testing__sts_port")

let verifyingContext: NIOSSLContext
let lenientContext: NIOSSLContext
do {
    verifyingContext = try RemoteCourier.makeVerifyingContext()
    var lenient = TLSConfiguration.makeClientConfiguration()
    lenient.certificateVerification = .none
    lenientContext = try NIOSSLContext(configuration: lenient)
} catch {
    fatal("TLS setup: \(error)")
}

let check = SetupCheck(
    options: options, dns: StubResolver(configuration: resolver), verifyingContext: verifyingContext,
    lenientContext: lenientContext, log: log)
let report = await check.run()
exit(report.exitStatus(strict: flags.bool("strict")))
