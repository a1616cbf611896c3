import ChildProcess
import Foundation
import Instrumentation
import Normalization

/// Runs `hooks/alias-resolve <address>` and parses what it prints as an
/// aliases right-hand side (COMPAT.md §10.2). A missing file means no hook.
public struct ResolveHook: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
        /// The hook ran but printed something that is not an aliases right-hand side.
        public var isParseError = false
    }

    public var path: String
    public var timeout: Duration
    public var metrics: ServerMetrics

    public init(path: String, timeout: Duration = .seconds(5), metrics: ServerMetrics = .discarding) {
        self.path = path
        self.timeout = timeout
        self.metrics = metrics
    }

    /// The hook as a `Resolver.Hook`.
    public var asResolverHook: Resolver.Hook {
        let hook = self
        return { address in try await hook.run(address) }
    }

    /// Counts `resolve:{skip,fail,parse_err,success}` as chasquid does.
    public func run(_ address: String) async throws(Failure) -> [Recipient] {
        do {
            let recipients = try await runHook(address)
            if let recipients {
                metrics.count(MetricCatalog.aliasHookResults, "resolve:success")
                Trace.current?.log("alias-resolve hook for \(address): \(recipients.count) recipient(s)")
            } else {
                metrics.count(MetricCatalog.aliasHookResults, "resolve:skip")
            }
            return recipients ?? []
        } catch {
            metrics.count(MetricCatalog.aliasHookResults, error.isParseError ? "resolve:parse_err" : "resolve:fail")
            Trace.current?.error(error.description)
            throw error
        }
    }

    /// nil when there is no hook.
    private func runHook(_ address: String) async throws(Failure) -> [Recipient]? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let output: ChildProcess.Output
        do {
            // The hook inherits the daemon's whole environment (COMPAT.md §10.2).
            output = try await ChildProcess.run(path, arguments: [address], timeout: timeout)
        } catch {
            throw Failure(description: error.description)
        }
        // Go's exec errors as they are (`exit status 1`, `signal: killed`
        // at the deadline): chasquid-util shows `Error resolving: <this>`.
        guard output.succeeded else { throw Failure(description: output.goErrorText) }
        let text = String(decoding: output.stdout, as: UTF8.self).trimmingWhitespace()
        do {
            return try AliasesFile.parseRightSide(text, domain: Address.domain(of: address))
        } catch {
            throw Failure(description: "alias-resolve hook output: \(error)", isParseError: true)
        }
    }
}
