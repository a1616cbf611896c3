import Aliases
import DomainInfo
import Foundation
import LocalRPC
import Logging
import NIOCore
import NIOPosix
import Normalization

/// The daemon's side of the local RPC (COMPAT.md §16), for chasquid-util's
/// `aliases-resolve` and `domaininfo-remove`: one request per connection on
/// `<data_dir>/localrpc-v1`, 5 s each.
struct LocalRPCServer: Sendable {
    let socketPath: String
    let policy: ServerPolicy
    let securityLevels: DomainInfoStore
    let logger: Logger

    func bind(group: any EventLoopGroup) async throws -> NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never> {
        try await ServerBootstrap(group: group).bind(
            unixDomainSocketPath: socketPath, cleanupExistingSocketFile: true
        ) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    }

    func serve(_ server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>) async throws {
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await connection in inbound {
                    group.addTask {
                        try? await withThrowingTaskGroup(of: Void.self) { deadline in
                            deadline.addTask { try await self.handle(connection) }
                            deadline.addTask {
                                try await Task.sleep(for: .seconds(5))
                                throw CancellationError()
                            }
                            try await deadline.next()
                            deadline.cancelAll()
                        }
                        try? await connection.channel.close()
                    }
                }
            }
        }
    }

    private func handle(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async throws {
        try await connection.executeThenClose { inbound, outbound in
            var request: [UInt8] = []
            for try await buffer in inbound {
                request += buffer.readableBytesView
                if request.contains(UInt8(ascii: "\n")) { break }
            }
            let line = String(decoding: request, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            let reply = await respond(to: line)
            try await outbound.write(ByteBuffer(string: reply + "\r\n"))
        }
    }

    /// The address as RCPT takes it: the domain to Unicode, then a local
    /// address normalised (`Dave@Example.ORG` is `dave@example.org`).
    func normalized(_ address: String) -> String {
        guard let unicode = try? Normalize.domainToUnicode(address) else { return address }
        guard policy.isLocal(domain: Address.domain(of: unicode)) else { return unicode }
        return (try? Normalize.address(unicode)) ?? unicode
    }

    func respond(to line: String) async -> String {
        let (method, rest) = line.firstIndex(of: " ").map { (String(line[..<$0]), String(line[line.index(after: $0)...])) }
            ?? (line, "")
        guard let arguments = try? FormValues.decode(rest) else { return "500 invalid arguments" }
        switch method {
        case "AliasResolve":
            guard let address = arguments.first("Address") else { return "500 missing Address" }
            do {
                let recipients = try await policy.resolver().resolve(normalized(address))
                var values = FormValues()
                for r in recipients { values.add(r.kind.rawValue, r.address) }
                return "200 " + values.encoded()
            } catch {
                return "500 \(error)"
            }
        case "DomaininfoClear":
            guard let domain = arguments.first("Domain") else { return "500 missing Domain" }
            // Both levels go back to PLAIN; the file stays (COMPAT.md §13).
            do {
                // Records are keyed by the normalised domain (COMPAT.md §22.7).
                let key = (try? Normalize.domain(domain)) ?? domain
                return try await securityLevels.clear(domain: key) ? "200 " : "500 does not exist"
            } catch {
                return "500 \(error)"
            }
        default:
            return "500 unknown method"
        }
    }
}
