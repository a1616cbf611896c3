/// One exported variable: its expvar name (COMPAT.md §19), the name of its
/// label if it is a map, and a help text for `/metrics`.
public struct MetricDefinition: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// An expvar int or map: untyped in `/metrics`, like expvarom's output.
        case counter
        /// A value that goes up and down (`# TYPE gauge`).
        case gauge
        /// Durations in seconds (`# TYPE histogram`).
        case histogram(bucketsInSeconds: [Double])
    }

    public let expvarName: String
    public let labelName: String?
    public let help: String
    public let kind: Kind

    public init(_ expvarName: String, label: String? = nil, kind: Kind = .counter, help: String) {
        self.expvarName = expvarName
        self.labelName = label
        self.help = help
        self.kind = kind
    }

    /// expvarom's conversion: every character outside `[A-Za-z0-9_]`
    /// becomes `_`, and a leading digit gets an `i` prefix.
    public var prometheusName: String { Self.prometheusName(expvarName) }

    public static func prometheusName(_ expvarName: String) -> String {
        var name = String(
            expvarName.unicodeScalars.map { scalar -> Character in
                scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || scalar == "_")
                    ? Character(scalar) : "_"
            })
        if let first = name.unicodeScalars.first, ("0"..."9").contains(first) { name = "i" + name }
        return name
    }
}

/// Every variable chasquid exports, under the names dashboards already use,
/// and the ones this build adds (snake_case, typed, as Prometheus prefers).
public enum MetricCatalog {
    // smtpIn: the SMTP server.
    public static let commandCount = MetricDefinition(
        "chasquid/smtpIn/commandCount", label: "command", help: "count of SMTP commands received, by command")
    public static let responseCodeCount = MetricDefinition(
        "chasquid/smtpIn/responseCodeCount", label: "code", help: "response codes returned to SMTP commands")
    public static let spfResultCount = MetricDefinition(
        "chasquid/smtpIn/spfResultCount", label: "result", help: "SPF result count")
    public static let loopsDetected = MetricDefinition(
        "chasquid/smtpIn/loopsDetected", help: "count of loops detected")
    public static let incomingTLSCount = MetricDefinition(
        "chasquid/smtpIn/tlsCount", label: "status", help: "count of TLS usage in incoming connections")
    public static let incomingSecurityLevelChecks = MetricDefinition(
        "chasquid/smtpIn/securityLevelChecks", label: "result", help: "incoming security level check results")
    public static let postDataHookResults = MetricDefinition(
        "chasquid/smtpIn/hookResults", label: "result", help: "count of hook invocations, by result")
    public static let wrongProtoCount = MetricDefinition(
        "chasquid/smtpIn/wrongProtoCount", label: "command", help: "count of commands for other protocols")
    // DKIM is not built yet; the variables exist at 0, as in chasquid.
    public static let dkimSigned = MetricDefinition("chasquid/smtpIn/dkimSigned", help: "count of successful DKIM signs")
    public static let dkimSignErrors = MetricDefinition(
        "chasquid/smtpIn/dkimSignErrors", help: "count of DKIM sign errors")
    public static let dkimVerifyFound = MetricDefinition(
        "chasquid/smtpIn/dkimVerifyFound", help: "count of messages with at least one DKIM signature")
    public static let dkimVerifyNotFound = MetricDefinition(
        "chasquid/smtpIn/dkimVerifyNotFound", help: "count of messages with no DKIM signatures")
    public static let dkimVerifyValid = MetricDefinition(
        "chasquid/smtpIn/dkimVerifyValid", help: "count of messages with at least one valid DKIM signature")
    public static let dkimVerifyErrors = MetricDefinition(
        "chasquid/smtpIn/dkimVerifyErrors", help: "count of DKIM verification errors")

    // aliases.
    public static let aliasHookResults = MetricDefinition(
        "chasquid/aliases/hookResults", label: "result", help: "count of hook invocations, by result")

