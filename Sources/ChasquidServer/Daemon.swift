import Aliases
import CSystemShims
import ChasquidConfig
import ChasquidProto
import Courier
import DKIM
import DNS
import Dispatch
import DomainInfo
import DovecotAuth
import DurableFiles
import Foundation
import GoCompat
import GoErrors
import Instrumentation
import LocalDomains
import Logging
import MailLog
import MailQueue
import MTASTS
import Monitoring
import NIOCore
import NIOPosix
import Normalization
import RemoteDelivery
import SMTPCore
import SMTPServer
import SPF
import Synchronization

/// The daemon's command-line options (COMPAT.md §11.1).
public struct DaemonOptions: Sendable {
    public var configDirectory = "/etc/chasquid"
    public var configOverrides = ""
    public var verbose = false
    public var logFile = ""
    public var logTime = false
    public var alsoLogToStderr = false
    /// `-logtosyslog`: the daemon log goes to syslog with this tag.
    public var syslogTag = ""
    public var maxReceivedHeaders = SMTPDefaults.maxReceivedHeaders
    public var reloadEvery: Duration = .seconds(30)
    /// The first delay after failed AUTH attempts (AuthThrottle); the
    /// longest is 16 times it.
    public var authDelay: Duration = .milliseconds(500)
    public var outgoingSMTPPort = 25
    /// The MDA's and pipe aliases' time limit (tests only; chasquid's 30 s).
    public var deliveryTimeout: Duration = .seconds(30)
    /// Every wait between delivery rounds, instead of chasquid's schedule
    /// (tests only).
    public var retryDelay: Duration?
    /// The HTTPS port of MTA-STS policy hosts (tests only).
    public var stsPort = 443
    /// `host:port` of the one DNS server to ask; empty means /etc/resolv.conf.
    public var dnsServer = ""
    /// For the monitoring server's `/debug/flags` and `/debug/vars`.
    public var flagsText = ""
    public var commandLine: [String] = []

    public init() {}
}

/// A start-up failure: the message is printed and the daemon exits 1.
public struct StartupError: Error, CustomStringConvertible {
    public var description: String
}

/// Assembles and runs the server, in chasquid's start-up order (COMPAT.md
/// §11.4): config, chdir, mail log, certs, domains, queue, listeners, local
/// RPC, listen.
public final class Daemon: Sendable {
    public let options: DaemonOptions
    public let config: Config
    /// Read again on SIGHUP, only to say what waits for a restart.
    let configPath: String
    let logger: Logger
    let mailLog: MailLog
    let domains: LocalDomainStore
    let policy: ServerPolicy
    /// Per-domain TLS security levels (`<data_dir>/domaininfo`).
    let securityLevels: DomainInfoStore
    let queue: MailQueue
    let dkimKeys: DKIMKeyStore
    /// MTA-STS policies for outgoing mail (`<data_dir>/sts-cache`).
    let stsCache: STSPolicyCache
    let listeners: [Listener]
    let rpc: LocalRPCServer
    let certificates: CertificateStore
    let registry = ConnectionRegistry()
    private let serving = Mutex<Serving?>(nil)
    private let shuttingDown = Atomic<Bool>(false)
    private let shutdownDone: AsyncStream<Void>
    private let shutdownFinished: AsyncStream<Void>.Continuation
    /// The monitoring HTTP server, when `monitoring_address` is set.
    let monitoring: MonitoringServer?
    /// How long a shutdown waits for transactions in progress.
    public static let drainTimeout: Duration = .seconds(60)

