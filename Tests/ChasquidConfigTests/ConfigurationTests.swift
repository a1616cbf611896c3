import ChasquidProto
import Foundation
import Testing

@testable import ChasquidConfig

@Suite struct DefaultsTests {
    let d = Configuration.defaults(hostname: "host.example")

    @Test func everyDefaultMatchesChasquid() {
        #expect(d.hostname == "host.example")
        #expect(d.maxDataSizeMb == 50)
        #expect(d.smtpAddress == ["systemd"])
        #expect(d.submissionAddress == ["systemd"])
        #expect(d.submissionOverTlsAddress == ["systemd"])
        #expect(d.monitoringAddress == "")
        #expect(d.mailDeliveryAgentBin == "maildrop")
        #expect(d.mailDeliveryAgentArgs == ["-f", "%from%", "-d", "%to_user%"])
        #expect(d.dataDir == "/var/lib/chasquid")
        #expect(d.hasSuffixSeparators && d.suffixSeparators == "+")
        #expect(d.hasDropCharacters && d.dropCharacters == ".")
        #expect(d.mailLogPath == "<syslog>")
        #expect(d.dovecotAuth == false)
        #expect(d.dovecotUserdbPath == "")
        #expect(d.dovecotClientPath == "")
        #expect(d.haproxyIncoming == false)
        #expect(d.maxQueueItems == 200)
        #expect(d.giveUpSendAfter == "20h")
    }

    @Test func theSystemHostnameIsReadable() {
        #expect(!Configuration.systemHostname().isEmpty)
    }
}

@Suite struct ParsingTests {
    /// Every field, set in the file, ends up in the effective config.
    @Test func everyFieldIsRead() throws {
        let text = """
            # A full config, in the syntax variants Go writes and accepts.
            hostname: "mx.example.org"
            max_data_size_mb:  0x20
            smtp_address: ":1025"
            smtp_address: "[::1]:1025"
            submission_address: [":1587", '127.0.0.1:2587']
            submission_over_tls_address: ":1465";
            monitoring_address: "localhost:1099"
            mail_delivery_agent_bin: "/usr/bin/procmail"
            mail_delivery_agent_args: "-d" mail_delivery_agent_args: "%to%"
            data_dir: "/tmp/" "chasquid"
            suffix_separators: "-+"
            drop_characters: ""
            mail_log_path: "<stdout>"
            dovecot_auth: true
            dovecot_userdb_path: "/run/dovecot/auth-userdb"
            dovecot_client_path: "/run/dovecot/auth-client"
            haproxy_incoming: True
            max_queue_items: 017
            give_up_send_after: "1h30m"
            """
        let (file, lines) = try Configuration.parse(text, path: "c.conf")
        let c = Configuration.merge(file, over: Configuration.defaults(hostname: "h"))
        #expect(c.hostname == "mx.example.org")
        #expect(c.maxDataSizeMb == 32)
        #expect(c.smtpAddress == [":1025", "[::1]:1025"])
        #expect(c.submissionAddress == [":1587", "127.0.0.1:2587"])
        #expect(c.submissionOverTlsAddress == [":1465"])
        #expect(c.monitoringAddress == "localhost:1099")
        #expect(c.mailDeliveryAgentBin == "/usr/bin/procmail")
        #expect(c.mailDeliveryAgentArgs == ["-d", "%to%"])
        #expect(c.dataDir == "/tmp/chasquid")
        #expect(c.suffixSeparators == "-+")
        #expect(c.hasDropCharacters && c.dropCharacters == "")
        #expect(c.mailLogPath == "<stdout>")
        #expect(c.dovecotAuth)
        #expect(c.dovecotUserdbPath == "/run/dovecot/auth-userdb")
        #expect(c.dovecotClientPath == "/run/dovecot/auth-client")
        #expect(c.haproxyIncoming)
        #expect(c.maxQueueItems == 15)
        #expect(c.giveUpSendAfter == "1h30m")
        #expect(lines["hostname"] == 2)
        #expect(lines["give_up_send_after"] == 20)
    }

