import Foundation

/// A fresh directory under the system's temporary one, removed when the
/// value goes. For tests.
public final class TempDir: Sendable {
    public let path: String

    public init(prefix: String = "chasquid-tests-") {
        path = NSTemporaryDirectory() + prefix + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes a shell script and returns its path. Tests run it as
    /// `/bin/sh <path>`: executing a file just written can fail with ETXTBSY
    /// while another test's child inherits the writer's descriptor.
    public func script(_ name: String, _ body: String) -> String {
        let file = path + "/" + name
        _ = FileManager.default.createFile(
            atPath: file,
            contents: Data(("#!/bin/sh\n" + body + "\n").utf8),
            attributes: [.posixPermissions: 0o755]
        )
        return file
    }
}
