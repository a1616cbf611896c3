import ChasquidProto
import Foundation
import GoCompat
import GoErrors
import SwiftProtobuf

/// A configuration problem, with where it is: file, line and field when known.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public var path: String
    public var line: Int?
    public var field: String?
    public var message: String

    public init(path: String, line: Int? = nil, field: String? = nil, message: String) {
        self.path = path
        self.line = line
        self.field = field
        self.message = message
    }

    /// An error reading the file itself, in Go's form (`open
    /// c/chasquid.conf: no such file or directory`), as chasquid says it.
    public static func reading(_ path: String, operation: String = "open", errno: Int32) -> ConfigError {
        ConfigError(path: path, message: "\(operation) \(path): \(goErrnoText(errno))", isSystemError: true)
    }

    init(path: String, message: String, isSystemError: Bool) {
        self.init(path: path, message: message)
        self.isSystemError = isSystemError
    }

    var isSystemError = false

    /// chasquid's words after `Error loading config: ` (the daemon and
    /// chasquid-util say the same): `failed to read config at "<p>": <err>`
    /// for a file that could not be read, else `parsing config: <err>`.
    public var loadingDescription: String {
        isSystemError ? "failed to read config at \"\(path)\": \(message)" : "parsing config: \(self)"
    }

    public var description: String {
        if isSystemError { return message }
        var location = "\"\(path)\""
        if let line { location += " line \(line)" }
        if let field { return "\(location): field \"\(field)\": \(message)" }
        return "\(location): \(message)"
    }
}

/// Loading, layering and checking `chasquid.conf` (COMPAT.md §3).
public enum Configuration {
    /// The file's field names and their types, for the located checks.
    static let schema: [String: TextFormatCheck.FieldKind] = [
        "hostname": .string,
        "max_data_size_mb": .int64,
        "smtp_address": .repeatedString,
        "submission_address": .repeatedString,
        "submission_over_tls_address": .repeatedString,
        "monitoring_address": .string,
        "mail_delivery_agent_bin": .string,
        "mail_delivery_agent_args": .repeatedString,
        "data_dir": .string,
        "suffix_separators": .optionalString,
        "drop_characters": .optionalString,
        "mail_log_path": .string,
        "dovecot_auth": .bool,
        "dovecot_userdb_path": .string,
        "dovecot_client_path": .string,
        "haproxy_incoming": .bool,
        "max_queue_items": .uint32,
        "give_up_send_after": .string,
        "auth_failure_limit": .uint32,
        "max_connections": .uint32,
        "max_connections_per_ip": .uint32,
        "require_sender_match": .bool,
    ]

    /// `max_connections_per_ip` when the file does not set it.
    public static let defaultMaxConnectionsPerIP: UInt32 = 50

    /// `auth_failure_limit` when the file does not set it.
    public static let defaultAuthFailureLimit: UInt32 = 10

    public static let defaultMaxQueueItems: UInt32 = 200
    public static let defaultGiveUpSendAfter = "20h"

    /// chasquid's defaults, before the file. `hostname` is the caller's (the
    /// OS hostname), so tests need not depend on the machine.
    public static func defaults(hostname: String) -> Config {
        var c = Config()
        c.hostname = hostname
        c.maxDataSizeMb = 50
        c.smtpAddress = ["systemd"]
        c.submissionAddress = ["systemd"]
        c.submissionOverTlsAddress = ["systemd"]
        c.mailDeliveryAgentBin = "maildrop"
        c.mailDeliveryAgentArgs = ["-f", "%from%", "-d", "%to_user%"]
        c.dataDir = "/var/lib/chasquid"
        c.suffixSeparators = "+"
        c.dropCharacters = "."
        c.mailLogPath = "<syslog>"
        c.maxQueueItems = defaultMaxQueueItems
        c.giveUpSendAfter = defaultGiveUpSendAfter
        return c
    }

