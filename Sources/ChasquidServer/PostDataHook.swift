import ChildProcess
import Foundation
import GoCompat
import Instrumentation
import Logging
import SMTPCore

/// `hooks/post-data` (COMPAT.md §10.1): runs after the DATA checks, before
/// queueing, with the message on stdin and a fixed environment. Its stdout
/// becomes extra headers; its failure refuses the message.
public struct PostDataHook: Sendable {
    public var path: String
    public var configDirectory: String
    public var timeout: Duration
    public var metrics: ServerMetrics
    /// Where output that is not headers is reported (chasquid only counts it).
    public var logger: Logger?

    public init(
        path: String, configDirectory: String, timeout: Duration = .seconds(60), metrics: ServerMetrics = .discarding,
        logger: Logger? = nil
    ) {
        self.metrics = metrics
        self.logger = logger
        self.path = path
        self.configDirectory = configDirectory
        self.timeout = timeout
    }

    public enum Outcome: Equatable, Sendable {
        /// No hook installed.
        case skipped
        /// Passed; these bytes (possibly empty) go on top of the message.
        case accepted(headers: [UInt8])
        /// Passed, but its output (here) was not headers; it is ignored.
        case acceptedBadOutput([UInt8])
        /// Refused, with this reply.
        case refused(Reply)
    }

    public struct Facts: Sendable {
        public var remoteAddress: String
        public var ehloDomain: String
        public var from: String
        public var recipients: [String]
        public var authenticatedAs: String?
        public var onTLS: Bool
        public var spfPass: Bool
        public var fromLocalDomain: Bool
    }

    func environment(_ facts: Facts) -> [String: String] {
        let inherited = ProcessInfo.processInfo.environment
        var env: [String: String] = [:]
        for key in ["USER", "SHELL", "PATH"] { env[key] = inherited[key] ?? "" }
        // chasquid 1.18 passes its inherited PWD; the docs promise the config dir (§22.12).
        env["PWD"] = configDirectory
        env["REMOTE_ADDR"] = facts.remoteAddress
        // Per scalar: an ASCII letter with a combining mark is still a letter.
        env["EHLO_DOMAIN"] = String(
            facts.ehloDomain.unicodeScalars.filter {
                $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-.[]:".unicodeScalars.contains($0))
            })
        env["EHLO_DOMAIN_RAW"] = facts.ehloDomain
        env["MAIL_FROM"] = facts.from
        env["RCPT_TO"] = facts.recipients.joined(separator: " ")
        env["AUTH_AS"] = facts.authenticatedAs ?? ""
        env["ON_TLS"] = facts.onTLS ? "1" : "0"
        env["SPF_PASS"] = facts.spfPass ? "1" : "0"
        env["FROM_LOCAL_DOMAIN"] = facts.fromLocalDomain ? "1" : "0"
        return env
    }

    public func run(message: [UInt8], facts: Facts) async -> Outcome {
        let outcome = await runHook(message: message, facts: facts)
        report(outcome)
        return outcome
    }

    /// As `run(message:facts:)`, reading the message only when there is a
    /// hook to give it to.
    public func run(facts: Facts, readingMessage read: () async throws -> [UInt8]) async throws -> Outcome {
        guard FileManager.default.fileExists(atPath: path) else {
            report(.skipped)
            return .skipped
        }
        return await run(message: try await read(), facts: facts)
    }

    /// Counts `post-data:{skip,fail,badoutput,success}` as chasquid does.
    private func report(_ outcome: Outcome) {
        let result: String
        switch outcome {
        case .skipped: result = "skip"
        case .accepted: result = "success"
        case .acceptedBadOutput(let output):
            result = "badoutput"
            // Quoted and cut short: the hook may echo what a client sent.
            let shown = goQuoted(String(decoding: output.prefix(200), as: UTF8.self))
            logger?.info(
                "post-data hook: output is not headers, so the message goes on without it (see docs/hooks.md): \(shown)\(output.count > 200 ? "..." : "")"
            )
        case .refused(let reply): result = "fail"; Trace.current?.error("post-data hook refused: \(reply.code) \(reply.text)")
        }
        metrics.count(MetricCatalog.postDataHookResults, "post-data:" + result)
        if result != "fail" { Trace.current?.log("post-data hook: \(result)") }
    }

    private func runHook(message: [UInt8], facts: Facts) async -> Outcome {
        guard FileManager.default.fileExists(atPath: path) else { return .skipped }
        let output: ChildProcess.Output
        do {
            output = try await ChildProcess.run(
                path, environment: environment(facts), workingDirectory: configDirectory, input: message,
                timeout: timeout)
        } catch {
            let reason = FileManager.default.isExecutableFile(atPath: path) ? "\(error)" : "hook is not executable"
            return .refused(Reply(451, "Error running post-data hook: \(reason)"))
        }
        guard output.succeeded else {
            let code = output.exitStatus == 20 ? 554 : 451
            return .refused(Reply(code, Self.lastCompleteLine(output.stdout) ?? "Post-data hook failed"))
        }
        return Self.looksLikeHeaders(output.stdout) ? .accepted(headers: output.stdout) : .acceptedBadOutput(output.stdout)
    }

    /// The last line that ends in a newline.
    static func lastCompleteLine(_ bytes: [UInt8]) -> String? {
        guard let lastNewline = bytes.lastIndex(of: UInt8(ascii: "\n")) else { return nil }
        let complete = bytes[..<lastNewline]
        let start = complete.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0
        let line = String(decoding: complete[start...], as: UTF8.self)
        return line.isEmpty ? nil : line
    }

    /// Empty, or: ends in "\n", no blank line, not just "\n", every line a
    /// header or a continuation (but not the first). Byte by byte, as
    /// chasquid checks: a CRLF is one `Character`, and split per `Character`
    /// a `\r\n\r\n` would hide a blank line.
    static func looksLikeHeaders(_ bytes: [UInt8]) -> Bool {
        if bytes.isEmpty { return true }
        guard bytes.last == UInt8(ascii: "\n"), bytes != [UInt8(ascii: "\n")] else { return false }
        let lines = bytes.dropLast().split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        for (index, line) in lines.enumerated() {
            guard let first = line.first else { return false }
            if first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") {
                if index == 0 { return false }
            } else if !line.contains(UInt8(ascii: ":")) {
                return false
            }
        }
        return true
    }
}
