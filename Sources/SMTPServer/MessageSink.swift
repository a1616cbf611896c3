import DurableFiles
import SMTPCore

/// Where accepted messages go: the server's hook-and-queue step. The
/// connection streams the data into a spool from `newSpool`, then hands it
/// over with `accept`, whose reply is sent to the client.
public protocol MessageSink: Sendable {
    func newSpool() throws -> SpoolFile
    /// Takes ownership of `spool` (it must be committed or discarded).
    func accept(
        envelope: Envelope, session: SessionInfo, remoteAddress: String, spool: sending SpoolFile
    ) async -> Reply
    /// Writing a message's spool failed with `error` (the session then
    /// refuses it): logs it, and says whether the disk is full.
    func spoolWriteFailed(_ error: any Error, remoteAddress: String) -> Bool
}

extension MessageSink {
    public func spoolWriteFailed(_ error: any Error, remoteAddress: String) -> Bool {
        (error as? FileError)?.isOutOfSpace ?? false
    }
}

/// Facts about the connection that headers and hooks need.
public struct ConnectionFacts: Sendable {
    /// "ip:port", IPv6 as "[::1]:25".
    public var remoteAddress: String
    public var remoteIP: String
}