    /// Parses config text strictly: unknown fields, wrong types and repeated
    /// scalars are errors naming the line and the field. `path` is only used
    /// in messages.
    public static func parse(_ text: String, path: String) throws(ConfigError) -> (Config, fieldLines: [String: Int]) {
        let lines: [String: Int]
        do {
            lines = try TextFormatCheck(schema: schema).check(text)
        } catch {
            throw ConfigError(path: path, line: error.line, field: error.field, message: error.message)
        }
        do {
            return (try Config(textFormatString: text), lines)
        } catch {
            // The located check above accepts what swift-protobuf accepts, so
            // this is a value the check does not look into (an escape, say).
            throw ConfigError(path: path, message: "\(error)")
        }
    }

    /// Merges `layer` over `base`, chasquid's way: a field of `layer` counts
    /// only when it is "set" (non-empty string or list, number > 0, bool true,
    /// `optional` string present even if empty).
    public static func merge(_ layer: Config, over base: Config) -> Config {
        var c = base
        if !layer.hostname.isEmpty { c.hostname = layer.hostname }
        if layer.maxDataSizeMb > 0 { c.maxDataSizeMb = layer.maxDataSizeMb }
        if !layer.smtpAddress.isEmpty { c.smtpAddress = layer.smtpAddress }
        if !layer.submissionAddress.isEmpty { c.submissionAddress = layer.submissionAddress }
        if !layer.submissionOverTlsAddress.isEmpty { c.submissionOverTlsAddress = layer.submissionOverTlsAddress }
        if !layer.monitoringAddress.isEmpty { c.monitoringAddress = layer.monitoringAddress }
        if !layer.mailDeliveryAgentBin.isEmpty { c.mailDeliveryAgentBin = layer.mailDeliveryAgentBin }
        if !layer.mailDeliveryAgentArgs.isEmpty { c.mailDeliveryAgentArgs = layer.mailDeliveryAgentArgs }
        if !layer.dataDir.isEmpty { c.dataDir = layer.dataDir }
        if layer.hasSuffixSeparators { c.suffixSeparators = layer.suffixSeparators }
        if layer.hasDropCharacters { c.dropCharacters = layer.dropCharacters }
        if !layer.mailLogPath.isEmpty { c.mailLogPath = layer.mailLogPath }
        if layer.dovecotAuth { c.dovecotAuth = true }
        if !layer.dovecotUserdbPath.isEmpty { c.dovecotUserdbPath = layer.dovecotUserdbPath }
        if !layer.dovecotClientPath.isEmpty { c.dovecotClientPath = layer.dovecotClientPath }
        if layer.haproxyIncoming { c.haproxyIncoming = true }
        if layer.maxQueueItems > 0 { c.maxQueueItems = layer.maxQueueItems }
        if !layer.giveUpSendAfter.isEmpty { c.giveUpSendAfter = layer.giveUpSendAfter }
        // Ours: present counts, so 0 turns it off.
        if layer.hasAuthFailureLimit { c.authFailureLimit = layer.authFailureLimit }
        if layer.hasMaxConnections { c.maxConnections = layer.maxConnections }
        if layer.hasMaxConnectionsPerIp { c.maxConnectionsPerIp = layer.maxConnectionsPerIp }
        if layer.requireSenderMatch { c.requireSenderMatch = true }
        return c
    }

    /// Loads `path`: defaults, then the file, then `overrides` (text Config,
    /// the daemon's `-config_overrides`), then checks the result.
    public static func load(
        path: String,
        overrides: String = "",
        hostname: String? = nil
    ) throws(ConfigError) -> Config {
        let text = try readText(path)
        let (file, lines) = try parse(text, path: path)
        // chasquid silently ignores a negative size (only > 0 "sets" it); we
        // refuse it, since whoever wrote it meant something.
        if file.maxDataSizeMb < 0 {
            throw ConfigError(
                path: path, line: lines["max_data_size_mb"], field: "max_data_size_mb",
                message: "must not be negative (\(file.maxDataSizeMb))")
        }
        var config = merge(file, over: defaults(hostname: hostname ?? systemHostname()))
        var overrideLines: [String: Int] = [:]
        if !overrides.isEmpty {
            let (layer, oLines) = try parse(overrides, path: "-config_overrides")
            config = merge(layer, over: config)
            overrideLines = oLines
        }
        let fieldLines = lines.merging(overrideLines) { _, o in o }
        try validate(config, path: path, fieldLines: fieldLines)
        // chasquid falls back to the defaults when these end up unset or <= 0.
        if config.maxQueueItems == 0 { config.maxQueueItems = defaultMaxQueueItems }
        return config
    }

