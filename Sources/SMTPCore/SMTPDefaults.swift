/// Every limit of the SMTP server, in one place, with where it comes from.
public enum SMTPDefaults {
    /// Longest command line, terminator excluded (chasquid ≥1.2; RFC 5321
    /// §4.5.3.1.4 allows 512, but real clients send longer AUTH lines).
    public static let maxCommandLineLength = 1000
    /// Recipients accepted per message (chasquid refuses once it holds more than 100).
    public static let maxRecipients = 101
    /// Longest address in MAIL FROM / RCPT TO (RFC 5321 §4.5.3.1.3).
    public static let maxAddressLength = 256
    /// Replies ≥ 400 per connection: the third is replaced by 421 and the
    /// connection closes (chasquid ≥1.8) [SEC].
    public static let maxErrors = 3
    /// Each command read or reply write, and the TLS handshake plus greeting.
    public static let commandTimeout: Duration = .seconds(60)
    /// The whole connection, DATA included.
    public static let connectionTimeout: Duration = .seconds(20 * 60)
    /// An AUTH attempt takes at least this long, plus up to 20 % jitter.
    public static let authMinimumDuration: Duration = .milliseconds(100)
    /// More `Received` headers than this is a loop (chasquid's default;
    /// the daemon's `-testing__max_received_headers` changes it).
    public static let maxReceivedHeaders = 50
}