    /// The daemon as `main` starts it: logging from the flags, the config
    /// loaded, then a chdir into the config directory (COMPAT.md §2, §11.4),
    /// so every path is relative to it as the admin wrote it.
    public convenience init(options given: DaemonOptions) async throws(StartupError) {
        var options = given
        // -logfile is resolved before the chdir into the config dir
        // (COMPAT.md §2), so SIGHUP reopens the file the admin named.
        if !options.logFile.isEmpty && !options.logFile.hasPrefix("/") {
            options.logFile = FileManager.default.currentDirectoryPath + "/" + options.logFile
        }
        var sinks = DaemonLogHandler.Sinks(
            stderrTimestamps: options.logTime, syslog: !options.syslogTag.isEmpty, verbose: options.verbose)
        if !options.syslogTag.isEmpty {
            // One identity per process: a mail log to syslog later reopens with "chasquid".
            openlog(strdup(options.syslogTag), LOG_PID, LOG_DAEMON)
        }
        if !options.logFile.isEmpty {
            sinks.file = options.logFile
            sinks.stderr = options.alsoLogToStderr
            do {
                // Opened by the name given (we have not moved yet), so an
                // error names it as the admin wrote it.
                try DaemonLogHandler.openFile(given.logFile)
            } catch {
                throw StartupError(description: "Error opening log file: \(error)")
            }
        }
        let logger = Logger(label: "chasquid") { _ in DaemonLogHandler(sinks: sinks) }

        let configPath = options.configDirectory + "/chasquid.conf"
        let config: Config
        do {
            config = try Configuration.load(path: configPath, overrides: options.configOverrides)
        } catch {
            throw StartupError(description: "Error loading config: \(error.loadingDescription)")
        }
        guard FileManager.default.changeCurrentDirectoryPath(options.configDirectory) else {
            throw StartupError(description: "Error changing to config dir \(options.configDirectory)")
        }
        try await self.init(config: config, options: options, logger: logger, baseDirectory: "")
    }

