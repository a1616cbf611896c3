import GoCompat
import IDNA
import StreamSocket

/// mda-lmtp's work (COMPAT.md §21): hand one message to an LMTP server for
/// one recipient, and say whether it was delivered.
///
/// The one rule that matters: success only when the server gave the
/// recipient's own 250 after the data. Anything else (a refusal, a dropped
/// connection, a reply we cannot read) is a failure, temporary unless the
/// admin asked for 5xx replies to be permanent.
public enum LMTPDelivery {
    public struct Options: Sendable {
        /// `unix` or `tcp`; empty picks `unix` for a path starting with `/`.
        public var network = ""
        public var address = ""
        public var from = ""
        public var recipient = ""
        /// IDNA-encode the whole `from` and `recipient` strings, as chasquid does.
        public var toPuny = false
        /// Opt-in (COMPAT.md §22.16): a 5xx from the server is a permanent
        /// failure (exit 2, so chasquid bounces at once) instead of 75.
        public var permanentOn5xx = false
        /// Sent in LHLO: the machine's host name.
        public var hostname = ""
        /// Bounds the connect and each read and write.
        public var timeout: Duration = .seconds(60)
        public init() {}
    }

    /// How mda-lmtp ends: the exit status and what it prints on stdout.
    public struct Outcome: Sendable, Equatable {
        public var exitStatus: Int32
        public var message: String

        public static let delivered = Outcome(exitStatus: 0, message: "")
        /// 75 = EX_TEMPFAIL: chasquid retries later.
        static func temporary(_ message: String) -> Outcome { Outcome(exitStatus: 75, message: message) }
        /// 2: chasquid's "permanent" exit, for usage errors and (opt-in) 5xx.
        static func permanent(_ message: String) -> Outcome { Outcome(exitStatus: 2, message: message) }
    }

    /// A server reply: its code and its lines' texts.
    struct Reply: Equatable {
        var code: Int
        var lines: [String]
        /// Go's textproto error text, with the text quoted (Go ≥ 1.25).
        var description: String {
            let code = String(self.code)
            return String(repeating: "0", count: max(0, 3 - code.count)) + code + " "
                + goQuoted(lines.joined(separator: "\n"))
        }
    }

    struct Failure: Error {
        var text: String
        /// The server's 5xx reply, when that is what failed.
        var permanentReply = false
    }

    /// Delivers `message` (read in chunks from `read`, which returns an
    /// empty array at the end) and returns how to exit.
    public static func deliver(_ options: Options, read: () throws -> [UInt8]) -> Outcome {
        var options = options
        guard !options.address.isEmpty else { return .permanent("No LMTP server address given (use --addr)") }
        if options.toPuny {
            guard let from = punyEncoded(options.from) else {
                return .permanent("cannot puny-encode from: invalid \(goQuoted(options.from))")
            }
            guard let recipient = punyEncoded(options.recipient) else {
                return .permanent("cannot puny-encode recipient: invalid \(goQuoted(options.recipient))")
            }
            options.from = from
            options.recipient = recipient
        }
        if options.network.isEmpty { options.network = options.address.hasPrefix("/") ? "unix" : "tcp" }
        guard let network = StreamSocket.Network(rawValue: options.network) else {
            return .temporary(
                "Error connecting to (\(options.network), \(options.address)): dial \(options.network): unknown network \(options.network)"
            )
        }
        for (name, value) in [("from", options.from), ("recipient", options.recipient)]
        where value.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" }) {
            // An address with a line break would add an LMTP command [SEC].
            return .permanent("invalid \(name) address \(goQuoted(value))")
        }

