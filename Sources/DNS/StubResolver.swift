import NIOCore
import NIOPosix
import Synchronization

/// A stub resolver: asks the configured recursive servers over UDP, and over
/// TCP when an answer comes back truncated (RFC 1035 §4.2, RFC 7766).
///
/// Each attempt goes to one server with its own timeout; a server that does
/// not answer, fails (SERVFAIL) or sends garbage is skipped for the next one,
/// for `attempts` rounds. Answers are accepted only from the server asked,
/// with the query's ID and question, which defeats blind spoofing.
public final class StubResolver: DNSLookup, Sendable {
    public let configuration: ResolverConfiguration
    private let group: any EventLoopGroup
    /// Where the next query starts, for `options rotate`.
    private let rotation = Mutex(0)

    /// The most CNAMEs followed for one lookup.
    public static let maximumCNAMEChain = 8

    public init(configuration: ResolverConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton)
    {
        self.configuration = configuration
        self.group = group
    }

    public func lookup(_ name: String, _ type: DNSRecordType) async throws(DNSError) -> [DNSRecordData] {
        do {
            _ = try DNSName.labels(of: name)
        } catch {
            throw .permanentFailure("invalid name: \(error.reason)")
        }
        var current = DNSName.canonical(name)
        var seen: Set<String> = [current]
        for _ in 0...Self.maximumCNAMEChain {
            let response = try await exchange(current, type)
            // Walk the CNAME chain inside this answer (recursive servers
            // usually include the whole chain and the target's records).
            var owner = current
            while true {
                let records = response.answers.filter { $0.type == type && DNSName.equal($0.name, owner) }
                if !records.isEmpty { return records.map(\.data) }
                guard type != .cname,
                    let alias = response.answers.first(where: { $0.type == .cname && DNSName.equal($0.name, owner) }),
                    case .cname(let target) = alias.data
                else { break }
                owner = DNSName.canonical(target)
                guard seen.insert(owner).inserted else { throw .permanentFailure("CNAME loop at \(owner)") }
            }
            if response.header.responseCode == .nameError {
                throw .nameNotFound(owner)
            }
            if owner == current { return [] }
            // The chain leads to a name this answer says nothing about: ask for it.
            current = owner
        }
        throw .permanentFailure("CNAME chain too long for \(name)")
    }

    /// One question, asked of each server in turn until one gives a usable
    /// answer. Returns NOERROR and NXDOMAIN responses; throws otherwise.
    func exchange(_ name: String, _ type: DNSRecordType) async throws(DNSError) -> DNSResponse {
        let question = DNSQuestion(name: name, type: type)
        let servers = configuration.servers
        guard !servers.isEmpty else { throw .temporaryFailure("no DNS servers configured") }
        let first = configuration.rotate ? rotation.withLock { value in
            defer { value = (value + 1) % servers.count }
            return value
        } : 0
        var lastError = DNSError.temporaryFailure("no answer")
        var refusals = 0
        var tries = 0
        for round in 0..<max(configuration.attempts, 1) {
            for step in 0..<servers.count {
                // A cancelled lookup (its SPF check is over) asks no one else.
                if Task.isCancelled { throw .temporaryFailure("lookup of \(name) \(type) cancelled") }
                let server = servers[(first + step) % servers.count]
                tries += 1
                let response: DNSResponse
                do {
                    response = try await ask(question, server: server)
                } catch let error as DNSTransportError {
                    lastError = .temporaryFailure("\(server): \(error.reason)")
                    continue
                } catch {
                    lastError = .temporaryFailure("\(server): \(error)")
                    continue
                }
                switch response.header.responseCode {
                case .noError, .nameError:
                    return response
                case .serverFailure:
                    lastError = .temporaryFailure("\(server) answered SERVFAIL for \(name) \(type)")
                default:
                    // REFUSED, NOTIMP, FORMERR: this server will not help; like
                    // Go's resolver, the answer is a permanent "server
                    // misbehaving" if no server helps.
                    refusals += 1
                    lastError = .permanentFailure(
                        "\(server) answered \(response.header.responseCode) for \(name) \(type)")
                }
            }
            _ = round
        }
        if refusals == tries { throw lastError }
        if case .permanentFailure(let reason) = lastError { throw .temporaryFailure(reason) }
        throw lastError
    }

    /// One attempt at one server: UDP, then TCP if truncated.
    private func ask(_ question: DNSQuestion, server: SocketAddress) async throws -> DNSResponse {
        let id = UInt16.random(in: 0...UInt16.max)
        let query = try DNSWire.query(id: id, name: question.name, type: question.type)
        let udpBytes = try await DNSTransport.udpExchange(
            query: query, server: server, timeout: configuration.timeout, group: group,
            accept: { (try? Self.validated($0, id: id, question: question)) != nil })
        let response = try Self.validated(udpBytes, id: id, question: question)
        guard response.header.isTruncated else { return response }
        try Task.checkCancellation()
        let tcpID = UInt16.random(in: 0...UInt16.max)
        let tcpQuery = try DNSWire.query(id: tcpID, name: question.name, type: question.type)
        let tcpBytes = try await DNSTransport.tcpExchange(
            query: tcpQuery, server: server, timeout: configuration.timeout, group: group)
        return try Self.validated(tcpBytes, id: tcpID, question: question)
    }

    /// Parses and checks that the message answers our query.
    static func validated(_ bytes: [UInt8], id: UInt16, question: DNSQuestion) throws -> DNSResponse {
        let response = try DNSWire.parse(bytes)
        guard response.header.id == id, response.header.isResponse else {
            throw DNSTransportError("answer does not match the query")
        }
        // FORMERR and the like may come without the question section.
        if response.header.responseCode == .noError || response.header.responseCode == .nameError {
            guard response.questions.count == 1, response.questions[0].matches(question) else {
                throw DNSTransportError("answer is for another question")
            }
        }
        return response
    }
}

/// A network-level failure of one exchange.
struct DNSTransportError: Error, Sendable, CustomStringConvertible {
    var reason: String
    init(_ reason: String) { self.reason = reason }
    var description: String { reason }
}