    @Test(arguments: [
        ("hostname: \"a\"\nbogus: 1\n", 2, "bogus", "unknown field"),
        ("max_data_size_mb: \"10\"", 1, "max_data_size_mb", "expected a int64 value"),
        ("\n\nhostname: 5", 3, "hostname", "expected a string value"),
        ("dovecot_auth: yes", 1, "dovecot_auth", "expected a bool value"),
        ("max_queue_items: -1", 1, "max_queue_items", "out of range"),
        ("max_queue_items: 4294967296", 1, "max_queue_items", "out of range"),
        ("hostname: [\"a\"]", 1, "hostname", "only valid for a repeated field"),
        ("hostname: \"a\"\nhostname: \"b\"", 2, "hostname", "more than once"),
        ("data_dir { }", 1, "data_dir", "used as a message"),
        ("max_data_size_mb: 1.5", 1, "max_data_size_mb", "expected an integer"),
    ])
    func malformedLinesNameTheLineAndField(text: String, line: Int, field: String, message: String) {
        #expect {
            try Configuration.parse(text, path: "/etc/chasquid/chasquid.conf")
        } throws: { error in
            let e = error as! ConfigError
            return e.line == line && e.field == field && e.message.contains(message)
                && e.description.hasPrefix("\"/etc/chasquid/chasquid.conf\" line \(line): field \"\(field)\"")
        }
    }

    @Test func anUnterminatedStringNamesItsLine() {
        #expect(throws: ConfigError(path: "p", line: 2, field: nil, message: "unterminated string")) {
            try Configuration.parse("hostname: \"a\"\ndata_dir: \"/x\n", path: "p")
        }
    }
}

@Suite struct LayeringTests {
    @Test func onlySetFieldsOverride() throws {
        var base = Configuration.defaults(hostname: "h")
        base.dovecotAuth = true
        let (layer, _) = try Configuration.parse(
            "max_data_size_mb: 0\nsmtp_address: []\ndovecot_auth: false\nhostname: \"\"", path: "p")
        let merged = Configuration.merge(layer, over: base)
        // Zero, empty and false never count as set.
        #expect(merged.maxDataSizeMb == 50)
        #expect(merged.smtpAddress == ["systemd"])
        #expect(merged.dovecotAuth == true)
        #expect(merged.hostname == "h")
    }

    @Test func anOptionalStringSetToEmptyDisablesTheFeature() throws {
        let (layer, _) = try Configuration.parse("suffix_separators: \"\"", path: "p")
        let merged = Configuration.merge(layer, over: Configuration.defaults(hostname: "h"))
        #expect(merged.suffixSeparators == "")
        #expect(merged.hasSuffixSeparators)
        #expect(merged.dropCharacters == ".")
    }

    @Test func aRepeatedFieldIsReplacedWhole() throws {
        let (layer, _) = try Configuration.parse("mail_delivery_agent_args: \"x\"", path: "p")
        #expect(Configuration.merge(layer, over: Configuration.defaults(hostname: "h")).mailDeliveryAgentArgs == ["x"])
    }

    @Test func overridesComeLast() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/chasquid.conf"
        try "hostname: \"file\"\nmax_data_size_mb: 7\n".write(toFile: path, atomically: true, encoding: .utf8)
        let c = try Configuration.load(path: path, overrides: "hostname: \"override\"", hostname: "os")
        #expect(c.hostname == "override")
        #expect(c.maxDataSizeMb == 7)
        let noFileHostname = try Configuration.load(path: path, hostname: "os")
        #expect(noFileHostname.hostname == "file")
    }
}

@Suite struct ValidationTests {
    func load(_ text: String) throws -> Config {
        let dir = try temporaryDirectory()
        let path = dir + "/chasquid.conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return try Configuration.load(path: path, hostname: "h")
    }

