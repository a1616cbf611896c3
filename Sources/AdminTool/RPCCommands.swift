import LocalRPC

/// The commands that ask the running server, over the local RPC.
extension AdminTool {
    private func rpcClient() throws(Failure) -> LocalRPCClient {
        // No chdir here: a relative data_dir is relative to the caller's cwd,
        // as in chasquid.
        LocalRPCClient(dataDirectory: try loadConfig().dataDir)
    }

    func aliasesResolve() throws(Failure) {
        guard let address = arguments.positional(1) else { throw Failure("Error resolving: missing address") }
        var request = FormValues()
        request.add("Address", address)
        let reply: FormValues
        do {
            reply = try rpcClient().call("AliasResolve", request)
        } catch let error as LocalRPCClient.Failure {
            throw Failure("Error resolving: \(error)")
        } catch {
            throw error as! Failure
        }
        // By type (email, forward, pipe), then in the server's order.
        for kind in ["(email)", "(forward)", "(pipe)"] {
            for value in reply.values(kind) {
                console.out("\(kind)  \(value)")
            }
        }
    }

    func domaininfoRemove() throws(Failure) {
        guard let domain = arguments.positional(1) else {
            throw Failure("Error removing domaininfo entry: missing domain")
        }
        var request = FormValues()
        request.add("Domain", domain)
        do {
            _ = try rpcClient().call("DomaininfoClear", request)
        } catch let error as LocalRPCClient.Failure {
            throw Failure("Error removing domaininfo entry: \(error)")
        } catch {
            throw error as! Failure
        }
    }
}
