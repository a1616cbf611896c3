import Foundation

/// A directory removed when the value goes.
final class TempDir: Sendable {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "courier-tests-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes a shell script and returns its path. Tests run it as
    /// `/bin/sh <path>`: executing a file just written can fail with ETXTBSY
    /// while another test's child inherits the writer's descriptor.
    func script(_ name: String, _ body: String) -> String {
        let file = path + "/" + name
        _ = FileManager.default.createFile(
            atPath: file,
            contents: Data(("#!/bin/sh\n" + body + "\n").utf8),
            attributes: [.posixPermissions: 0o755]
        )
        return file
    }
}