    /// Builds the server from a loaded config: mail log, monitoring,
    /// certificates, domains, DNS, domain info, queue, listeners, local RPC.
    /// Paths in the config and the `certs/`, `domains/` and `hooks/`
    /// directories are taken relative to `baseDirectory` (with its trailing
    /// `/`), or to the working directory when it is empty, as after `main`'s
    /// chdir. Tests build servers this way, side by side in one process.
    public init(config: Config, options: DaemonOptions, logger: Logger, baseDirectory: String) async throws(StartupError) {
        self.options = options
        self.config = config
        self.configPath = baseDirectory + "chasquid.conf"
        self.logger = logger
        let (shutdownDone, shutdownFinished) = AsyncStream<Void>.makeStream()
        self.shutdownDone = shutdownDone
        self.shutdownFinished = shutdownFinished
        let workingDirectory =
            baseDirectory.isEmpty ? FileManager.default.currentDirectoryPath : (baseDirectory.hasSuffix("/") ? String(baseDirectory.dropLast()) : baseDirectory)
        func path(_ relative: String) -> String { relative.hasPrefix("/") ? relative : baseDirectory + relative }

        // A relative path stays relative to the config dir, as the admin
        // wrote it: errors name it that way, and the cwd never changes again.
        let destination = MailLog.Destination(configValue: config.mailLogPath.hasPrefix("<") ? config.mailLogPath : path(config.mailLogPath))
        do {
            mailLog = try MailLog(destination)
        } catch {
            throw StartupError(description: "Error opening mail log: \(error)")
        }

        // Metrics and traces are kept only when something can show them.
        let metrics: ServerMetrics
        let traces: TraceRegistry?
        let queueBox = Mutex<MailQueue?>(nil)
        let owner = Mutex(WeakDaemon())
        (metrics, traces, monitoring) = try await Self.startMonitoring(
            config: config, options: options, logger: logger,
            queueStatus: { await queueBox.withLock { $0 }?.status ?? [] },
            exit: {
                // The same way out as SIGTERM: drain, then `run` returns.
                logger.info("POST /exit on the monitoring server")
                let daemon = owner.withLock { $0.daemon }
                Task { await daemon?.shutdown(reason: "POST /exit") }
            })

        // Dovecot as the fallback users database (COMPAT.md §14). Its sockets
        // are looked for again on every use until found, so a Dovecot that
        // starts after us is only a warning here.
        var dovecot: DovecotAuth?
        if config.dovecotAuth {
            let auth = DovecotAuth(userdbPath: config.dovecotUserdbPath, clientPath: config.dovecotClientPath)
            do {
                try auth.check()
            } catch {
                logger.error("Warning: Dovecot auth is not responding: \(error)")
            }
            logger.info("Fallback authenticator: \(auth)")
            dovecot = auth
        }

        do {
            certificates = try CertificateStore(certsDirectory: path("certs/"), hostname: config.hostname) {
                logger.info("\($0)")
            }
        } catch {
            throw StartupError(description: error.description)
        }
        for entry in certificates.entries { logger.info("Loaded certificate \(entry.directory) for \(entry.names)") }
        logger.info("Clients without SNI get the certificate in \(certificates.defaultDirectory)")

        let rules = AliasRules(suffixSeparators: config.suffixSeparators, dropCharacters: config.dropCharacters)
        do {
            domains = try LocalDomainStore(domainsDirectory: path("domains/"), rules: rules)
        } catch {
            throw StartupError(description: "Error loading domains: \(error)")
        }
        do {
            dkimKeys = try DKIMKeyStore(domains: domains.snapshot)
        } catch {
            throw StartupError(description: "Error loading domains: \(error)")
        }
        for line in Self.describe(domains.snapshot, dkimKeys: dkimKeys) { logger.info("\(line)") }

        let resolverConfiguration: ResolverConfiguration
        do {
            resolverConfiguration = options.dnsServer.isEmpty ? .system() : try .single(options.dnsServer)
        } catch {
            throw StartupError(description: "Invalid -testing__dns_addr: \(error)")
        }
        let dns = StubResolver(configuration: resolverConfiguration)
        logger.info("DNS servers: \(resolverConfiguration.servers.map { "\($0)" }.joined(separator: ", "))")

        // Relative to the config dir, and named as the admin wrote it.
        let dataDirectory = path(config.dataDir)
        do {
            try makeDirectories(dataDirectory, mode: 0o700)
        } catch {
            throw StartupError(description: "Error creating data directory: \(error)")
        }
        do {
            securityLevels = try DomainInfoStore(directory: dataDirectory + "/domaininfo") { domain, error in
                logger.info("Error writing domain info for \(domain): \(error)")
            }
        } catch {
            throw StartupError(description: "Error opening domain info database: \(error)")
        }
        let levels = securityLevels
        for skipped in levels.lastLoad.skipped { logger.info("Domain info: skipped \(skipped)") }
        for name in levels.orphanedNames(normalize: { try? Normalize.domain($0) }) {
            // A record under a name we no longer look up (COMPAT.md §22.7).
            logger.info("Domain info: record for \"\(name)\" is not under its normalised name, and is not used")
        }

        // After domain info, before the queue (chasquid's order).
        do {
            let fetcher = STSPolicyFetcher(dns: dns, tlsContext: try RemoteCourier.makeVerifyingContext(), port: options.stsPort)
            stsCache = try STSPolicyCache(
                directory: dataDirectory + "/sts-cache", fetcher: fetcher,
                onEvent: { event in
                    if let counter = MetricCatalog.stsCache[event.rawValue] { metrics.count(counter) }
                })
        } catch {
            throw StartupError(description: "Failed to initialize STS cache: \(error)")
        }

        let aliasHook = ResolveHook(path: workingDirectory + "/hooks/alias-resolve", metrics: metrics)
        let policy = ServerPolicy(
            domains: domains, aliasHook: aliasHook, dovecot: dovecot, mailLog: mailLog,
            spf: SPFChecker(dns: dns, receivingHost: config.hostname), securityLevels: levels, metrics: metrics,
            authThrottle: Self.authThrottle(config: config, options: options),
            requireSenderMatch: config.requireSenderMatch)
        self.policy = policy
        let domainStore = domains
        let environment = QueueEnvironment(
            resolve: { address in try await policy.resolver().resolve(address) },
            isLocal: { domainStore.snapshot.isLocal($0) })
        let remoteCourier: RemoteCourier
        do {
            remoteCourier = try RemoteCourier(
                settings: RemoteCourier.Settings(hostname: config.hostname, port: options.outgoingSMTPPort), dns: dns,
                levels: levels, metrics: metrics, sts: stsCache)
        } catch {
            throw StartupError(description: "Error setting up outgoing TLS: \(error)")
        }
        let mda = MDACourier(
            binary: config.mailDeliveryAgentBin, arguments: config.mailDeliveryAgentArgs, timeout: options.deliveryTimeout)
        if let problem = mda.startProblem() {
            // Not fatal: a site may deliver nothing locally. Local mail waits
            // in the queue (a temporary failure) until this is fixed.
            logger.error("Warning: \(problem): local deliveries will wait in the queue until it is fixed")
        }
        let couriers = Couriers(
            local: mda,
            pipe: PipeCourier(timeout: options.deliveryTimeout),
            remote: remoteCourier)
        var retryDelay = QueueSettings.chasquidRetryDelay
        if let fixed = options.retryDelay { retryDelay = { _ in fixed } }
        let giveUp = Duration.nanoseconds((try? GoDuration.parse(config.giveUpSendAfter)) ?? 72_000_000_000_000)
        queue = MailQueue(
            settings: QueueSettings(
                directory: dataDirectory + "/queue", maxItems: Int(config.maxQueueItems), giveUpAfter: giveUp,
                retryDelay: retryDelay),
            environment: environment, couriers: couriers, log: mailLog, metrics: metrics, traces: traces,
            logger: logger)
        let createdQueue = queue
        queueBox.withLock { $0 = createdQueue }
        do {
            for problem in try await queue.load() { logger.info("Queue: \(problem)") }
        } catch .storage(let reason) {
            // Go's error alone: `mkdir ../data/queue: not a directory`.
            throw StartupError(description: "Error initializing queue: \(reason)")
        } catch {
            throw StartupError(description: "Error initializing queue: \(error)")
        }

        let hook = PostDataHook(
            path: workingDirectory + "/hooks/post-data", configDirectory: workingDirectory, metrics: metrics,
            logger: logger)
        let queueForSpools = queue
        let dkim = DKIMStep(
            keys: { [dkimKeys] domain in dkimKeys.keys(for: domain) },
            // chasquid sets no limit; 20 s in all keeps a client from waiting
            // on slow DNS for long (as SPF's limit does).
            verifier: DKIMVerifier(lookupBudget: .seconds(20), lookup: DKIMVerifier.lookup(using: dns)),
            newSpool: { try queueForSpools.newSpool() }, metrics: metrics,
            now: { Int(Date().timeIntervalSince1970) })
        let sink = QueueSink(
            queue: queue, hook: hook, mailLog: mailLog, dkim: dkim, storageLog: RateLimitedLog(logger: logger),
            isLocal: { domainStore.snapshot.isLocal($0) })
        let limits = Self.connectionLimits(config: config)
        let limitsText =
            "Connection limits: \(limits.total == 0 ? "none" : "\(limits.total)") in all, "
            + "\(limits.perNetwork == 0 ? "none" : "\(limits.perNetwork)") per client network"
        logger.info("\(limitsText)")
        var listeners = try Self.makeListeners(
            config: config, options: options, logger: logger, certificates: certificates, policy: policy, sink: sink,
            mailLog: mailLog, registry: registry, metrics: metrics, traces: traces)
        let logBudget = ClientLogBudget(networkOf: { ClientNetwork.limited($0) })
        for index in listeners.indices {
            listeners[index].limits = limits
            listeners[index].logBudget = logBudget
        }
        if listeners.isEmpty { throw StartupError(description: "No address to listen on") }
        self.listeners = listeners
        rpc = LocalRPCServer(
            socketPath: dataDirectory + "/localrpc-v1", policy: policy, securityLevels: levels, logger: logger)
        owner.withLock { $0.daemon = self }
    }

