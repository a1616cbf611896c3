import ChildProcess
import Foundation

import Testing

@testable import ChasquidServer
@testable import SMTPServer
@testable import SMTPCore

@Suite struct PostDataHookOutputTests {
    @Test(arguments: [
        ("", true), ("X-A: b\n", true), ("X-A: b\n\tcontinued\nX-C: d\n", true), ("X-A: b", false),
        ("\n", false), ("X-A: b\n\nX-C: d\n", false), (" X-A: b\n", false), ("not a header\n", false),
        // A CRLF is one Character: the blank line in it still counts.
        ("X-A: b\r\n\r\nX-C: d\n", false), ("X-A: b\r\n\r\n", false), ("X-A: b\r\nX-C: d\r\n", true),
    ])
    func looksLikeHeaders(output: String, expected: Bool) {
        #expect(PostDataHook.looksLikeHeaders(Array(output.utf8)) == expected)
    }

    @Test func lastCompleteLine() {
        #expect(PostDataHook.lastCompleteLine(Array("a\nb\n".utf8)) == "b")
        #expect(PostDataHook.lastCompleteLine(Array("a\nb".utf8)) == "a")
        #expect(PostDataHook.lastCompleteLine(Array("no newline".utf8)) == nil)
    }

    func script(_ body: String) throws -> String {
        let path = NSTemporaryDirectory() + "post-data-" + UUID().uuidString
        try ("#!/bin/sh\n" + body + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return path
    }

    let facts = PostDataHook.Facts(
        remoteAddress: "[::1]:4242", ehloDomain: "bad host;name", from: "a@b.com", recipients: ["x@y.com", "z@y.com"],
        authenticatedAs: nil, onTLS: true, spfPass: false, fromLocalDomain: false)

    @Test func environmentAndOutcomes() async throws {
        let dir = NSTemporaryDirectory()
        let env = try script("env | sort; cat >/dev/null")
        let hook = PostDataHook(path: env, configDirectory: dir)
        guard case .acceptedBadOutput = await hook.run(message: Array("m\n".utf8), facts: facts) else {
            Issue.record("env output is not headers")
            return
        }
        let lines = Set(
            String(
                decoding: try await ChildProcess.run(
                    env, environment: hook.environment(facts), workingDirectory: dir, timeout: .seconds(10)
                ).stdout, as: UTF8.self
            ).split(separator: "\n").map(String.init))
        #expect(lines.contains("REMOTE_ADDR=[::1]:4242"))
        #expect(lines.contains("EHLO_DOMAIN=badhostname"))
        #expect(lines.contains("EHLO_DOMAIN_RAW=bad host;name"))
        #expect(lines.contains("RCPT_TO=x@y.com z@y.com"))
        #expect(lines.contains("ON_TLS=1") && lines.contains("SPF_PASS=0") && lines.contains("AUTH_AS="))
        #expect(lines.contains("PWD=\(dir)"))
        #expect(!lines.contains { $0.hasPrefix("HOME=") })

        let headers = PostDataHook(path: try script("cat >/dev/null; echo 'X-Spam: no'"), configDirectory: dir)
        #expect(await headers.run(message: [], facts: facts) == .accepted(headers: Array("X-Spam: no\n".utf8)))
        let permanent = PostDataHook(path: try script("echo first; echo go away; exit 20"), configDirectory: dir)
        #expect(await permanent.run(message: [], facts: facts) == .refused(Reply(554, "go away")))
        let temporary = PostDataHook(path: try script("echo later; exit 75"), configDirectory: dir)
        #expect(await temporary.run(message: [], facts: facts) == .refused(Reply(451, "later")))
        let missing = PostDataHook(path: dir + "/nonexistent-hook", configDirectory: dir)
        #expect(await missing.run(message: [], facts: facts) == .skipped)
    }
}

@Suite struct TraceHeaderTests {
    @Test func spfHeadersFoldAuthenticationResultsWithCRLF() {
        #expect(
            TraceHeaders.spf(SPFVerdict(result: "pass", reason: "matched ip"), serverName: "mx.example.com")
                == "Authentication-Results: mx.example.com\r\n\t;spf=pass (matched ip)\nReceived-SPF: pass (matched ip)\n")
        #expect(
            TraceHeaders.spf(SPFVerdict(result: "none", reason: nil), serverName: "h")
                == "Authentication-Results: h\r\n\t;spf=none (<nil>)\nReceived-SPF: none (<nil>)\n")
    }

    @Test func receivedForAPlainUnauthenticatedClient() {
        var info = SessionInfo(
            mode: .smtp, serverName: "mx.example.com", onTLS: false, ehloDomain: "client.example.org", usedEHLO: true,
            authenticatedAs: nil, authenticatedUser: nil, authenticatedDomain: nil)
        let date = Date(timeIntervalSince1970: 0)
        let header = TraceHeaders.received(session: info, remoteIP: "192.0.2.1", tlsVersion: nil, envelopeFrom: "a\"b@c", date: date)
        #expect(header.hasPrefix("Received: from client.example.org ([192.0.2.1])\n\tby mx.example.com (chasquid) with ESMTP\n"))
        #expect(header.contains("\t(over SMTP, plain text!, envelope from \"a\\\"b@c\")\n"))
        #expect(header.hasSuffix("\t; Thu, 01 Jan 1970 00:00:00 +0000\n"))

        info.onTLS = true
        info.authenticatedAs = "u@d"
        info.mode = .submission
        let authenticated = TraceHeaders.received(session: info, remoteIP: "::1", tlsVersion: "TLS-1.3", envelopeFrom: "u@d", date: date)
        // The IP of an authenticated client is not shown.
        #expect(authenticated.hasPrefix("Received: from client.example.org\n\tby mx.example.com (chasquid) with ESMTPSA\n"))
        #expect(authenticated.contains("(over submission, TLS-1.3, envelope from \"u@d\")"))
        info.authenticatedAs = nil
        let v6 = TraceHeaders.received(session: info, remoteIP: "::1", tlsVersion: "TLS-1.2", envelopeFrom: "u@d", date: date)
        #expect(v6.hasPrefix("Received: from client.example.org ([IPv6:::1])\n"))
    }
}
