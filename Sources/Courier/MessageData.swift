import CSystemShims
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

    /// A file for a child to read the message from (see
    /// ChildProcess.Input.file): the queue's data file itself when no
    /// conversion is needed, else a converted copy in an unnamed temporary
    /// file beside it (in memory if the disk cannot take it, so a full
    /// queue disk still drains). Blocking: call it on a file thread. The
    /// caller closes the descriptor.
    func stdinFile(toCRLF: Bool) throws(FileError) -> Int32 {
        if case .file(let path) = storage, !toCRLF {
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw FileError("open", path: path, errno: errno) }
            return fd
        }
        var directory: String?
        if case .file(let path) = storage, let slash = path.lastIndex(of: "/") {
            directory = String(path[..<slash])
        }
        do {
            return try convertedCopy(toCRLF: toCRLF, in: directory)
        } catch where error.isOutOfSpace && directory != nil {
            return try convertedCopy(toCRLF: toCRLF, in: nil)
        }
    }

    /// The message, converted, in an unnamed file in `directory` (nil: in memory).
    private func convertedCopy(toCRLF: Bool, in directory: String?) throws(FileError) -> Int32 {
        let fd = csystem_anonymous_file(directory)
        let place = directory.map { "a temporary file in " + $0 } ?? "memory"
        guard fd >= 0 else { throw FileError("create", path: place, errno: -fd) }
        do throws(FileError) {
            let pieces = pieces(toCRLF: toCRLF)
            try pieces.open()
            while let piece = pieces.next() {
                var written = 0
                while written < piece.count {
                    let n = piece.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, $0.count - written) }
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw FileError("write", path: place, errno: errno) }
                    written += n
                }
            }
            if let error = pieces.error { throw error }
            guard lseek(fd, 0, SEEK_SET) == 0 else { throw FileError("seek", path: place, errno: errno) }
        } catch {
            close(fd)
            throw error
        }
        return fd
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