    /// Metrics and traces are kept only when something can show them: the
    /// monitoring server, started here when `monitoring_address` is set.
    private static func startMonitoring(
        config: Config, options: DaemonOptions, logger: Logger,
        queueStatus: @escaping @Sendable () async -> [QueueItemStatus], exit: @escaping @Sendable () -> Void
    ) async throws(StartupError) -> (ServerMetrics, TraceRegistry?, MonitoringServer?) {
        guard !config.monitoringAddress.isEmpty else { return (.discarding, nil, nil) }
        let backends = MetricsBackends()
        let metrics = backends.metrics
        metrics.set(MetricCatalog.sourceDateTimestamp, Double(ChasquidVersion.sourceDateTimestamp))
        let traces = TraceRegistry()
        let sources = MonitoringSources(
            hostname: config.hostname, version: ChasquidVersion.version, sourceDate: ChasquidVersion.sourceDate,
            started: Date(), commandLine: options.commandLine, configText: Configuration.render(config),
            flagsText: options.flagsText, metrics: backends, traces: traces, queueStatus: queueStatus, exit: exit)
        let monitoring: MonitoringServer
        do {
            guard case .address(let host, let port) = try ListenSocket(parsing: config.monitoringAddress) else {
                throw StartupError(description: "invalid address")
            }
            monitoring = try await MonitoringServer.bind(
                host: host, port: port, site: MonitoringSite(sources: sources), group: MultiThreadedEventLoopGroup.singleton)
        } catch {
            throw StartupError(
                description: "Monitoring server failed: "
                    + listenFailure(error, address: config.monitoringAddress, role: "monitoring"))
        }
        logger.info("Monitoring HTTP server listening on \(config.monitoringAddress)")
        return (metrics, traces, monitoring)
    }

