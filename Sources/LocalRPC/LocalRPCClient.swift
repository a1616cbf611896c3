#if canImport(Glibc)
import Glibc
#endif

/// The client side of chasquid's local RPC (COMPAT.md §16): one request per
/// connection over the Unix socket `<data_dir>/localrpc-v1`.
public struct LocalRPCClient: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
    }

    public static let socketName = "localrpc-v1"
    public var socketPath: String
    /// chasquid's server gives each request 5 s.
    public var timeoutSeconds: Int = 5

    public init(dataDirectory: String) {
        socketPath = dataDirectory + "/" + Self.socketName
    }

    /// Sends `<method> <args>` and returns the reply's values; a `500` reply
    /// becomes a `Failure` carrying the server's text.
    public func call(_ method: String, _ arguments: FormValues) throws(Failure) -> FormValues {
        let reply = try exchange(method + " " + arguments.encoded() + "\r\n")
        if reply.hasPrefix("200") {
            do {
                return try FormValues.decode(reply.dropFirst(3).drop { $0 == " " }.description)
            } catch {
                throw Failure(description: "bad reply: \(error)")
            }
        }
        if reply.hasPrefix("500 ") { throw Failure(description: String(reply.dropFirst(4))) }
        throw Failure(description: "unexpected reply \"\(reply)\"")
    }

    private func exchange(_ request: String) throws(Failure) -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw systemFailure("socket") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw Failure(description: "socket path too long: \(socketPath)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: pathBytes)
            buffer[pathBytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else { throw systemFailure("dial unix \(socketPath)") }

        var bytes = Array(request.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw systemFailure("write") }
            bytes = bytes.dropFirst(n)
        }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while !reply.contains(UInt8(ascii: "\n")) {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            guard n > 0 else { throw systemFailure("read") }
            reply += chunk[0..<n]
        }
        var line = String(decoding: reply, as: UTF8.self)
        while line.hasSuffix("\n") || line.hasSuffix("\r") || line.hasSuffix("\r\n") { line.removeLast() }
        return line
    }

    private func systemFailure(_ operation: String) -> Failure {
        Failure(description: "\(operation): \(String(cString: strerror(errno)))")
    }
}
