import DKIM
import DurableFiles
import Instrumentation
import Normalization
import SMTPCore
import TestSupport
import Testing

@testable import ChasquidServer

/// DKIMStep reads the spool after the trace headers, in chunks of any
/// size: the header block and body it sees must be the message's, whatever
/// the split (inside a CRLF, at the blank line, with no body, with no
/// headers).
@Suite struct DKIMStepTests {
    static func step(chunkSize: Int, directory: TempDir) -> DKIMStep {
        var step = DKIMStep(
            keys: { _ in [] }, verifier: DKIMVerifier { _ in .records([]) },
            newSpool: { try SpoolFile(creating: directory.path + "/new-\(UInt64.random(in: 0...UInt64.max))") },
            metrics: .discarding, now: { 0 })
        step.chunkSize = chunkSize
        return step
    }

    static let messages = [
        "From: a@b\nSubject: x\n\tfolded\n\nbody line\n\n",
        "From: a@b\n\n",
        "From: a@b\nTo: c\n",
        "\nno headers at all\n",
        "X: \n\n\n\n",
    ]

    @Test(arguments: [1, 2, 3, 5, 7, 64])
    func everySplitGivesTheSameMessage(chunkSize: Int) throws {
        let directory = TempDir()
        let trace = "Received: from x\n\tby y\n"
        for text in Self.messages {
            let spool = try SpoolFile(creating: directory.path + "/spool-\(UInt64.random(in: 0...UInt64.max))")
            try spool.append(Array((trace + text).utf8))
            var body: [UInt8] = []
            let fields = try Self.step(chunkSize: chunkSize, directory: directory)
                .read(spool: spool, offset: trace.utf8.count) { body += $0 }
            let crlf = Array(text.replacingOccurrences(of: "\n", with: "\r\n").utf8)
            let whole = try DKIMMessage(crlf: crlf)
            #expect(fields.fields == whole.fields, "\(text.debugDescription) in chunks of \(chunkSize)")
            #expect(body == whole.body, "\(text.debugDescription) in chunks of \(chunkSize)")
            spool.discard()
        }
    }

    @Test func anUnsignedMessageGetsItsResultInPlace() async throws {
        let directory = TempDir()
        let step = Self.step(chunkSize: 4, directory: directory)
        let trace = TraceBlock(serverName: "mx", spf: nil, received: "Received: from x\n")
        let spool = try SpoolFile(creating: directory.path + "/unsigned")
        try spool.append(Array(trace.text.utf8))
        try spool.append(Array("From: a@b\n\nbody\n".utf8))
        let verified = try await step.verify(trace: trace, offset: trace.text.utf8.count, spool: spool)
        // A small spool is still in memory: its header is replaced there.
        #expect(verified === spool)
        #expect(
            try verified.contents()
                == Array("Authentication-Results: mx\r\n\t;dkim=none\nReceived: from x\nFrom: a@b\n\nbody\n".utf8))
        verified.discard()
    }

    @Test func onlyASignatureNeedsTheBody() throws {
        let verifier = DKIMVerifier { _ in .records([]) }
        let unsigned = try DKIMMessage(crlf: Array("From: a@b\r\n\r\nbody\r\n".utf8))
        #expect(!verifier.prepare(fields: unsigned).needsBody)
        let signed = try DKIMMessage(
            crlf: Array("DKIM-Signature: v=1; a=rsa-sha256; d=b; s=s; h=from; bh=AAAA; b=AAAA\r\nFrom: a@b\r\n\r\nbody\r\n".utf8))
        #expect(verifier.prepare(fields: signed).needsBody)
    }

    @Test func crlfConversionAcrossChunks() {
        var converter = CRLFConverter()
        let out = converter.convert(Array("a\n".utf8)[...]) + converter.convert(Array("\r".utf8)[...])
            + converter.convert(Array("\nb\n".utf8)[...])
        #expect(out == Array("a\r\n\r\nb\r\n".utf8))
    }

    @Test func headerEndIsFoundFromAnOffset() {
        let bytes = Array("A: b\r\n\r\nbody".utf8)
        #expect(DKIMStep.headerEnd(bytes) == 8)
        #expect(DKIMStep.headerEnd(bytes, from: 3) == 8)
        #expect(DKIMStep.headerEnd(Array("\r\nbody".utf8)) == 2)
        #expect(DKIMStep.headerEnd(Array("A: b\r\n".utf8)) == nil)
    }
}
