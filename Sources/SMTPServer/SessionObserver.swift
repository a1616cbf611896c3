import GoCompat
import Instrumentation
import Logging
import MailLog
import NIOCore
import SMTPCore

/// Turns a connection's session notes and I/O events into the daemon log
/// (the fail2ban lines), the mail log, metrics and the connection's trace.
struct SessionObserver {
    let mode: ListenerMode
    let remoteAddress: String
    let logger: Logger
    let mailLog: MailLog
    let metrics: ServerMetrics
    let trace: Trace
    /// The client's IP and the shared per-network budget for its log lines;
    /// nil budget: every line (tests).
    var remoteIP = ""
    var logBudget: ClientLogBudget? = nil

    /// A daemon-log line the client caused, within its network's budget.
    private func clientLine(_ line: String) {
        guard let logBudget else {
            logger.info("\(line)")
            return
        }
        guard case .log(let dropped) = logBudget.admit(ip: remoteIP) else { return }
        if dropped > 0 {
            // Not in the fail2ban form (no "error:"): a count, not an event.
            logger.info("SMTP.Conn \(remoteAddress): \(dropped) earlier line(s) from this client's network not logged (too many)")
        }
        logger.info("\(line)")
    }

    func opened() {
        metrics.adjust(MetricCatalog.openConnections, by: 1)
        trace.log("\(mode.rawValue) connection from \(remoteAddress)")
    }

    func closed(after duration: Duration) {
        metrics.adjust(MetricCatalog.openConnections, by: -1)
        metrics.record(MetricCatalog.smtpSessionDuration, mode.rawValue, duration: duration)
        trace.log("closed")
        trace.finish()
    }

    func connectionError(_ error: any Error) {
        trace.log("connection error: \(error)")
        logger.debug("SMTP.Conn \(remoteAddress): closed: \(error)")
    }

    func handshakeFailed(_ error: any Error) {
        metrics.count(MetricCatalog.tlsHandshakeFailures, mode.rawValue)
        trace.error("TLS handshake failed: \(error)")
    }

    func tlsEstablished(_ details: TLSDetails) {
        trace.log("TLS established: \(details.version), server name \(details.serverName ?? "(none)")")
    }

    /// A reply written: counted by code (unless chasquid does not count it), and traced.
    func sent(_ reply: Reply, counted: Bool) {
        guard counted else {
            trace.log("< \(reply.code) \(reply.text)")
            return
        }
        metrics.count(MetricCatalog.responseCodeCount, String(reply.code))
        if reply.isError {
            trace.error("< \(reply.code) \(reply.text)")
        } else {
            trace.log("< \(reply.code) \(reply.text)")
        }
    }

    func observe(_ note: SessionNote, registry: ConnectionRegistry, connection id: Int) {
        let prefix = "SMTP.Conn \(remoteAddress): error:"
        switch note {
        case .command(let command):
            trace.log("> " + command.traceText)
            count(command)
        case .authResponse:
            trace.log("> (AUTH response not shown)")
        case .failed(let command, let reply):
            // The fail2ban contract (COMPAT.md §11.5), Go-quoted without the
            // outer quotes (`unknown<\"X\">`).
            if Command.httpVerbs.contains(command.verb) {
                clientLine("\(prefix) http command, closing connection")
            } else if command.isTLSHandshake {
                // Not in the fail2ban form: a misconfigured client, not an attack.
                clientLine("SMTP.Conn \(remoteAddress): TLS handshake on a plain-text port (implicit TLS is port 465), closing connection")
            } else {
                clientLine("\(prefix) \(goQuotedInner("\(command.reportedVerb) failed: \(reply.code)  \(reply.text)"))")
            }
            if command.verb == "PROXY" {
                // A PROXY header where none is expected: a proxy in front
                // of a server configured without haproxy_incoming.
                clientLine("SMTP.Conn \(remoteAddress): PROXY header received, but haproxy_incoming is off")
            }
        case .rejected(let rejection):
            mailLog.rejected(remote: remoteAddress, from: rejection.from, to: rejection.to, reason: rejection.reason)
        case .tooManyErrors:
            trace.error("too many errors, breaking connection")
            clientLine("\(prefix) too many errors, breaking connection")
        case .authenticated(let user, let succeeded):
            mailLog.auth(remote: remoteAddress, user: user, succeeded: succeeded)
        case .dataStarted(let onTLS):
            metrics.count(MetricCatalog.incomingTLSCount, onTLS ? "tls" : "plain")
            registry.setInData(id, true)
        case .dataEnded:
            break  // Connection clears the registry's flag itself.
        case .loopDetected(let count):
            metrics.count(MetricCatalog.loopsDetected)
            trace.error("loop detected: \(count) Received headers")
        case .connectionLostDuringData:
            trace.error("connection lost during DATA")
        case .timedOut:
            trace.error("timed out waiting for a command")
        }
    }

    /// chasquid counts every command but QUIT, and HTTP verbs apart.
    private func count(_ command: Command) {
        if Command.httpVerbs.contains(command.verb) {
            metrics.count(MetricCatalog.wrongProtoCount, command.verb)
        } else if Command.knownVerbs.contains(command.verb) {
            if command.verb != "QUIT" { metrics.count(MetricCatalog.commandCount, command.verb) }
        } else {
            // The label comes from the client: bounded.
            metrics.count(
                MetricCatalog.commandCount, clientLabel: command.reportedVerb, overflow: Command.unknownVerbOverflow)
        }
    }
}