    /// The semantic checks: the parts a type alone cannot say is wrong.
    public static func validate(_ c: Config, path: String, fieldLines: [String: Int] = [:]) throws(ConfigError) {
        func fail(_ field: String, _ message: String) -> ConfigError {
            ConfigError(path: path, line: fieldLines[field], field: field, message: message)
        }
        if c.hostname.isEmpty { throw fail("hostname", "empty hostname, and the system's could not be read") }
        if c.maxDataSizeMb < 0 { throw fail("max_data_size_mb", "must not be negative (\(c.maxDataSizeMb))") }
        do {
            let ns = try GoDuration.parse(c.giveUpSendAfter)
            if ns <= 0 { throw fail("give_up_send_after", "invalid give_up_send_after value \"\(c.giveUpSendAfter)\": must be positive") }
        } catch let error as GoDuration.Error {
            throw fail("give_up_send_after", "invalid give_up_send_after value: \(error)")
        } catch {
            throw error as! ConfigError
        }
        // chasquid's words for it (COMPAT.md §3), located as ours are.
        for (field, addresses, mode) in [
            ("smtp_address", c.smtpAddress, "SMTP"), ("submission_address", c.submissionAddress, "submission"),
            ("submission_over_tls_address", c.submissionOverTlsAddress, "submission+TLS"),
        ] where addresses.contains("") {
            throw fail(field, "Invalid empty listening address for \(mode)")
        }
        // Checked here rather than at bind, so print-config and a reload see
        // the same mistake the daemon would refuse, with file and line.
        for (field, addresses) in [
            ("smtp_address", c.smtpAddress), ("submission_address", c.submissionAddress),
            ("submission_over_tls_address", c.submissionOverTlsAddress),
        ] {
            for address in addresses where address != "systemd" {
                if let problem = listeningAddressProblem(address) { throw fail(field, problem) }
            }
        }
        if !c.monitoringAddress.isEmpty, let problem = listeningAddressProblem(c.monitoringAddress) {
            throw fail("monitoring_address", problem)
        }
        if c.mailLogPath.isEmpty { throw fail("mail_log_path", "must not be empty") }
        // `<syslog` (a typo) would otherwise be a file of that name.
        if c.mailLogPath.hasPrefix("<") && !["<syslog>", "<stdout>", "<stderr>"].contains(c.mailLogPath) {
            throw fail(
                "mail_log_path",
                "unknown destination \"\(c.mailLogPath)\": use <syslog>, <stdout>, <stderr> or a file path")
        }
    }

    /// Why `address` is not `host:port` (or `:port`, `[v6]:port`), or nil.
    static func listeningAddressProblem(_ address: String) -> String? {
        guard let endpoint = HostPort(address) else {
            return "invalid listening address \"\(address)\": expected host:port with a port from 0 to 65535"
        }
        if endpoint.port == nil {
            let example = endpoint.host.contains(":") ? "[\(endpoint.host)]:25" : "\(endpoint.host):25"
            return "invalid listening address \"\(address)\": missing port (for example \"\(example)\")"
        }
        return nil
    }

    /// The whole file as text, or Go's `open <path>: <reason>`.
    static func readText(_ path: String) throws(ConfigError) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .reading(path, errno: errno) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .reading(path, operation: "read", errno: errno)
            }
            if n == 0 { break }
            bytes += buffer[..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// `give_up_send_after` as seconds.
    public static func giveUpSendAfterSeconds(_ c: Config) -> Double {
        let ns = (try? GoDuration.parse(c.giveUpSendAfter)) ?? 0
        return ns > 0 ? Double(ns) / 1e9 : 20 * 3600
    }

    /// The config as chasquid-util's `print-config` shows it: text format,
    /// one field a line, zero scalars omitted, `optional` strings shown even
    /// when empty, and a blank line at the end.
    public static func render(_ c: Config) -> String {
        c.textFormatString() + "\n"
    }

    /// The OS hostname, as chasquid uses it by default.
    public static func systemHostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