        let connection: StreamSocket
        do {
            connection = try StreamSocket.connect(network: network, address: options.address, timeout: options.timeout)
        } catch {
            return .temporary("Error connecting to (\(options.network), \(options.address)): \(error)")
        }
        do throws(Failure) {
            do {
                _ = try readReply(connection, expecting: 220)
            } catch {
                throw Failure(text: "Server greeting error: \(error.text)", permanentReply: error.permanentReply)
            }
            let from = options.from == "<>" ? "" : options.from
            let recipient = options.recipient == "<>" ? "" : options.recipient
            try command(connection, "LHLO \(options.hostname)", expecting: 250)
            try command(connection, "MAIL FROM:<\(from)>", expecting: 250)
            try command(connection, "RCPT TO:<\(recipient)>", expecting: 250)
            try command(connection, "DATA", expecting: 354)
            var stuffer = DotStuffer()
            do {
                while true {
                    let chunk = try read()
                    if chunk.isEmpty { break }
                    try connection.write(stuffer.encode(chunk))
                }
                try connection.write(stuffer.finish())
            } catch {
                throw Failure(text: "Error writing DATA: \(error)")
            }
            // LMTP answers once per accepted recipient, after the data: this
            // reply, and only this one, says whether it was delivered.
            do {
                _ = try readReply(connection, expecting: 250)
            } catch {
                throw Failure(text: "Delivery failed remotely: \(error.text)", permanentReply: error.permanentReply)
            }
        } catch {
            return error.permanentReply && options.permanentOn5xx ? .permanent(error.text) : .temporary(error.text)
        }
        // Delivered. A QUIT that fails now must not ask for a retry, which
        // would deliver the message twice (chasquid exits 75 here).
        try? connection.write("QUIT\r\n")
        return .delivered
    }

    private static func command(_ connection: StreamSocket, _ line: String, expecting code: Int) throws(Failure) {
        do {
            try connection.write(line + "\r\n")
            _ = try readReply(connection, expecting: code)
        } catch let error as Failure {
            throw Failure(text: "Sent \(goQuoted(line)), got \(error.text)", permanentReply: error.permanentReply)
        } catch {
            throw Failure(text: "Sent \(goQuoted(line)), got \(error)")
        }
    }

    /// Reads one (possibly multi-line) reply; a code other than `expected`
    /// is a failure carrying the reply.
    static func readReply(_ connection: StreamSocket, expecting expected: Int) throws(Failure) -> Reply {
        var lines: [String] = []
        var code: Int?
        while true {
            let line: String
            do { line = try connection.readLine() } catch { throw Failure(text: "\(error)") }
            let bytes = Array(line.utf8)
            guard bytes.count >= 3, bytes[0..<3].allSatisfy({ (0x30...0x39).contains($0) }),
                bytes.count == 3 || bytes[3] == UInt8(ascii: " ") || bytes[3] == UInt8(ascii: "-"),
                let lineCode = Int(String(decoding: bytes[0..<3], as: UTF8.self))
            else { throw Failure(text: "short response: \(line)") }
            guard code == nil || code == lineCode else { throw Failure(text: "invalid response code: \(line)") }
            code = lineCode
            lines.append(bytes.count > 4 ? String(decoding: bytes[4...], as: UTF8.self) : "")
            if bytes.count == 3 || bytes[3] == UInt8(ascii: " ") { break }
        }
        let reply = Reply(code: code!, lines: lines)
        guard reply.code == expected else {
            throw Failure(text: reply.description, permanentReply: reply.code / 100 == 5)
        }
        return reply
    }

    /// Go's idna.ToASCII (the Punycode profile): each dot-separated label
    /// with non-ASCII characters becomes `xn--` and its Punycode. The whole
    /// string is one "domain", `@` included, as in chasquid.
    static func punyEncoded(_ text: String) -> String? {
        var labels: [String] = []
        for label in text.split(separator: ".", omittingEmptySubsequences: false) {
            if label.unicodeScalars.allSatisfy(\.isASCII) {
                labels.append(String(label))
            } else {
                guard let encoded = try? Punycode.encode(String(label)) else { return nil }
                labels.append("xn--" + encoded)
            }
        }
        return labels.joined(separator: ".")
    }
}

/// The message as DATA needs it: every line ending CRLF (a bare LF or a bare
/// CR becomes one, so no bare CR reaches the wire), a leading dot doubled,
/// and the final `.` line. Works chunk by chunk, so a message is never held
/// whole.
struct DotStuffer {
    private var atLineStart = true
    private var afterCR = false

    mutating func encode(_ chunk: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(chunk.count + chunk.count / 32 + 4)
        for byte in chunk {
            if afterCR {
                afterCR = false
                // CRLF: the CR already ended the line.
                if byte == UInt8(ascii: "\n") { continue }
            }
            switch byte {
            case UInt8(ascii: "\r"):
                out += [0x0D, 0x0A]
                atLineStart = true
                afterCR = true
            case UInt8(ascii: "\n"):
                out += [0x0D, 0x0A]
                atLineStart = true
            default:
                if atLineStart && byte == UInt8(ascii: ".") { out.append(UInt8(ascii: ".")) }
                atLineStart = false
                out.append(byte)
            }
        }
        return out
    }

    /// The end: a CRLF if the last line had none, then `.` CRLF.
    mutating func finish() -> [UInt8] {
        (atLineStart ? [] : [0x0D, 0x0A]) + Array(".\r\n".utf8)
    }
}
