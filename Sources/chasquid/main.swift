import ChasquidServer
import Dispatch
import GoFlags

#if canImport(Glibc)
import Glibc
#endif

// A standard descriptor left closed by whoever started us would be taken
// by the first file we open, and log lines written into it (a queue file).
for fd in Int32(0)...2 where fcntl(fd, F_GETFD) < 0 { _ = open("/dev/null", O_RDWR) }
Daemon.runTasksOnEventLoops()
Daemon.raiseOpenFileLimit()

func printError(_ text: String) {
    _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
}

/// chasquid's flags (COMPAT.md §11.1), in Go flag syntax.
var flags = GoFlags([
    .init("config_dir", .string, "/etc/chasquid", "configuration directory"),
    .init("config_overrides", .string, "", "override configuration values (in text protobuf format)"),
    .init("version", .bool, "false", "show version and exit"),
    .init("v", .int, "0", "verbosity level (1 = debug)"),
    .init("logfile", .string, "", "file to log to (enables logtime)"),
    .init("logtime", .bool, "false", "include the time when writing the log to stderr"),
    .init("alsologtostderr", .bool, "false", "also log to stderr, in addition to the file"),
    .init("logtosyslog", .string, "", "log to syslog, with the given tag"),
    .init("testing__outgoing_smtp_port", .string, "25", "port to use for outgoing SMTP connections, ONLY FOR TESTING"),
    .init("testing__max_received_headers", .int, "50", "max Received headers, ONLY FOR TESTING"),
    .init("testing__reload_every", .string, "30s", "how often to reload, ONLY FOR TESTING"),
    .init("testing__delivery_timeout", .string, "30s", "MDA and pipe alias timeout, ONLY FOR TESTING"),
    .init("testing__retry_delay", .string, "", "fixed wait between delivery rounds, ONLY FOR TESTING"),
    .init("testing__auth_delay", .string, "500ms", "first delay after failed AUTH attempts, ONLY FOR TESTING"),
    .init("testing__dns_addr", .string, "", "DNS server address (host:port) instead of /etc/resolv.conf, ONLY FOR TESTING"),
    .init("testing__sts_port", .int, "443", "HTTPS port of MTA-STS policy hosts, ONLY FOR TESTING"),
])

do {
    try flags.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    printError("\(error)\nUsage of chasquid:\n\(flags.usage)\n")
    exit(2)
}

if flags.bool("version") {
    print("chasquid \(ChasquidVersion.version) (source date: \(ChasquidVersion.sourceDate))")
    exit(0)
}

var options = DaemonOptions()
options.configDirectory = flags.string("config_dir")
options.configOverrides = flags.string("config_overrides")
options.verbose = flags.int("v") >= 1
options.logFile = flags.string("logfile")
options.logTime = flags.bool("logtime")
options.alsoLogToStderr = flags.bool("alsologtostderr")
options.syslogTag = flags.string("logtosyslog")
options.maxReceivedHeaders = flags.int("testing__max_received_headers")
options.outgoingSMTPPort = Int(flags.string("testing__outgoing_smtp_port")) ?? 25
options.dnsServer = flags.string("testing__dns_addr")
options.stsPort = flags.int("testing__sts_port")
if !(1...65535).contains(options.stsPort) {
    printError("invalid value \"\(flags.string("testing__sts_port"))\" for flag -testing__sts_port\n")
    exit(2)
}
options.flagsText = flags.debugText
options.commandLine = CommandLine.arguments
if let delay = ChasquidVersion.parseDuration(flags.string("testing__auth_delay")) {
    options.authDelay = delay
} else {
    printError("invalid value \"\(flags.string("testing__auth_delay"))\" for flag -testing__auth_delay\n")
    exit(2)
}
if let timeout = ChasquidVersion.parseDuration(flags.string("testing__delivery_timeout")) {
    options.deliveryTimeout = timeout
} else {
    printError("invalid value \"\(flags.string("testing__delivery_timeout"))\" for flag -testing__delivery_timeout\n")
    exit(2)
}
if !flags.string("testing__retry_delay").isEmpty {
    guard let delay = ChasquidVersion.parseDuration(flags.string("testing__retry_delay")) else {
        printError("invalid value \"\(flags.string("testing__retry_delay"))\" for flag -testing__retry_delay\n")
        exit(2)
    }
    options.retryDelay = delay
}
if let every = ChasquidVersion.parseDuration(flags.string("testing__reload_every")) {
    options.reloadEvery = every
} else {
    printError("invalid value \"\(flags.string("testing__reload_every"))\" for flag -testing__reload_every\n")
    exit(2)
}

/// Signals are handled on one queue: SIGHUP reloads, SIGTERM and SIGINT
/// drain and stop (a second one ends the process at once).
func installSignalHandlers(_ daemon: Daemon) -> [any DispatchSourceSignal] {
    let queue = DispatchQueue(label: "chasquid.signals")
    var sources: [any DispatchSourceSignal] = []
    for sig in [SIGHUP, SIGTERM, SIGINT] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
        source.setEventHandler {
            if sig == SIGHUP {
                daemon.reload()
            } else if daemon.isShuttingDown {
                exit(0)
            } else {
                Task { await daemon.shutdown(reason: "Received signal \(sig)") }
            }
        }
        source.resume()
        sources.append(source)
    }
    return sources
}

do {
    let daemon = try await Daemon(options: options)
    let signalSources = installSignalHandlers(daemon)
    try await daemon.run()
    withExtendedLifetime(signalSources) {}
    exit(0)
} catch {
    printError("\(error)\n")
    exit(1)
}
