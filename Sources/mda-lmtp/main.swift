// mda-lmtp: delivers the message on stdin to one recipient over LMTP, with
// chasquid's flags and exit statuses (COMPAT.md §21; docs/lmtp.md).
//
//   mail_delivery_agent_bin: "/usr/bin/mda-lmtp"
//   mail_delivery_agent_args: "--addr=/run/dovecot/lmtp"
//   mail_delivery_agent_args: "-f"
//   mail_delivery_agent_args: "%from%"
//   mail_delivery_agent_args: "-d"
//   mail_delivery_agent_args: "%to_user%@%to_domain%"

import GoFlags
import LMTPDelivery

#if canImport(Glibc)
import Glibc
#endif

var flags = GoFlags([
    .init("f", .string, "", "Whom the message is from"),
    .init("d", .string, "", "Recipient"),
    .init("addr_network", .string, "", "Network of the LMTP address (e.g. unix or tcp)"),
    .init("addr", .string, "", "LMTP server address"),
    .init("to_puny", .bool, "false", "Encode addresses using punycode"),
    .init("permanent_on_5xx", .bool, "false", "Exit 2 (permanent failure) when the server refuses with 5xx, instead of 75"),
])

func printError(_ text: String) {
    _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
}

let usageText = """

    mda-lmtp is a very basic MDA that uses LMTP to do the mail delivery.

    It takes command line arguments similar to maildrop or procmail, reads an
    email via standard input, and sends it over the given LMTP server.
    Supports connecting to LMTP servers over UNIX sockets and TCP.

    Example of use:
    $ mda-lmtp --addr localhost:1234 -f juan@casa -d jose < email

    Flags:

    """

do {
    try flags.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    printError("\(error)\n\(usageText)\(flags.usage)\n")
    exit(2)
}

var options = LMTPDelivery.Options()
options.from = flags.string("f")
options.recipient = flags.string("d")
options.network = flags.string("addr_network")
options.address = flags.string("addr")
options.toPuny = flags.bool("to_puny")
options.permanentOn5xx = flags.bool("permanent_on_5xx")
var host = [CChar](repeating: 0, count: 256)
gethostname(&host, host.count - 1)
options.hostname = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)

var chunk = [UInt8](repeating: 0, count: 64 * 1024)
let outcome = LMTPDelivery.deliver(options) {
    while true {
        let n = read(STDIN_FILENO, &chunk, chunk.count)
        if n < 0 && errno == EINTR { continue }
        guard n >= 0 else { throw StdinError() }
        return Array(chunk[0..<n])
    }
}

struct StdinError: Error, CustomStringConvertible {
    var description: String { "read /dev/stdin: \(String(cString: strerror(errno)))" }
}

if !outcome.message.isEmpty { print(outcome.message) }
exit(outcome.exitStatus)