    // queue.
    public static let putCount = MetricDefinition("chasquid/queue/putCount", help: "count of envelopes attempted to be put in the queue")
    public static let itemsWritten = MetricDefinition("chasquid/queue/itemsWritten", help: "count of items the queue wrote to disk")
    public static let dsnQueued = MetricDefinition("chasquid/queue/dsnQueued", help: "count of DSNs that we generated (queued)")
    public static let deliverAttempts = MetricDefinition(
        "chasquid/queue/deliverAttempts", label: "recipient_type", help: "attempts to deliver mail, by recipient type")

    // smtpOut: remote delivery.
    public static let outgoingTLSCount = MetricDefinition(
        "chasquid/smtpOut/tlsCount", label: "result", help: "count of TLS status on outgoing connections")
    public static let outgoingSecurityLevelChecks = MetricDefinition(
        "chasquid/smtpOut/securityLevelChecks", label: "result", help: "count of security level checks on outgoing connections")

    public static let stsModes = MetricDefinition(
        "chasquid/smtpOut/sts/mode", label: "mode", help: "count of STS checks on outgoing connections")
    public static let stsSecurity = MetricDefinition(
        "chasquid/smtpOut/sts/security", label: "result", help: "count of STS security checks on outgoing connections")

    // sts/cache: chasquid's MTA-STS policy cache counters, by event.
    public static let stsCache: [String: MetricDefinition] = Dictionary(
        uniqueKeysWithValues: [
            "fetches", "hits", "expired", "ioErrors", "failedFetch", "invalid", "marshalErrors", "unmarshalErrors",
            "refreshCycles", "refreshes", "refreshErrors",
        ].map { ($0, MetricDefinition("chasquid/sts/cache/\($0)", help: "STS policy cache: \($0)")) })

    public static let sourceDateTimestamp = MetricDefinition(
        "chasquid/sourceDateTimestamp", kind: .gauge, help: "timestamp when the binary was built, in seconds since epoch")

    // Added by this build.
    public static let openConnections = MetricDefinition(
        "chasquid/smtp_in_open_connections", kind: .gauge, help: "SMTP connections open now")
    public static let tlsHandshakeFailures = MetricDefinition(
        "chasquid/smtpIn/tlsHandshakeFailures", label: "listener",
        help: "count of failed TLS handshakes (STARTTLS or implicit TLS), by listener mode")
    public static let queueLength = MetricDefinition(
        "chasquid/queue_items", kind: .gauge, help: "messages in the queue now")
    public static let deliveryDuration = MetricDefinition(
        "chasquid/delivery_attempt_duration_seconds", label: "recipient_type",
        kind: .histogram(bucketsInSeconds: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]),
        help: "time one delivery attempt took, by recipient type")
    public static let smtpSessionDuration = MetricDefinition(
        "chasquid/smtp_in_session_duration_seconds", label: "mode",
        kind: .histogram(bucketsInSeconds: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]),
        help: "how long incoming SMTP connections lasted, by listener mode")

    public static let all: [MetricDefinition] = [
        commandCount, responseCodeCount, spfResultCount, loopsDetected, incomingTLSCount, incomingSecurityLevelChecks,
        postDataHookResults, wrongProtoCount, dkimSigned, dkimSignErrors, dkimVerifyFound, dkimVerifyNotFound,
        dkimVerifyValid, dkimVerifyErrors, aliasHookResults, putCount, itemsWritten, dsnQueued, deliverAttempts,
        outgoingTLSCount, outgoingSecurityLevelChecks, sourceDateTimestamp, openConnections, tlsHandshakeFailures,
        queueLength, deliveryDuration, smtpSessionDuration, stsModes, stsSecurity,
    ] + stsCache.values.sorted { $0.expvarName < $1.expvarName }

    /// Looks a definition up by its Prometheus name.
    public static let byPrometheusName: [String: MetricDefinition] = Dictionary(
        uniqueKeysWithValues: all.map { ($0.prometheusName, $0) })
}