    /// One listener per address of each mode; `systemd` takes the sockets
    /// systemd passed under that mode's name.
    private static func makeListeners(
        config: Config, options: DaemonOptions, logger: Logger, certificates: CertificateStore, policy: ServerPolicy,
        sink: QueueSink, mailLog: MailLog, registry: ConnectionRegistry, metrics: ServerMetrics, traces: TraceRegistry?
    ) throws(StartupError) -> [Listener] {
        var listeners: [Listener] = []
        let systemdSockets: [String: [Int32]]
        do {
            systemdSockets = try SystemdSockets.take()
        } catch {
            throw StartupError(description: "Error getting systemd listeners: \(error)")
        }
        for (mode, addresses, systemdName) in [
            (ListenerMode.smtp, config.smtpAddress, "smtp"),
            (.submission, config.submissionAddress, "submission"),
            (.submissionTLS, config.submissionOverTlsAddress, "submission_tls"),
        ] {
            let settings = ConnectionSettings(
                mode: mode, hostname: config.hostname, maxDataSize: Int(config.maxDataSizeMb) * 1024 * 1024,
                maxReceivedHeaders: options.maxReceivedHeaders, expectsProxyHeader: config.haproxyIncoming)
            var sockets: [(ListenSocket, String?)] = []
            for address in addresses {
                if address.isEmpty { throw StartupError(description: "Invalid empty listening address for \(mode.rawValue)") }
                if address == "systemd" {
                    let fds = systemdSockets[systemdName] ?? []
                    if fds.isEmpty { logger.info("No systemd sockets for \(mode.rawValue)") }
                    sockets += fds.map { (.systemd(descriptor: $0), nil) }
                    continue
                }
                do {
                    sockets.append((try ListenSocket(parsing: address), address))
                } catch {
                    throw StartupError(description: "Error listening: \(error)")
                }
            }
            for (socket, address) in sockets {
                var listener = Listener(
                    socket: socket, settings: settings, certificates: certificates, policy: policy, sink: sink,
                    logger: logger, mailLog: mailLog, registry: registry, metrics: metrics, traces: traces)
                listener.configuredAddress = address
                listeners.append(listener)
            }
        }
        return listeners
    }

    /// Makes the event loops Swift concurrency's global executor, so a
    /// connection's task runs on the thread that reads its socket instead
    /// of hopping to the cooperative pool and back on every read and write
    /// (two thread switches per reply; docs/benchmarks.md). Blocking calls
    /// never run on it: they go to `BlockingWork`'s pools. Call once, first
    /// thing in `main`, before any task exists.
    public static func runTasksOnEventLoops() {
        _ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        // glibc gives each thread that allocates its own arena, up to 8 per
        // core, each keeping its freed memory: with the blocking pools'
        // threads that was most of the peak RSS, and each new arena read
        // /sys for the CPU count. One arena per event loop (one per core).
        _ = csystem_limit_malloc_arenas(Int32(max(2, System.coreCount)))
    }

