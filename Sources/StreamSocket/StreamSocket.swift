#if canImport(Glibc)
import Glibc
#endif
import GoErrors

/// A blocking stream connection (a Unix socket or TCP) for the short
/// line-based exchanges of helper protocols: Dovecot's auth sockets, LMTP,
/// the local RPC. Every call is bounded by the deadline given at connect,
/// so a peer that stops answering costs at most that long.
///
/// It blocks its thread: callers in Swift concurrency run it on a
/// `BlockingWork` pool; command-line tools call it directly.
public final class StreamSocket {
    /// What went wrong, in Go's words (`dial unix /p: connect: no such file
    /// or directory`), since chasquid's messages are what admins grep for.
    public struct Failure: Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
        /// Set when nothing listens there: connect's ENOENT or ECONNREFUSED.
        public var nothingListening = false
        public init(_ description: String, nothingListening: Bool = false) {
            self.description = description
            self.nothingListening = nothingListening
        }
    }

    public enum Network: String, Sendable {
        case unix, tcp
    }

    private let fd: Int32
    private var buffer: [UInt8] = []
    private var bufferStart = 0
    private var sawEnd = false
    /// The longest line `readLine` accepts; protocols here have short lines.
    public var maximumLineBytes = 64 * 1024
    /// When set, no read or write goes past it: the whole exchange is
    /// bounded, not only each call, as Go's SetDeadline does. A peer that
    /// trickles a byte at a time cannot hold us longer.
    public var deadline: ContinuousClock.Instant?

    private init(fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    /// Connects to `address`: a path for `.unix`, `host:port` (or
    /// `[v6]:port`) for `.tcp`. `timeout` bounds the connect and then every
    /// later read and write.
    public static func connect(
        network: Network, address: String, timeout: Duration
    ) throws(Failure) -> StreamSocket {
        let dial = "dial \(network.rawValue) \(address)"
        switch network {
        case .unix:
            var storage = sockaddr_un()
            storage.sun_family = sa_family_t(AF_UNIX)
            let path = Array(address.utf8)
            guard path.count < MemoryLayout.size(ofValue: storage.sun_path) else {
                throw Failure("\(dial): socket path too long")
            }
            withUnsafeMutableBytes(of: &storage.sun_path) { raw in
                raw.copyBytes(from: path)
                raw[path.count] = 0
            }
            return try withUnsafeBytes(of: &storage) { raw throws(Failure) in
                try open(family: AF_UNIX, address: raw, length: socklen_t(MemoryLayout<sockaddr_un>.size),
                         timeout: timeout, dial: dial)
            }
        case .tcp:
            guard let (host, port) = splitHostPort(address) else {
                throw Failure("\(dial): address \(address): missing port in address")
            }
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_flags = AI_ADDRCONFIG
            var results: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host.isEmpty ? "localhost" : host, port, &hints, &results)
            guard status == 0, let first = results else {
                throw Failure("\(dial): lookup \(host): \(String(cString: gai_strerror(status)))")
            }
            defer { freeaddrinfo(first) }
            var lastFailure = Failure("\(dial): no addresses")
            var next: UnsafeMutablePointer<addrinfo>? = first
            while let info = next {
                next = info.pointee.ai_next
                do {
                    return try open(
                        family: info.pointee.ai_family,
                        address: UnsafeRawBufferPointer(start: info.pointee.ai_addr, count: Int(info.pointee.ai_addrlen)),
                        length: info.pointee.ai_addrlen, timeout: timeout, dial: dial)
                } catch {
                    lastFailure = error
                }
            }
            throw lastFailure
        }
    }

    /// Splits `host:port` and `[host]:port`, as Go's net.SplitHostPort.
    static func splitHostPort(_ address: String) -> (host: String, port: String)? {
        if address.hasPrefix("[") {
            guard let close = address.firstIndex(of: "]") else { return nil }
            let rest = address[address.index(after: close)...]
            guard rest.hasPrefix(":"), rest.count > 1 else { return nil }
            return (String(address[address.index(after: address.startIndex)..<close]), String(rest.dropFirst()))
        }
        guard let colon = address.lastIndex(of: ":"), !address[..<colon].contains(":") else { return nil }
        let port = address[address.index(after: colon)...]
        guard !port.isEmpty else { return nil }
        return (String(address[..<colon]), String(port))
    }

    private static func open(
        family: Int32, address: UnsafeRawBufferPointer, length: socklen_t, timeout: Duration, dial: String
    ) throws(Failure) -> StreamSocket {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure("\(dial): socket: \(goErrnoText(errno))") }
        let connection = StreamSocket(fd: fd)  // closes fd on every failure below

        // Non-blocking connect, so that the timeout bounds it too.
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        let started = address.baseAddress!.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            Glibc.connect(fd, $0, length)
        }
        if started != 0 {
            guard errno == EINPROGRESS || errno == EAGAIN else {
                throw Failure(
                    "\(dial): connect: \(goErrnoText(errno))", nothingListening: errno == ENOENT || errno == ECONNREFUSED)
            }
            var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&poller, 1, Int32(milliseconds(timeout)))
            guard ready > 0 else { throw Failure("\(dial): i/o timeout") }
            var code: Int32 = 0
            var codeLength = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &codeLength)
            guard code == 0 else {
                throw Failure("\(dial): connect: \(goErrnoText(code))", nothingListening: code == ECONNREFUSED)
            }
        }
        _ = fcntl(fd, F_SETFL, flags)
        let millis = milliseconds(timeout)
        var limit = timeval(tv_sec: millis / 1000, tv_usec: (millis % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        return connection
    }

    private static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        return max(1, Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000))
    }

    /// Writes all of `bytes`.
    public func write(_ bytes: some Sequence<UInt8>) throws(Failure) {
        var pending = Array(bytes)[...]
        while !pending.isEmpty {
            do { try armDeadline() } catch { throw Failure("write: \(error)") }
            let n = pending.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw Failure("write: \(Self.ioError(errno))") }
            pending = pending.dropFirst(n)
        }
    }

    public func write(_ text: String) throws(Failure) { try write(text.utf8) }

    /// The next line without its `\n` (and a `\r` before it). The end of the
    /// stream before a newline is an error (`EOF`), as is a line longer
    /// than `maximumLineBytes`.
    public func readLine() throws(Failure) -> String {
        // How far past bufferStart has been searched: relative, since
        // fill() moves the unread bytes to the front.
        var searched = 0
        while true {
            if let newline = buffer[(bufferStart + searched)...].firstIndex(of: UInt8(ascii: "\n")) {
                var end = newline
                if end > bufferStart && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                let line = String(decoding: buffer[bufferStart..<end], as: UTF8.self)
                bufferStart = newline + 1
                if bufferStart == buffer.count {
                    buffer.removeAll(keepingCapacity: true)
                    bufferStart = 0
                }
                return line
            }
            searched = buffer.count - bufferStart
            guard buffer.count - bufferStart <= maximumLineBytes else { throw Failure("line too long") }
            guard !sawEnd else { throw Failure("EOF") }
            try fill()
        }
    }

    private func fill() throws(Failure) {
        if bufferStart > 0 {
            buffer.removeFirst(bufferStart)
            bufferStart = 0
        }
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            do { try armDeadline() } catch { throw Failure("read: \(error)") }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw Failure("read: \(Self.ioError(errno))") }
            if n == 0 { sawEnd = true }
            buffer += chunk[0..<n]
            return
        }
    }

    /// Shortens the socket's timeouts to what is left before `deadline`.
    private func armDeadline() throws(Failure) {
        guard let deadline else { return }
        let remaining = deadline - .now
        guard remaining > .zero else { throw Failure("i/o timeout") }
        let millis = Self.milliseconds(remaining)
        var limit = timeval(tv_sec: millis / 1000, tv_usec: (millis % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    }

    /// A timed-out call reads as Go's `i/o timeout`.
    private static func ioError(_ code: Int32) -> String {
        code == EAGAIN || code == EWOULDBLOCK ? "i/o timeout" : goErrnoText(code)
    }
}
