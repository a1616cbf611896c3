import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A Unix socket server that plays the peer's side of a scripted exchange,
/// for tests of line protocols (Dovecot, LMTP). On each connection it
/// writes `greeting`, then answers each line received with `reply(line)`
/// (nil: say nothing; `<close>`: hang up; `<pause>` inside it: a 100 ms
/// pause between writes), and records every byte it got.
public final class ScriptedSocket: Sendable {
    public let path: String
    private let fd: Int32
    private let received = Mutex<[String]>([])

    public init(path: String, greeting: String, reply: @escaping @Sendable (String) -> String?) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8))
            raw[path.utf8.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, listen(fd, 8) == 0 else { throw POSIXError(.EADDRINUSE) }
        start(greeting: greeting, reply: reply)
    }

    private func start(greeting: String, reply: @escaping @Sendable (String) -> String?) {
        let listener = fd
        Thread.detachNewThread { [self] in
            while true {
                let client = accept(listener, nil, nil)
                guard client >= 0 else {
                    // Closed here, not in stop(): a number closed there could
                    // be reused by another test's socket while this thread
                    // still accepts on it.
                    close(listener)
                    return
                }
                _ = greeting.withCString { send(client, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                var pending = ""
                var chunk = [UInt8](repeating: 0, count: 4096)
                loop: while true {
                    let n = recv(client, &chunk, chunk.count, 0)
                    guard n > 0 else { break }
                    pending += String(decoding: chunk[0..<n], as: UTF8.self)
                    received.withLock { $0.append(String(decoding: chunk[0..<n], as: UTF8.self)) }
                    // By scalars: "\r\n" is one Character, and lines may end either way.
                    while let newline = pending.unicodeScalars.firstIndex(of: "\n") {
                        let line = String(pending.unicodeScalars[..<newline])
                        pending = String(pending.unicodeScalars[pending.unicodeScalars.index(after: newline)...])
                        if let answer = reply(line) {
                            if answer == "<close>" { break loop }
                            // "<pause>" splits an answer into writes 100 ms apart.
                            for (i, part) in answer.components(separatedBy: "<pause>").enumerated() {
                                if i > 0 { usleep(100_000) }
                                _ = part.withCString { send(client, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                            }
                        }
                    }
                }
                close(client)
            }
        }
    }

    /// Everything clients sent, concatenated.
    public var transcript: String { received.withLock { $0.joined() } }

    /// Stops accepting; the accepting thread closes the socket.
    public func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
    }
}

