import DKIM
import DurableFiles
import Foundation
import Instrumentation
import Normalization
import SMTPCore

/// DKIM at the end of DATA (COMPAT.md §12.3, docs/dkim.md): mail from an
/// authenticated client is signed with every key of its MAIL FROM domain;
/// all other mail is verified (never refused for it), and the results join
/// Authentication-Results.
///
/// The spool written during DATA starts with the session's trace headers.
/// The message after them is read in chunks, so a large one is never held
/// whole; when headers change, a new spool is written (the trace headers
/// rebuilt, the data copied in chunks) and the old one discarded.
struct DKIMStep: Sendable {
    /// The keys of a (normalised) domain.
    let keys: @Sendable (String) -> [DKIMKey]
    let verifier: DKIMVerifier
    let newSpool: @Sendable () throws -> SpoolFile
    let metrics: ServerMetrics
    let now: @Sendable () -> Int
    /// How much of the spool is read at a time (tests use tiny ones).
    var chunkSize = 256 * 1024

    /// A header block larger than this is not DKIM-processed (no message
    /// chasquid accepts comes near it; it bounds what is held).
    static let maximumHeaderBytes = 4 << 20

    struct SigningFailed: Error, CustomStringConvertible {
        var description: String
    }

    func run(envelope: Envelope, authenticated: Bool, spool: SpoolFile) async throws -> SpoolFile {
        guard let trace = envelope.trace else { return spool }
        let offset = trace.text.utf8.count
        if authenticated {
            let signers = keys(Address.domain(of: envelope.from))
            guard !signers.isEmpty else { return spool }
            let domain = Address.domain(of: envelope.from)
            return try await spool.accessing {
                try sign(domain: domain, keys: signers, trace: trace, offset: offset, spool: spool)
            }
        }
        return try await verify(trace: trace, offset: offset, spool: spool)
    }

    // MARK: - Signing

    func sign(domain: String, keys: [DKIMKey], trace: TraceBlock, offset: Int, spool: SpoolFile) throws -> SpoolFile {
        let fields: DKIMMessage
        var hasher = DKIMBodyHasher(canonicalization: .relaxed)
        do {
            fields = try read(spool: spool, offset: offset) { hasher.feed($0) }
        } catch {
            metrics.count(MetricCatalog.dkimSignErrors)
            throw SigningFailed(description: "\(error)")
        }
        let bodyHash = hasher.finish()
        var signatures = ""
        for key in keys {
            do {
                let value = try DKIMSigner(domain: domain, key: key).sign(fields: fields, relaxedBodyHash: bodyHash, now: now())
                // The last key's signature on top, as chasquid adds them.
                signatures = "DKIM-Signature: " + value.replacingOccurrences(of: "\r\n", with: "\n\t") + "\n" + signatures
            } catch {
                metrics.count(MetricCatalog.dkimSignErrors)
                throw SigningFailed(description: "\(error)")
            }
        }
        metrics.count(MetricCatalog.dkimSigned)
        return try rewrite(spool: spool, offset: offset, header: trace.text + signatures)
    }

    // MARK: - Verification

    func verify(trace: TraceBlock, offset: Int, spool: SpoolFile) async throws -> SpoolFile {
        let result: DKIMVerifier.Result?
        do {
            var verification = try await spool.accessing {
                var verification: DKIMVerifier.Verification?
                _ = try read(spool: spool, offset: offset, needsBody: { verification?.needsBody ?? true }) { chunk in
                    verification?.feedBody(chunk)
                } onHeader: { fields in
                    verification = verifier.prepare(fields: fields)
                }
                return verification
            }
            result = await verification?.finish()
        } catch {
            // A header block DKIM cannot read: no DKIM result, as chasquid
            // (which checked the message before) would have none.
            metrics.count(MetricCatalog.dkimVerifyErrors)
            result = nil
        }
        guard let result else { return spool }
        metrics.count(result.found > 0 ? MetricCatalog.dkimVerifyFound : MetricCatalog.dkimVerifyNotFound)
        if result.valid > 0 { metrics.count(MetricCatalog.dkimVerifyValid) }
        let authentication =
            TraceHeaders.authenticationResults(
                serverName: trace.serverName, spf: trace.spf, dkim: result.authenticationResults) ?? ""
        let header = authentication + (trace.spf.map(TraceHeaders.receivedSPF) ?? "") + trace.received
        return try await spool.accessing { try rewrite(spool: spool, offset: offset, header: header) }
    }

    // MARK: - Reading and rewriting

    /// Ends a read once the header is all that is needed.
    private struct HeaderRead: Error {}

    struct HeaderTooLarge: Error, CustomStringConvertible {
        var description: String { "header block larger than \(DKIMStep.maximumHeaderBytes) bytes" }
    }

    /// Reads the message after `offset` in CRLF form: the header block is
    /// parsed (and given to `onHeader`) as soon as it is whole, the body
    /// goes to `body` in chunks.
    /// `needsBody` is asked once the header is parsed: false stops the read
    /// there (a message with no signature to verify is not hashed).
    @discardableResult
    func read(
        spool: SpoolFile, offset: Int, needsBody: () -> Bool = { true }, body: (ArraySlice<UInt8>) -> Void,
        onHeader: (DKIMMessage) -> Void = { _ in }
    ) throws -> DKIMMessage {
        var converter = CRLFConverter()
        var header: [UInt8] = []
        var fields: DKIMMessage?
        func take(_ crlf: [UInt8]) throws {
            if fields != nil {
                body(crlf[...])
                return
            }
            // The header block ends at the first empty line; only the new
            // bytes (and the three before them) are searched each time.
            let searchFrom = max(0, header.count - 3)
            header += crlf
            if let end = Self.headerEnd(header, from: searchFrom) {
                let parsed = try DKIMMessage(crlf: Array(header[..<end]))
                fields = parsed
                onHeader(parsed)
                guard needsBody() else { throw HeaderRead() }
                if end < header.count { body(header[end...]) }
                header = []
            } else if header.count > Self.maximumHeaderBytes {
                throw HeaderTooLarge()
            }
        }
        do {
            try spool.read(from: offset, chunkSize: chunkSize) { chunk in try take(converter.convert(chunk)) }
        } catch is HeaderRead {
            return fields!
        }
        if fields == nil {
            // Headers only: the whole message is the header block.
            let parsed = try DKIMMessage(crlf: header)
            fields = parsed
            onHeader(parsed)
            body(parsed.body[...])
        }
        return fields!
    }

    /// Where the body starts: after the first CRLF CRLF, or at 2 when the
    /// message starts with an empty line.
    static func headerEnd(_ bytes: [UInt8], from start: Int = 0) -> Int? {
        if bytes.starts(with: [0x0D, 0x0A]) { return 2 }
        guard bytes.count >= 4, start <= bytes.count - 4 else { return nil }
        for index in start...(bytes.count - 4)
        where bytes[index] == 0x0D && bytes[index + 1] == 0x0A && bytes[index + 2] == 0x0D && bytes[index + 3] == 0x0A {
            return index + 4
        }
        return nil
    }

    /// `header`, then the message after `offset`: in place while the spool
    /// is still in memory, else a new spool with the message copied.
    func rewrite(spool: SpoolFile, offset: Int, header: String) throws -> SpoolFile {
        if spool.replacePrefix(offset, with: header.utf8) { return spool }
        let replacement = try newSpool()
        do {
            try replacement.append(Array(header.utf8))
            try spool.read(from: offset) { try replacement.append($0) }
        } catch {
            replacement.discard()
            throw error
        }
        spool.discard()
        return replacement
    }
}