    /// Binds every listener, then serves until `shutdown` has drained them.
    /// - Parameter onListening: called once every socket is bound (tests
    ///   read the ports that port 0 picked).
    public func run(onListening: @Sendable ([BoundListener]) -> Void = { _ in }) async throws(StartupError) {
        let group = MultiThreadedEventLoopGroup.singleton
        var bound: [BoundListener] = []
        for listener in listeners {
            do {
                let b = try await listener.bind(group: group)
                bound.append(b)
                mailLog.listening(b.localAddress)
                logger.info("Server listening on \(b.localAddress) (\(listener.settings.mode.rawValue))")
            } catch {
                for b in bound { await b.stopAccepting() }
                throw StartupError(
                    description: "Error listening: \(Self.listenFailure(error, listener: listener))")
            }
        }
        let rpcServer: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
        do {
            rpcServer = try await rpc.bind(group: group)
        } catch {
            for b in bound { await b.stopAccepting() }
            throw StartupError(description: "Error starting local RPC: \(error)")
        }
        let running = bound
        serving.withLock { $0 = Serving(listeners: running, rpc: rpcServer.channel) }
        if isShuttingDown {
            // A signal came while binding: stop what was just started.
            for listener in running { await listener.stopAccepting() }
            try? await rpcServer.channel.close()
            return
        }
        onListening(bound)
        let logger = self.logger
        let domains = self.domains
        let reloadEvery = options.reloadEvery
        let tasks = Task {
            await withDiscardingTaskGroup { tasks in
                for listener in running {
                    tasks.addTask {
                        do { try await listener.serve() } catch { logger.info("Listener \(listener.localAddress) ended: \(error)") }
                    }
                }
                tasks.addTask {
                    do { try await self.rpc.serve(rpcServer) } catch { logger.info("Local RPC ended: \(error)") }
                }
                if let monitoring = self.monitoring {
                    tasks.addTask {
                        do { try await monitoring.serve() } catch { logger.info("Monitoring server ended: \(error)") }
                    }
                }
                let sts = self.stsCache
                tasks.addTask {
                    // chasquid's refresh: a first pass now, then every 10 min.
                    await sts.refreshPeriodically(every: .seconds(600), timeout: .seconds(30))
                }
                tasks.addTask {
                    await domains.reloadPeriodically(
                        every: reloadEvery, onNewNote: { logger.info("Domains: \($0)") },
                        onError: { error in
                            logger.info("Error reloading users and aliases (keeping the previous ones): \(error)")
                        })
                }
            }
        }
        // `shutdown` ends the stream once everything is drained and closed.
        for await _ in shutdownDone {}
        tasks.cancel()
        await tasks.value
    }

    /// What `run` started, for `shutdown` to stop.
    private struct Serving {
        var listeners: [BoundListener]
        var rpc: any Channel
    }

    /// SIGHUP: reopens the logs and reloads domains, domain info and
    /// certificates; a failed reload keeps what was loaded before.
    public func reload() {
        logger.info("Received SIGHUP, reloading")
        // A failed reopen keeps writing to the old file (chasquid
        // exits instead), and says so where it can still be read.
        if !options.logFile.isEmpty {
            do {
                try DaemonLogHandler.openFile(options.logFile)
            } catch {
                logger.error("Error reopening log file: \(error)")
            }
        }
        do {
            try mailLog.reopen()
        } catch {
            logger.error("Error reopening mail log: \(error)")
        }
        do {
            try domains.reload()
        } catch {
            logger.info("Error reloading users and aliases (keeping the previous ones): \(error)")
        }
        // chasquid reads DKIM keys only at start-up; we also reload them
        // here (COMPAT.md §22.2), keeping the old ones if one fails.
        do {
            try dkimKeys.reload(domains: domains.snapshot)
        } catch {
            logger.info("Error reloading DKIM keys (keeping the previous ones): \(error)")
        }
        // chasquid exits on a broken domaininfo file; like users and
        // aliases, we keep the levels we have (docs/compatibility.md).
        do {
            try securityLevels.reload()
        } catch {
            logger.info("Error reloading domain info (keeping the previous levels): \(error)")
        }
        // chasquid restarts for new certificates; we reload them (COMPAT.md §22.2).
        do {
            try certificates.reload { logger.info("\($0)") }
        } catch {
            logger.info("Error reloading certificates (keeping the previous ones): \(error)")
        }
        // What is in use now, whatever failed above.
        for line in Self.describe(domains.snapshot, dkimKeys: dkimKeys) { logger.info("\(line)") }
        for entry in certificates.entries { logger.info("Certificate \(entry.directory) for \(entry.names)") }
        logger.info("Clients without SNI get the certificate in \(certificates.defaultDirectory)")
        if let change = configurationChange() { logger.info("\(change)") }
    }

