/// What a `Session` asks its connection to do, in order. The connection
/// performs each one and reports back only through the session's events.
public enum SessionAction: Equatable, Sendable {
    /// Write these replies together (pipelined replies go out in one write).
    /// They count toward the response-code metrics.
    case send([Reply])
    /// Write one reply chasquid does not count among the response codes:
    /// the greeting, "line too long", the timeout and shutdown 421s.
    case sendUncounted(Reply)
    /// Write the 220, then start the TLS handshake; nothing read until the
    /// handshake ends is a command [SEC].
    case startTLS(Reply)
    /// Create the spool for a new message and write `headers` (SPF and
    /// `Received:`, LF line ends) first.
    case openSpool(headers: [UInt8])
    /// Append message bytes (LF line ends, dots unstuffed) to the spool.
    case append([UInt8])
    /// Throw the spool away.
    case discardSpool
    /// Hand the spool with this envelope to the sink; report its reply with
    /// `delivered(_:policy:)`, or a spool that could not be written with
    /// `spoolFailed(_:policy:)`. Nothing is read meanwhile.
    case deliver(Envelope)
    /// Close the connection.
    case close
    /// Something worth a log line, a metric or a trace event.
    case note(SessionNote)
}

/// What happened in the session, for the mail log, the fail2ban lines,
/// metrics and traces. Notes never change what is sent.
public enum SessionNote: Equatable, Sendable {
    /// A command line was read (never an AUTH response).
    case command(Command)
    /// An AUTH response was read; it is a credential and is not shown.
    case authResponse
    /// `command` failed with `reply` (before the error budget replaced it).
    case failed(Command, Reply)
    /// The failure was a policy refusal the mail log records.
    case rejected(Rejection)
    /// The error budget is spent: the client gets a 421 and is dropped.
    case tooManyErrors
    /// An AUTH attempt ended: `user` is `user@domain` as given or as normalised.
    case authenticated(user: String, succeeded: Bool)
    /// DATA's 354 was sent; the message block follows.
    case dataStarted(onTLS: Bool)
    /// The DATA transaction is over (stored, refused or broken).
    case dataEnded
    /// The message had more `Received:` headers than allowed.
    case loopDetected(receivedHeaders: Int)
    /// The client went away in the middle of DATA.
    case connectionLostDuringData
    /// The client sent nothing for too long.
    case timedOut
}
