import BlockingWork

#if canImport(Glibc)
import Glibc
#endif

/// A file written piece by piece as data arrives, then made durable in one
/// step: message data goes to disk while it is received, never held whole in
/// memory.
///
/// `@unchecked Sendable`: a spool has one owner at a time (the connection
/// that fills it, then the queue it is handed to with `sending`); it is never
/// used from two places at once, so it needs no lock.
public final class SpoolFile: @unchecked Sendable {
    public let path: String
    private var fd: Int32
    private var buffer: [UInt8] = []
    public private(set) var size = 0
    /// Bytes already written to the file; the rest are in `buffer`.
    private var written = 0
    /// Writes are gathered up to this many bytes.
    private static let bufferLimit = 256 * 1024

    /// Creates `path` (which must not exist) with `mode`.
    public init(creating path: String, mode: mode_t = 0o600) throws(FileError) {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw FileError("create", path: path, errno: errno) }
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    public func append(_ bytes: some Collection<UInt8>) throws(FileError) {
        // Contiguous bytes are one copy; a generic append from another
        // module ran unspecialised, a witness call per byte.
        if let appended = bytes.withContiguousStorageIfAvailable({ buffer.append(contentsOf: $0) }) {
            _ = appended
        } else {
            buffer.append(contentsOf: Array(bytes))
        }
        size += bytes.count
        if buffer.count >= Self.bufferLimit { try flush() }
    }

    /// Whether all the data is still in memory (nothing written to the file).
    public var isInMemory: Bool { written == 0 }

    /// Whether appending `count` bytes fills the buffer, so that the append
    /// writes to the file (and may block).
    public func fillsBuffer(adding count: Int) -> Bool { buffer.count + count >= Self.bufferLimit }

    /// Runs `work`, which reads or copies this spool, where it may block:
    /// right here while the data is all in memory, on a file thread once it
    /// is on disk (tasks run on the event loops, which must not wait on a
    /// disk).
    public func accessing<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        if isInMemory { return try work() }
        let result: Result<T, any Error> = await BlockingWork.onFileThread { Result { try work() } }
        return try result.get()
    }

    /// Replaces the first `length` bytes with `prefix` (the trace headers,
    /// once DKIM has run) when they are still in memory, as they are for
    /// any message smaller than the write buffer; false when they are
    /// already in the file, and the caller must copy to a new spool.
    public func replacePrefix(_ length: Int, with prefix: some Collection<UInt8>) -> Bool {
        guard written == 0, length <= buffer.count else { return false }
        buffer.replaceSubrange(0..<length, with: Array(prefix))
        size += prefix.count - length
        return true
    }

    private func flush() throws(FileError) {
        var offset = 0
        while offset < buffer.count {
            let n = buffer.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError("write", path: path, errno: errno)
            }
            offset += n
        }
        written += buffer.count
        buffer.removeAll(keepingCapacity: true)
    }

    /// Everything written so far (for a hook that needs the whole message).
    public func contents() throws(FileError) -> [UInt8] {
        if written == 0 { return buffer }
        try flush()
        return try readFile(path)
    }

    /// Reads what was written, from `offset`, a chunk at a time (for work
    /// that must see the whole message without holding it: DKIM hashes,
    /// copies).
    public func read(from offset: Int = 0, chunkSize: Int = 256 * 1024, _ body: (ArraySlice<UInt8>) throws -> Void) throws {
        if written == 0 {
            // Nothing in the file yet: read from memory, no write and read back.
            var start = min(offset, buffer.count)
            while start < buffer.count {
                let end = min(start + chunkSize, buffer.count)
                try body(buffer[start..<end])
                start = end
            }
            return
        }
        try flush()
        let reader = open(path, O_RDONLY | O_CLOEXEC)
        guard reader >= 0 else { throw FileError("open", path: path, errno: errno) }
        defer { close(reader) }
        var chunk = [UInt8](repeating: 0, count: chunkSize)
        var position = off_t(offset)
        while true {
            let n = chunk.withUnsafeMutableBytes { pread(reader, $0.baseAddress, $0.count, position) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError("read", path: path, errno: errno)
            }
            if n == 0 { return }
            position += off_t(n)
            try body(chunk[0..<n])
        }
    }

    /// Writes what is buffered, fsyncs and closes. After this the bytes
    /// survive a crash (once the file's name is made durable too).
    public func commit() throws(FileError) {
        try flush()
        guard fdatasync(fd) == 0 else { throw FileError("fsync", path: path, errno: errno) }
        guard close(fd) == 0 else {
            fd = -1
            throw FileError("close", path: path, errno: errno)
        }
        fd = -1
    }

    /// Closes and removes the file: the transaction was refused.
    public func discard() {
        if fd >= 0 { close(fd) }
        fd = -1
        unlink(path)
    }
}

/// Renames `from` to `to` (same file system).
public func renameFile(_ from: String, to: String) throws(FileError) {
    guard rename(from, to) == 0 else { throw FileError("rename", path: from, errno: errno) }
}

/// Removes a file; a missing file is not an error.
public func removeFile(_ path: String) throws(FileError) {
    guard unlink(path) == 0 || errno == ENOENT else { throw FileError("unlink", path: path, errno: errno) }
}

/// Creates a directory and its parents with `mode`, like `mkdir -p`.
public func makeDirectories(_ path: String, mode: mode_t) throws(FileError) {
    if isDirectory(path) { return }
    if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
        try makeDirectories(String(path[..<slash]), mode: mode)
    }
    guard mkdir(path, mode) == 0 || errno == EEXIST else { throw FileError("mkdir", path: path, errno: errno) }
    // Something else by that name (a file where the queue should be) is
    // an error, as in Go's os.MkdirAll, never a directory to read as empty.
    if !isDirectory(path) { throw FileError("mkdir", path: path, errno: ENOTDIR) }
}
