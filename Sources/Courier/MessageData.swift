import DurableFiles
import Normalization
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A message to deliver (LF line endings): bytes in memory (a DSN, tests),
/// or the queue's data file, which a courier that streams (the MDA, pipe
/// aliases) reads a piece at a time, so that no large message is held
/// whole while it is delivered.
public struct MessageData: Sendable {
    enum Storage: Sendable {
        case bytes([UInt8])
        case file(String)
    }

    let storage: Storage
    /// The whole file once read: the batches of one delivery round share it.
    private let loaded = Loaded()

    private final class Loaded: Sendable {
        let bytes = Mutex<[UInt8]?>(nil)
    }

    public init(_ bytes: [UInt8]) { storage = .bytes(bytes) }

    public init(path: String) { storage = .file(path) }

    /// The whole message, for couriers that need it at once (SMTP): read
    /// on a file thread, never on an event loop, and once per value.
    public func bytes() async throws(FileError) -> [UInt8] {
        switch storage {
        case .bytes(let bytes):
            return bytes
        case .file(let path):
            if let bytes = loaded.bytes.withLock({ $0 }) { return bytes }
            let bytes = try await offloaded { () throws(FileError) in try readFile(path) }
            loaded.bytes.withLock { $0 = bytes }
            return bytes
        }
    }

    /// A reader of the message in pieces, converted to CRLF if asked.
    func pieces(toCRLF: Bool) -> MessagePieces { MessagePieces(storage, toCRLF: toCRLF) }
}

/// Reads a message a piece at a time for a child's stdin, on the thread
/// that feeds the child. `@unchecked Sendable`: it is used by that one
/// thread only, after it is made.
final class MessagePieces: @unchecked Sendable {
    static let pieceSize = 64 * 1024
    private var storage: MessageData.Storage?
    private var converter: CRLFConverter?
    private var fd: Int32 = -1
    private var offset = 0
    /// The read that failed, if one did: the child saw a partial message.
    private(set) var error: FileError?

    init(_ storage: MessageData.Storage, toCRLF: Bool) {
        self.storage = storage
        converter = toCRLF ? CRLFConverter() : nil
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    /// Opens the file, so that a message that cannot be read fails before
    /// any child is started (nothing to do for bytes in memory).
    func open() throws(FileError) {
        guard case .file(let path) = storage, fd < 0 else { return }
        fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileError("open", path: path, errno: errno) }
    }

    /// Whether a read failed: the child saw a cut message.
    var failed: Bool { error != nil }

    /// The next piece, or nil at the end (or after an error).
    func next() -> [UInt8]? {
        guard let piece = nextRaw() else { return nil }
        return converter != nil ? converter!.convert(piece) : piece
    }

    private func nextRaw() -> [UInt8]? {
        switch storage {
        case nil:
            return nil
        case .bytes(let bytes):
            guard offset < bytes.count else { return nil }
            let end = min(offset + Self.pieceSize, bytes.count)
            defer { offset = end }
            return Array(bytes[offset..<end])
        case .file(let path):
            if fd < 0 {
                fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { return fail(FileError("open", path: path, errno: errno)) }
            }
            var piece = [UInt8](repeating: 0, count: Self.pieceSize)
            while true {
                let n = piece.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n < 0 { return fail(FileError("read", path: path, errno: errno)) }
                if n == 0 {
                    storage = nil
                    return nil
                }
                piece.removeSubrange(n...)
                return piece
            }
        }
    }

    private func fail(_ error: FileError) -> [UInt8]? {
        self.error = error
        storage = nil
        return nil
    }
}
