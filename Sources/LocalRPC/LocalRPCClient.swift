import StreamSocket

/// The client side of chasquid's local RPC (COMPAT.md §16): one request per
/// connection over the Unix socket `<data_dir>/localrpc-v1`.
public struct LocalRPCClient: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
        /// Nothing answers at the socket: the daemon is not running, or uses
        /// another data_dir.
        public var serverNotRunning = false
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

    /// One request, one reply line; errors in Go's words
    /// (`dial unix <path>: connect: no such file or directory`).
    private func exchange(_ request: String) throws(Failure) -> String {
        do {
            let connection = try StreamSocket.connect(
                network: .unix, address: socketPath, timeout: .seconds(timeoutSeconds))
            try connection.write(request)
            return try connection.readLine()
        } catch {
            throw Failure(description: error.description, serverNotRunning: error.nothingListening)
        }
    }
}
