#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GoErrors

/// An error from a file operation, naming the file and the system's reason.
public struct FileError: Error, CustomStringConvertible, Sendable, Equatable {
    public var operation: String
    public var path: String
    public var errno: Int32

    public init(_ operation: String, path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    /// True when the file (or a directory on its path) does not exist.
    public var isNotFound: Bool { errno == ENOENT }

    /// True when the file system (or the user's quota) is full.
    public var isOutOfSpace: Bool { errno == ENOSPC || errno == EDQUOT }

    /// Go's *PathError form, `open c/chasquid.conf: no such file or
    /// directory`, which chasquid's messages carry and admins grep for.
    public var description: String {
        "\(operation) \(path): \(goErrnoText(errno))"
    }
}

/// Crash-safe whole-file writes.
///
/// A reader sees either the old contents or the new ones, never a mix, and once
/// `write` returns the new contents survive a power cut: the data is fsynced
/// before the rename, and the directory after it (COMPAT.md §5, §22.11).
public enum AtomicFile {
    /// Writes `bytes` to `path`.
    ///
    /// - Parameter mode: permissions for a new file. When `path` already exists
    ///   its mode and owner are kept, so an admin's `chown`/`chmod` survives.
    /// - Parameter syncDirectory: false when the caller makes the rename
    ///   durable itself (a `DirectorySyncer` shared by many writers).
    /// - Parameter modificationTime: the file's mtime, when it means
    ///   something (chasquid's STS cache keeps the expiry there).
    public static func write(
        _ bytes: some Collection<UInt8>, to path: String, mode: mode_t, syncDirectory: Bool = true,
        modificationTime: timespec? = nil
    ) throws(FileError) {
        let (directory, base) = split(path)
        var existing = stat()
        let targetExists = stat(path, &existing) == 0

        // Same naming as chasquid's safeio: ".<basename><digits>" in the same directory.
        var tempPath = ""
        var fd: Int32 = -1
        for _ in 0..<100 {
            tempPath = directory + "/." + base + String(UInt32.random(in: 0...UInt32.max))
            fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd >= 0 || Glibc.errno != EEXIST { break }
        }
        guard fd >= 0 else { throw FileError("create", path: tempPath, errno: Glibc.errno) }

        var committed = false
        defer {
            if !committed { unlink(tempPath) }
        }
        do {
            defer { close(fd) }
            let finalMode = targetExists ? existing.st_mode & 0o7777 : mode
            guard fchmod(fd, finalMode) == 0 else { throw FileError("chmod", path: tempPath, errno: Glibc.errno) }
            if targetExists && (existing.st_uid != geteuid() || existing.st_gid != getegid()) {
                guard fchown(fd, existing.st_uid, existing.st_gid) == 0 else {
                    throw FileError("chown", path: tempPath, errno: Glibc.errno)
                }
            }
            try writeAll(fd: fd, bytes: Array(bytes), path: tempPath)
            if let modificationTime {
                var times = [modificationTime, modificationTime]
                guard futimens(fd, &times) == 0 else { throw FileError("chtimes", path: tempPath, errno: Glibc.errno) }
            }
            guard fdatasync(fd) == 0 else { throw FileError("fsync", path: tempPath, errno: Glibc.errno) }
        }
        guard rename(tempPath, path) == 0 else { throw FileError("rename", path: path, errno: Glibc.errno) }
        committed = true
        if syncDirectory { try Self.syncDirectory(directory) }
    }

    /// Fsyncs a directory, so that renames and creations in it are durable.
    public static func syncDirectory(_ directory: String) throws(FileError) {
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw FileError("open", path: directory, errno: Glibc.errno) }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw FileError("fsync", path: directory, errno: Glibc.errno) }
    }

    private static func writeAll(fd: Int32, bytes: [UInt8], path: String) throws(FileError) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { buf in
                Glibc.write(fd, buf.baseAddress! + offset, buf.count - offset)
            }
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                throw FileError("write", path: path, errno: Glibc.errno)
            }
            offset += n
        }
    }

    private static func split(_ path: String) -> (directory: String, base: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }
}

/// Reads a whole file.
public func readFile(_ path: String) throws(FileError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw FileError("open", path: path, errno: Glibc.errno) }
    defer { close(fd) }
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if Glibc.errno == EINTR { continue }
            throw FileError("read", path: path, errno: Glibc.errno)
        }
        if n == 0 { break }
        result.append(contentsOf: chunk[0..<n])
    }
    return result
}

/// True if something exists at `path` (following symlinks).
public func fileExists(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0
}

/// True if `path` is a directory (following symlinks).
public func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
}
