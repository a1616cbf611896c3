#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reading a directory with Go's errors (`open certs/: no such file or
/// directory`), the path as the admin wrote it.
public enum DirectoryListing {
    /// The names in `path`, without `.` and `..`, sorted by bytes (Go's
    /// os.ReadDir order).
    public static func names(atPath path: String) throws(FileError) -> [String] {
        guard let directory = opendir(path) else { throw FileError("open", path: path, errno: errno) }
        defer { closedir(directory) }
        var names: [String] = []
        while true {
            errno = 0
            guard let entry = readdir(directory) else {
                if errno != 0 { throw FileError("readdirent", path: path, errno: errno) }
                break
            }
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    /// Checks that `path` can be opened for reading, for a clear error
    /// before a library that would only say it failed.
    public static func checkReadable(_ path: String) throws(FileError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileError("open", path: path, errno: errno) }
        close(fd)
    }
}