    @Test func aBadDurationNamesTheField() {
        #expect {
            try load("hostname: \"x\"\ngive_up_send_after: \"3d\"\n")
        } throws: { error in
            let e = error as! ConfigError
            return e.line == 2 && e.field == "give_up_send_after" && e.message.contains("invalid give_up_send_after value")
        }
    }

    @Test func aNegativeSizeIsRefused() {
        #expect {
            try load("max_data_size_mb: -5")
        } throws: { error in
            let e = error as! ConfigError
            return e.line == 1 && e.field == "max_data_size_mb" && e.message.contains("negative")
        }
    }

    @Test func anEmptyListeningAddressIsRefused() {
        #expect {
            try load("submission_address: [\":587\", \"\"]")
        } throws: { error in
            (error as! ConfigError).field == "submission_address"
        }
    }

    @Test(arguments: [
        ("smtp_address: \"127.0.0.1\"", "smtp_address", "invalid listening address \"127.0.0.1\": missing port (for example \"127.0.0.1:25\")"),
        ("submission_address: \"::1\"", "submission_address", "invalid listening address \"::1\": missing port (for example \"[::1]:25\")"),
        ("submission_address: \"[::1]\"", "submission_address", "invalid listening address \"[::1]\": missing port (for example \"[::1]:25\")"),
        ("submission_over_tls_address: \"127.0.0.1:25252525\"", "submission_over_tls_address",
         "invalid listening address \"127.0.0.1:25252525\": expected host:port with a port from 0 to 65535"),
        ("monitoring_address: \"[::1\"", "monitoring_address", "invalid listening address \"[::1\": expected host:port with a port from 0 to 65535"),
        ("mail_log_path: \"<syslog\"", "mail_log_path", "unknown destination \"<syslog\": use <syslog>, <stdout>, <stderr> or a file path"),
    ])
    func listeningAddressesAndLogDestinationsAreChecked(line: String, field: String, message: String) {
        #expect(throws: ConfigError(path: "", line: 2, field: field, message: message)) {
            do {
                _ = try load("hostname: \"x\"\n" + line + "\n")
            } catch var error as ConfigError {
                error.path = ""
                throw error
            }
        }
    }

    @Test func goodAddressesAndDestinationsPass() throws {
        let c = try load(
            "smtp_address: [\":25\", \"systemd\", \"[::1]:2525\"]\nmonitoring_address: \"localhost:1099\"\n"
                + "mail_log_path: \"<stderr>\"\n")
        #expect(c.smtpAddress == [":25", "systemd", "[::1]:2525"])
    }

    /// Our own field: present counts, so 0 is kept (it turns the limit off).
    @Test func authFailureLimitIsKeptEvenAtZero() throws {
        #expect(try !load("hostname: \"x\"\n").hasAuthFailureLimit)
        let off = try load("auth_failure_limit: 0\n")
        #expect(off.hasAuthFailureLimit && off.authFailureLimit == 0)
        #expect(try load("auth_failure_limit: 3\n").authFailureLimit == 3)
        #expect(Configuration.render(off).contains("auth_failure_limit: 0"))
        #expect {
            try load("auth_failure_limit: -1\n")
        } throws: { error in
            (error as! ConfigError).field == "auth_failure_limit"
        }
    }

    @Test func requireSenderMatchIsOffUnlessSet() throws {
        #expect(try !load("hostname: \"x\"\n").requireSenderMatch)
        let on = try load("require_sender_match: true\n")
        #expect(on.requireSenderMatch)
        #expect(Configuration.render(on).contains("require_sender_match: true"))
    }

    @Test func zeroQueueItemsFallsBackToTheDefault() throws {
        #expect(try load("max_queue_items: 0").maxQueueItems == 200)
    }

    @Test func aMissingFileIsReported() {
        #expect {
            try Configuration.load(path: "/nonexistent/chasquid.conf", hostname: "h")
        } throws: { error in
            // Go's form, as chasquid says it.
            "\(error)" == "open /nonexistent/chasquid.conf: no such file or directory"
        }
    }

    @Test func giveUpSendAfterInSeconds() throws {
        #expect(Configuration.giveUpSendAfterSeconds(try load("give_up_send_after: \"1m30s\"")) == 90)
    }
}

@Suite struct RenderTests {
    @Test func renderedConfigReadsBackTheSame() throws {
        var c = Configuration.defaults(hostname: "mx")
        c.suffixSeparators = ""
        let text = Configuration.render(c)
        #expect(text.hasSuffix("\n\n"))
        #expect(text.contains("suffix_separators: \"\"\n"))
        #expect(text.contains("max_queue_items: 200\n"))
        #expect(!text.contains("dovecot_auth"))
        let (back, _) = try Configuration.parse(text, path: "p")
        #expect(back == c)
    }
}

func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "chasquid-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}
