import DurableFiles
import MailLog
import MailQueue
import Normalization
import SMTPCore
import SMTPServer

/// Accepted messages: post-data hook, then the queue.
public struct QueueSink: MessageSink {
    let queue: MailQueue
    let hook: PostDataHook
    let mailLog: MailLog
    let isLocal: @Sendable (String) -> Bool
    let dkim: DKIMStep?
    /// Failures to write the queue: a full disk fails every message, and
    /// each would log a line.
    let storageLog: RateLimitedLog?

    init(
        queue: MailQueue, hook: PostDataHook, mailLog: MailLog, dkim: DKIMStep? = nil, storageLog: RateLimitedLog? = nil,
        isLocal: @escaping @Sendable (String) -> Bool
    ) {
        self.storageLog = storageLog
        self.queue = queue
        self.hook = hook
        self.mailLog = mailLog
        self.dkim = dkim
        self.isLocal = isLocal
    }

    public func newSpool() throws -> SpoolFile { try queue.newSpool() }

    public func accept(
        envelope: Envelope, session: SessionInfo, remoteAddress: String, spool: sending SpoolFile
    ) async -> Reply {
        var spool = spool
        if let dkim {
            do {
                spool = try await dkim.run(envelope: envelope, authenticated: session.isAuthenticated, spool: spool)
            } catch is DKIMStep.SigningFailed {
                // Never send unsigned what should be signed; the client retries.
                spool.discard()
                return Reply(451, "4.3.0 DKIM signing failed")
            } catch {
                spool.discard()
                return queueingFailed(error, remoteAddress: remoteAddress)
            }
        }
        do {
            spool = try await runHook(envelope: envelope, session: session, remoteAddress: remoteAddress, spool: spool)
        } catch let refusal as HookRefusal {
            mailLog.rejected(remote: remoteAddress, from: envelope.from, to: envelope.recipients, reason: refusal.reply.text)
            return refusal.reply
        } catch {
            spool.discard()
            return queueingFailed(error, remoteAddress: remoteAddress)
        }
        do {
            let id = try await queue.put(from: envelope.from, to: envelope.recipients, spool: spool, remote: remoteAddress)
            return Reply(250, "2.0.0 OK: queued as \(id)")
        } catch {
            return queueingFailed(error, remoteAddress: remoteAddress)
        }
    }

    private func queueingFailed(_ error: any Error, remoteAddress: String) -> Reply {
        spoolWriteFailed(error, remoteAddress: remoteAddress)
            ? .insufficientStorage : Reply(451, "4.3.0 Failed to queue message: \(error)")
    }

    public func spoolWriteFailed(_ error: any Error, remoteAddress: String) -> Bool {
        let full = (error as? FileError)?.isOutOfSpace ?? (error as? QueueError)?.isOutOfSpace ?? false
        storageLog?.error("SMTP.Conn \(remoteAddress): error: queueing the message failed: \(error)\(full ? "; refused with 452 until space is freed" : "")")
        return full
    }

    struct HookRefusal: Error { var reply: Reply }

    /// Runs the hook if there is one; returns the spool to queue (a new one
    /// when the hook added headers on top).
    private func runHook(
        envelope: Envelope, session: SessionInfo, remoteAddress: String, spool: SpoolFile
    ) async throws -> SpoolFile {
        let fromDomain = Address.domain(of: envelope.from)
        let facts = PostDataHook.Facts(
            remoteAddress: remoteAddress, ehloDomain: session.ehloDomain ?? "", from: envelope.from,
            recipients: envelope.recipients, authenticatedAs: session.authenticatedAs, onTLS: session.onTLS,
            spfPass: envelope.spf?.passed ?? false, fromLocalDomain: envelope.from == "<>" || isLocal(fromDomain))
        var message: [UInt8] = []
        let outcome = try await hook.run(facts: facts) {
            message = try await spool.accessing { try spool.contents() }
            return message
        }
        switch outcome {
        case .skipped, .acceptedBadOutput, .accepted(headers: []):
            return spool
        case .accepted(let headers):
            let replacement = try queue.newSpool()
            do {
                try replacement.append(headers)
                try replacement.append(message)
            } catch {
                replacement.discard()
                throw error
            }
            spool.discard()
            return replacement
        case .refused(let reply):
            spool.discard()
            throw HookRefusal(reply: reply)
        }
    }
}