    /// `max_connections` (unset: 90% of the open-files limit) and
    /// `max_connections_per_ip` (unset: 50); 0 is no limit.
    static func connectionLimits(config: Config) -> ConnectionLimits {
        var total = Int(config.maxConnections)
        if !config.hasMaxConnections {
            var limit = rlimit()
            getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
            let files = Int(clamping: limit.rlim_cur)  // RLIM_INFINITY is the largest value
            total = max(100, files / 10 * 9)
        }
        let perNetwork =
            config.hasMaxConnectionsPerIp ? Int(config.maxConnectionsPerIp) : Int(Configuration.defaultMaxConnectionsPerIP)
        return ConnectionLimits(total: total, perNetwork: perNetwork, networkOf: { ClientNetwork.limited($0) })
    }

    /// Raises the soft open-files limit to the hard one, as Go programs do
    /// at start (chasquid among them): systemd's default soft limit, 1024,
    /// would otherwise cap the connections held.
    public static func raiseOpenFileLimit() {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max
        else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    }

    /// `auth_failure_limit` (0: none) with the test flag's delay.
    static func authThrottle(config: Config, options: DaemonOptions) -> AuthThrottle? {
        let limit = config.hasAuthFailureLimit ? config.authFailureLimit : Configuration.defaultAuthFailureLimit
        guard limit > 0 else { return nil }
        var settings = AuthThrottle.Settings(baseDelay: options.authDelay)
        settings.maxFailures = Int(limit)
        return AuthThrottle(settings: settings)
    }

    /// Go's words for a failed bind (`listen tcp 127.0.0.1:25: bind: address
    /// already in use`), with the listener's mode and, for a port the user
    /// may not bind, what would allow it.
    static func listenFailure(_ error: any Error, listener: Listener) -> String {
        listenFailure(error, address: listener.configuredAddress ?? "\(listener.socket)", role: listener.settings.mode.rawValue)
    }

    static func listenFailure(_ error: any Error, address: String, role: String) -> String {
        guard let io = error as? IOError else { return "\(address) (\(role)): \(error)" }
        let operation = io.description.hasPrefix("listen(") ? "listen" : "bind"
        var text = "listen tcp \(address) (\(role)): \(operation): \(goErrnoText(io.errnoCode))"
        if io.errnoCode == EACCES {
            text += " (ports below 1024 need root, CAP_NET_BIND_SERVICE, or sockets from systemd: docs/install.md)"
        } else if io.errnoCode == EADDRINUSE {
            text += " (another server, or another chasquid, is listening there)"
        } else if io.errnoCode == EADDRNOTAVAIL {
            text += " (no interface of this machine has that address)"
        }
        return text
    }

    /// The domains as loaded, one line each, after what was skipped or merged.
    static func describe(_ snapshot: DomainSnapshot, dkimKeys: DKIMKeyStore) -> [String] {
        snapshot.notes.map { "Domains: \($0)" }
            + ["Domains: \(snapshot.domains.count) loaded"]
            + snapshot.domains.values.sorted(by: { $0.name < $1.name }).map { domain in
                let keyCount = dkimKeys.keys(for: domain.name).count
                return "  \(domain.name) (\(domain.users.count) users, \(domain.aliases.count) aliases, \(keyCount) DKIM keys)"
            }
    }

