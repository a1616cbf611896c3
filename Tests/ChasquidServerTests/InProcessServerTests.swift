import ChasquidConfig
import ChasquidServer
import ChildProcess
import Foundation
import Logging
import NIOCore
import NIOPosix
import SMTPClient
import SMTPServer
import Synchronization
import Testing

/// The whole server built in this process, as `main` builds it, on port 0:
/// a message in over SMTP, delivered through a pipe alias, then a clean
/// shutdown that returns from `run` with every socket closed.
@Suite struct InProcessServerTests {
    @Test func startSendAndShutDownCleanly() async throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("inprocess-\(UUID())").path + "/"
        defer { try? FileManager.default.removeItem(atPath: base) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: base + "domains/example.com", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: base + "certs/mx.example.com", withIntermediateDirectories: true)
        let openssl = try await ChildProcess.run(
            "/usr/bin/openssl",
            arguments: [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                "-subj", "/CN=mx.example.com", "-keyout", base + "certs/mx.example.com/privkey.pem",
                "-out", base + "certs/mx.example.com/fullchain.pem",
            ], mergeStderr: true, timeout: .seconds(30))
        #expect(openssl.succeeded, "\(String(decoding: openssl.stdout, as: UTF8.self))")
        let delivered = base + "delivered"
        try "cat > \(delivered)\n".write(toFile: base + "deliver.sh", atomically: true, encoding: .utf8)
        try "juan: | /bin/sh \(base)deliver.sh\n".write(
            toFile: base + "domains/example.com/aliases", atomically: true, encoding: .utf8)
        try """
            hostname: "mx.example.com"
            smtp_address: "127.0.0.1:0"
            submission_address: "127.0.0.1:0"
            submission_over_tls_address: "127.0.0.1:0"
            data_dir: "\(base)data"
            mail_log_path: "\(base)mail.log"
            """.write(toFile: base + "chasquid.conf", atomically: true, encoding: .utf8)
        let config = try Configuration.load(path: base + "chasquid.conf")
        var options = DaemonOptions()
        options.configDirectory = base
        options.dnsServer = "127.0.0.1:1"
        let daemon = try await Daemon(
            config: config, options: options, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
            baseDirectory: base)

        let (ports, portsSink) = AsyncStream<[Int]>.makeStream()
        let running = Task { try await daemon.run(onListening: { portsSink.yield($0.map(\.port)) }) }
        var iterator = ports.makeAsyncIterator()
        let bound = try #require(await iterator.next())
        #expect(bound.count == 3 && bound.allSatisfy { $0 > 0 })
        let smtp = try SocketAddress(ipAddress: "127.0.0.1", port: bound[0])

        let (client, greeting) = try await ClientConnection.connect(
            to: smtp, connectTimeout: .seconds(10), greetingTimeout: .seconds(10), sessionTimeout: .seconds(60))
        #expect(greeting.code == 220)
        #expect(try await client.command("EHLO client.example", timeout: .seconds(10)).code == 250)
        #expect(try await client.command("MAIL FROM:<>", timeout: .seconds(10)).code == 250)
        #expect(try await client.command("RCPT TO:<juan@example.com>", timeout: .seconds(10)).code == 250)
        #expect(try await client.command("DATA", timeout: .seconds(10)).code == 354)
        try await client.send(Array("Subject: in process\r\n\r\nhello\r\n.\r\n".utf8))
        #expect(try await client.readReply(timeout: .seconds(10)).code == 250)
        #expect(try await client.command("QUIT", timeout: .seconds(10)).code == 221)
        client.close()

        // Delivered through the queue and the pipe alias.
        var text = ""
        for _ in 0..<1000 where !text.contains("hello") {
            text = (try? String(contentsOfFile: delivered, encoding: .utf8)) ?? ""
            if !text.contains("hello") { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(text.contains("Subject: in process\n\nhello\n"), "\(text)")

        // A session left open gets the shutdown 421; then run returns.
        let (idle, _) = try await ClientConnection.connect(
            to: smtp, connectTimeout: .seconds(10), greetingTimeout: .seconds(10), sessionTimeout: .seconds(60))
        await daemon.shutdown(reason: "test")
        #expect(try await idle.readReply(timeout: .seconds(10)).code == 421)
        try await running.value
        #expect(daemon.isShuttingDown)
        // Nothing listens any more, on any port.
        for port in bound {
            await #expect(throws: (any Error).self) {
                _ = try await ClientConnection.connect(
                    to: try SocketAddress(ipAddress: "127.0.0.1", port: port), connectTimeout: .seconds(2),
                    greetingTimeout: .seconds(2), sessionTimeout: .seconds(5))
            }
        }
        let rpcAnswers = await socketAnswers(base + "data/localrpc-v1")
        #expect(!rpcAnswers, "the local RPC socket is closed")
    }

    /// Whether something accepts connections on the Unix socket.
    private func socketAnswers(_ path: String) async -> Bool {
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(unixDomainSocketPath: path).get()
            try? await channel.close()
            return true
        } catch {
            return false
        }
    }
}
