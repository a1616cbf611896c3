// swift-tools-version:6.2
import PackageDescription

// Settings every target shares: Swift 6 mode comes with tools 6.0; these add
// the upcoming features we hold ourselves to.
let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .treatAllWarnings(as: .error),
]

let package = Package(
    name: "chasquid",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "chasquid", targets: ["chasquid"]),
        .executable(name: "chasquid-util", targets: ["chasquid-util"]),
        .executable(name: "maildir-deliver", targets: ["maildir-deliver"]),
        .executable(name: "mda-lmtp", targets: ["mda-lmtp"]),
        .executable(name: "smtp-check", targets: ["smtp-check"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/apple/swift-crypto", exact: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl", exact: "2.37.6"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        .package(url: "https://github.com/apple/swift-certificates", exact: "1.21.1"),
        // Tests only: reads the SPF conformance suite (YAML).
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
    ],
    targets: [
        // Messages generated from proto/*.proto (see proto/generate.sh).
        .target(
            name: "ChasquidProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: strictSettings
        ),
        // Crash-safe file writes: temp file, fsync, rename, directory fsync.
        .target(name: "DurableFiles", dependencies: ["BlockingWork", "GoErrors"], swiftSettings: strictSettings),
        // The bounded thread pools that blocking calls (fsync, child waits) run on.
        .target(
            name: "BlockingWork", dependencies: [.product(name: "NIOPosix", package: "swift-nio")],
            swiftSettings: strictSettings),
        // System errors spelt as Go spells them (errno texts, exit statuses).
        .target(name: "GoErrors", swiftSettings: strictSettings),
        // Go's text formats chasquid's files and logs carry: %q quoting, durations,
        // query escaping, RFC 1123 dates.
        .target(name: "GoCompat", swiftSettings: strictSettings),
        // User, domain and address normalisation (PRECIS, IDNA/Punycode).
        .target(name: "Normalization", dependencies: ["IDNA"], swiftSettings: strictSettings),
        // IDNA (UTS #46) and Punycode, with tables generated from Unicode data
        // (scripts/gen-unicode-tables.py); the Bidi Rule and CONTEXTJ.
        .target(name: "IDNA", swiftSettings: strictSettings),
        // chasquid.conf: schema, defaults, layering, validation, printing.
        .target(
            name: "ChasquidConfig",
            dependencies: [
                "ChasquidProto", "GoCompat", "GoErrors",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strictSettings
        ),
        // Per-domain users databases: scrypt, plain and denied entries.
        .target(
            name: "UserDatabase",
            dependencies: [
                "ChasquidProto", "DurableFiles", "Normalization",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        // Aliases files: the parser and the resolver.
        .target(
            name: "Aliases", dependencies: ["Normalization", "ChildProcess", "Instrumentation"],
            swiftSettings: strictSettings),
        // Running hooks and delivery agents: process groups, deadlines, pipes.
        .target(
            name: "ChildProcess", dependencies: ["BlockingWork", "CSystemShims", "GoErrors"],
            swiftSettings: strictSettings),
        .target(name: "CSystemShims"),
        // The set of local domains, with their users and aliases, reloadable as one snapshot.
        .target(
            name: "LocalDomains",
            dependencies: ["Aliases", "DurableFiles", "UserDatabase", "Normalization"],
            swiftSettings: strictSettings
        ),
        // The local RPC between chasquid-util and the daemon (Unix socket, form-encoded).
        .target(name: "LocalRPC", dependencies: ["GoCompat", "StreamSocket"], swiftSettings: strictSettings),
        // Blocking stream connections (Unix, TCP) with deadlines, for short line protocols.
        .target(name: "StreamSocket", dependencies: ["GoErrors"], swiftSettings: strictSettings),
        // Dovecot's auth protocol: user lookup and PLAIN authentication (the fallback users database).
        .target(
            name: "DovecotAuth", dependencies: ["BlockingWork", "GoCompat", "StreamSocket"],
            swiftSettings: strictSettings),
        // Per-domain TLS security levels (domaininfo/s:*): upward-only checks, atomic writes.
        .target(
            name: "DomainInfo",
            dependencies: [
                "ChasquidProto", "DurableFiles", "GoCompat",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strictSettings
        ),
        // SMTP protocol logic with no I/O: framing, DATA decoding, the session.
        .target(name: "SMTPCore", dependencies: ["GoCompat", "Normalization"], swiftSettings: strictSettings),
        // DNS: the wire format, a stub resolver over UDP and TCP, IP addresses.
        .target(
            name: "DNS",
            dependencies: [
                "GoCompat",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        // SPF (RFC 7208): check_host() over any DNSLookup.
        .target(name: "SPF", dependencies: ["DNS"], swiftSettings: strictSettings),
        // The SMTP client connection: replies, STARTTLS, deadlines (NIO).
        .target(
            name: "SMTPClient",
            dependencies: [
                "SMTPCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSettings
        ),
        // Remote delivery: MX order, TLS levels and downgrade checks, the courier.
        .target(
            name: "RemoteDelivery",
            dependencies: [
                "Courier", "DNS", "DomainInfo", "GoCompat", "IDNA", "Instrumentation", "MTASTS", "Normalization",
                "SMTPClient", "SMTPCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSettings
        ),
        // Metrics (swift-metrics, by their COMPAT.md §19 names) and traces: recording only, no I/O.
        .target(
            name: "Instrumentation",
            dependencies: [.product(name: "CoreMetrics", package: "swift-metrics")],
            swiftSettings: strictSettings
        ),
        // The monitoring HTTP server (NIOHTTP1): /metrics, /debug/vars, queue, traces, config pages.
        .target(
            name: "Monitoring",
            dependencies: [
                "ChasquidProto", "GoCompat", "Instrumentation", "MailQueue", "Normalization",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        // The mail log (COMPAT.md §18).
        .target(name: "MailLog", dependencies: ["GoCompat", "GoErrors"], swiftSettings: strictSettings),
        // Delivering one message to one recipient: the protocol, its results, the MDA
        // and pipe couriers.
        .target(
            name: "Courier",
            dependencies: ["ChildProcess", "CSystemShims", "DurableFiles", "GoCompat", "GoErrors", "Normalization"],
            swiftSettings: strictSettings),
        // The durable queue, its delivery loops and DSNs.
        .target(
            name: "MailQueue",
            dependencies: [
                "Aliases", "ChasquidProto", "Courier", "DurableFiles", "GoCompat", "Instrumentation", "MailLog",
                "Normalization",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strictSettings
        ),
        // The PROXY protocol header (v1 text, v2 binary) HAProxy sends first: parsing only.
        .target(name: "ProxyProtocol", swiftSettings: strictSettings),
        // The NIO layer: listeners, TLS (STARTTLS, SNI), connections.
        .target(
            name: "SMTPServer",
            dependencies: [
                "SMTPCore", "DurableFiles", "GoCompat", "Instrumentation", "MailLog", "Normalization", "ProxyProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // Go's flag syntax, for the daemon's and tools' command lines.
        .target(name: "GoFlags", swiftSettings: strictSettings),
        // The application: policy, hooks, queue sink, local RPC server, start-up.
        .target(
            name: "ChasquidServer",
            dependencies: [
                "Aliases", "CSystemShims", "ChasquidConfig", "ChasquidProto", "ChildProcess", "Courier", "DNS", "DomainInfo", "DovecotAuth",
                "DurableFiles",
                "GoCompat", "GoErrors", "IDNA",
                "Instrumentation", "LocalDomains", "LocalRPC", "MailLog", "MailQueue", "Monitoring", "Normalization",
                "RemoteDelivery", "SMTPCore", "SMTPServer", "SPF", "DKIM", "MTASTS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(name: "chasquid", dependencies: ["ChasquidServer", "GoFlags"], swiftSettings: strictSettings),
        .executableTarget(name: "maildir-deliver", dependencies: ["DurableFiles"], swiftSettings: strictSettings),
        // Delivering one message over LMTP (mda-lmtp's work): the dialogue and its exit statuses.
        .target(name: "LMTPDelivery", dependencies: ["GoCompat", "IDNA", "StreamSocket"], swiftSettings: strictSettings),
        .executableTarget(name: "mda-lmtp", dependencies: ["GoFlags", "LMTPDelivery"], swiftSettings: strictSettings),
        // MTA-STS (RFC 8461): the TXT record, the policy text and its MX
        // patterns, and the policy fetch over verified HTTPS.
        .target(
            name: "MTASTS",
            dependencies: [
                "DNS", "DurableFiles", "GoCompat", "IDNA",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSettings),
        // DKIM (RFC 6376, RFC 8463): chasquid's key files, signing,
        // verification, canonicalization and the tag-list grammar.
        .target(
            name: "DKIM",
            dependencies: [
                "DNS", "GoCompat",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings),
        // smtp-check's work: a domain's MX, SPF, TLS, MTA-STS, reverse DNS,
        // DKIM and DMARC as the world sees them, with the records that fix
        // each problem.
        .target(
            name: "SetupCheck",
            dependencies: [
                "DKIM", "DNS", "IDNA", "MTASTS", "SMTPClient", "SMTPCore", "SPF",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            swiftSettings: strictSettings),
        .executableTarget(
            name: "smtp-check", dependencies: ["DNS", "GoFlags", "RemoteDelivery", "SetupCheck"],
            swiftSettings: strictSettings),
        // chasquid-util's commands, as a library so tests can call them.
        .target(
            name: "AdminTool",
            dependencies: [
                "ChasquidConfig", "ChasquidProto", "DKIM", "DNS", "DurableFiles", "GoCompat", "LocalRPC", "Normalization",
                "UserDatabase",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(name: "chasquid-util", dependencies: ["AdminTool"], swiftSettings: strictSettings),
        // What the test targets share: temporary directories, a clock tests move.
        .target(name: "TestSupport", swiftSettings: strictSettings),

        .testTarget(name: "DurableFilesTests", dependencies: ["DurableFiles"], swiftSettings: strictSettings),
        .testTarget(name: "BlockingWorkTests", dependencies: ["BlockingWork"], swiftSettings: strictSettings),
        .testTarget(name: "GoErrorsTests", dependencies: ["GoErrors"], swiftSettings: strictSettings),
        .testTarget(name: "GoCompatTests", dependencies: ["GoCompat"], swiftSettings: strictSettings),
        .testTarget(name: "CourierTests", dependencies: ["Courier", "DurableFiles", "Normalization", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "MailLogTests", dependencies: ["MailLog"], swiftSettings: strictSettings),
        .testTarget(name: "NormalizationTests", dependencies: ["Normalization", "IDNA", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "IDNATests", dependencies: ["IDNA", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(name: "ChasquidConfigTests", dependencies: ["ChasquidConfig"], swiftSettings: strictSettings),
        .testTarget(
            name: "UserDatabaseTests",
            dependencies: ["UserDatabase", "ChasquidProto"],
            swiftSettings: strictSettings
        ),
        .testTarget(name: "ChildProcessTests", dependencies: ["ChildProcess"], swiftSettings: strictSettings),
        .testTarget(name: "AliasesTests", dependencies: ["Aliases"], swiftSettings: strictSettings),
        .testTarget(name: "LocalDomainsTests", dependencies: ["LocalDomains"], swiftSettings: strictSettings),
        .testTarget(name: "LocalRPCTests", dependencies: ["LocalRPC"], swiftSettings: strictSettings),
        .testTarget(
            name: "DovecotAuthTests", dependencies: ["DovecotAuth", "StreamSocket", "TestSupport"],
            swiftSettings: strictSettings),
        .testTarget(
            name: "DomainInfoTests",
            dependencies: ["DomainInfo", "ChasquidProto", "DurableFiles"],
            swiftSettings: strictSettings
        ),
        .testTarget(name: "DNSTests", dependencies: ["DNS", "ChildProcess", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(
            name: "SPFTests",
            dependencies: ["SPF", "DNS", .product(name: "Yams", package: "Yams")],
            swiftSettings: strictSettings
        ),
        .testTarget(name: "SMTPCoreTests", dependencies: ["SMTPCore", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(
            name: "MailQueueTests",
            dependencies: [
                "MailQueue", "MailLog", "Aliases", "ChasquidProto", "Courier", "DurableFiles", "GoCompat", "TestSupport",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "RemoteDeliveryTests",
            dependencies: ["RemoteDelivery", "Courier", "DNS", "DomainInfo", "SMTPClient", "SMTPCore"],
            swiftSettings: strictSettings
        ),
        .testTarget(name: "GoFlagsTests", dependencies: ["GoFlags"], swiftSettings: strictSettings),
        .testTarget(
            name: "MTASTSTests",
            dependencies: ["MTASTS", "DNS", .product(name: "NIOSSL", package: "swift-nio-ssl")],
            swiftSettings: strictSettings),
        .testTarget(
            name: "DKIMTests",
            dependencies: [
                "DKIM", "Normalization", "TestSupport", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings),
        .testTarget(name: "SMTPClientTests", dependencies: ["SMTPClient", "SMTPCore"], swiftSettings: strictSettings),
        .testTarget(
            name: "SetupCheckTests",
            dependencies: ["SetupCheck", "DNS", .product(name: "NIOSSL", package: "swift-nio-ssl")],
            swiftSettings: strictSettings),
        .testTarget(name: "ProxyProtocolTests", dependencies: ["ProxyProtocol"], swiftSettings: strictSettings),
        .testTarget(name: "LMTPDeliveryTests", dependencies: ["LMTPDelivery", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(
            name: "ChasquidServerTests",
            dependencies: [
                "ChasquidServer", "ChasquidConfig", "SMTPServer", "SMTPClient", "SMTPCore", "ChildProcess", "SPF",
                "DKIM", "DurableFiles", "Instrumentation", "Normalization", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings),
        .testTarget(name: "AdminToolTests", dependencies: ["AdminTool"], swiftSettings: strictSettings),
        .testTarget(
            name: "SMTPServerTests",
            dependencies: [
                "SMTPServer", "SMTPCore", "SMTPClient", "Instrumentation", "Monitoring", "DurableFiles", "MailLog",
                "TestSupport",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "MonitoringTests",
            dependencies: [
                "Monitoring", "Instrumentation", "MailQueue", "ChasquidProto",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strictSettings
        ),
    ]
)
