import ChasquidConfig
import ChasquidProto
import LocalRPC

/// The commands that ask the running server, over the local RPC.
extension AdminTool {
    private func rpcClient(_ config: Config) -> LocalRPCClient {
        LocalRPCClient(dataDirectory: dataDirectory(config))
    }

    /// A failed call in words: `is chasquid running?` when nothing listens.
    private func describe(_ error: LocalRPCClient.Failure, client: LocalRPCClient) -> String {
        guard error.serverNotRunning else { return error.description }
        return "is chasquid running? no server at \(client.socketPath) (\(error))"
    }

    func aliasesResolve() throws(Failure) {
        guard let address = arguments.positional(1) else { throw Failure("Error resolving: missing address") }
        let config = try loadConfig()
        let client = rpcClient(config)
        var request = FormValues()
        request.add("Address", address)
        let reply: FormValues
        do {
            reply = try client.call("AliasResolve", request)
        } catch {
            throw Failure("Error resolving: \(describe(error, client: client))")
        }
        // By type (email, forward, pipe), then in the server's order.
        var emails: [String] = []
        for kind in ["(email)", "(forward)", "(pipe)"] {
            for value in reply.values(kind) {
                console.out("\(kind)  \(value)")
                if kind == "(email)" { emails.append(value) }
            }
        }
        // On stderr, so the lines scripts read stay chasquid's.
        for email in addressesWithoutUser(emails, config: config) {
            console.err(
                "Warning: \(email) is no user of its domain: its mail goes to the MDA for a user that does not exist")
        }
    }

    func domaininfoRemove() throws(Failure) {
        guard let domain = arguments.positional(1) else {
            throw Failure("Error removing domaininfo entry: missing domain")
        }
        var request = FormValues()
        request.add("Domain", domain)
        let client = rpcClient(try loadConfig())
        do {
            _ = try client.call("DomaininfoClear", request)
        } catch {
            throw Failure("Error removing domaininfo entry: \(describe(error, client: client))")
        }
    }
}