    /// SIGHUP reloads files, not chasquid.conf: when the file now says
    /// something else, which fields wait for a restart (or why a restart
    /// would fail); nil when it is unchanged.
    func configurationChange() -> String? {
        let fresh: Config
        do {
            fresh = try Configuration.load(path: configPath, overrides: options.configOverrides, hostname: config.hostname)
        } catch {
            return "chasquid.conf no longer loads, so a restart would fail (still running with the loaded one): \(error.loadingDescription)"
        }
        let changed = Self.changedFields(from: config, to: fresh)
        if changed.isEmpty { return nil }
        return "chasquid.conf changed (\(changed.joined(separator: ", "))): restart chasquid for that to take effect"
    }

    /// The fields whose rendered lines differ, in file order.
    static func changedFields(from old: Config, to new: Config) -> [String] {
        func fields(_ config: Config) -> [(String, [String])] {
            var result: [(String, [String])] = []
            for line in Configuration.render(config).split(separator: "\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let key = line[..<colon].trimmingCharacters(in: .whitespaces)
                if let index = result.firstIndex(where: { $0.0 == key }) {
                    result[index].1.append(String(line))
                } else {
                    result.append((key, [String(line)]))
                }
            }
            return result
        }
        let before = fields(old)
        let after = fields(new)
        let keys = (before.map(\.0) + after.map(\.0)).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        return keys.filter { key in
            before.first(where: { $0.0 == key })?.1 != after.first(where: { $0.0 == key })?.1
        }
    }

    /// Stops the server (SIGTERM, SIGINT, `/exit`): no new connections, idle
    /// sessions get a 421, messages in DATA finish (COMPAT.md §22.1; chasquid
    /// exits at once), then the queue's loops stop (items stay on disk) and
    /// the local RPC and monitoring sockets close; `run` then returns.
    /// Returns at once if a shutdown is already under way.
    public func shutdown(reason: String) async {
        if shuttingDown.exchange(true, ordering: .relaxed) { return }
        logger.info("\(reason), draining \(registry.count) connections")
        let running = serving.withLock { $0 }
        for listener in running?.listeners ?? [] { await listener.stopAccepting() }
        registry.beginShutdown()
        await registry.drain(timeout: Daemon.drainTimeout)
        // Time is up for any still open: `run` must not wait on them.
        registry.closeAll()
        await queue.stop()
        try? await running?.rpc.close()
        await monitoring?.close()
        logger.info("Exiting")
        shutdownFinished.finish()
    }

    /// True once `shutdown` has begun: a second signal then ends the process at once.
    public var isShuttingDown: Bool { shuttingDown.load(ordering: .relaxed) }
}

/// systemd socket activation (COMPAT.md §11.3): the sockets passed in
/// LISTEN_FDS, by LISTEN_FDNAMES name.
/// The monitoring server's `/exit` reaches the daemon through this, without
/// keeping it alive.
private struct WeakDaemon {
    weak var daemon: Daemon?
}

enum SystemdSockets {
    struct Failure: Error, CustomStringConvertible { var description: String }

    static func take() throws(Failure) -> [String: [Int32]] {
        let env = ProcessInfo.processInfo.environment
        guard let pidText = env["LISTEN_PID"], let countText = env["LISTEN_FDS"] else { return [:] }
        defer {
            unsetenv("LISTEN_PID")
            unsetenv("LISTEN_FDS")
            unsetenv("LISTEN_FDNAMES")
        }
        guard let pid = Int32(pidText), pid == getpid() else {
            throw Failure(description: "LISTEN_PID \(pidText) is not our pid \(getpid())")
        }
        guard let count = Int(countText), count >= 0 else { throw Failure(description: "invalid LISTEN_FDS \(countText)") }
        var names = Array(repeating: "", count: count)
        if let namesText = env["LISTEN_FDNAMES"] {
            let given = namesText.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard given.count == count else {
                throw Failure(description: "Incorrect LISTEN_FDNAMES, have you set FileDescriptorName?")
            }
            names = given
        }
        var result: [String: [Int32]] = [:]
        for index in 0..<count {
            let fd = Int32(3 + index)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            result[names[index], default: []].append(fd)
        }
        return result
    }
}
