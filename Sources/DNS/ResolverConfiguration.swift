import Foundation
import GoCompat
import NIOCore

/// Where and how the stub resolver asks: the servers of /etc/resolv.conf
/// (resolv.conf(5)), or the one given by `-testing__dns_addr`.
public struct ResolverConfiguration: Sendable, Equatable {
    public var servers: [SocketAddress]
    /// How long to wait for one server's answer to one attempt.
    public var timeout: Duration
    /// Rounds over all the servers before giving up.
    public var attempts: Int
    /// Start each query at the next server instead of the first.
    public var rotate: Bool

    public init(servers: [SocketAddress], timeout: Duration = .seconds(5), attempts: Int = 2, rotate: Bool = false) {
        self.servers = servers
        self.timeout = timeout
        self.attempts = attempts
        self.rotate = rotate
    }

    /// glibc's limit on `nameserver` lines.
    public static let maximumServers = 3

    /// Parses resolv.conf text. Only `nameserver` and the `timeout:`,
    /// `attempts:` and `rotate` options matter to an MTA: it looks up fully
    /// qualified names, so `search`, `domain` and `ndots` are ignored. With no
    /// usable `nameserver`, the local host is asked, as glibc does.
    public static func parse(resolvConf text: String) -> ResolverConfiguration {
        var configuration = ResolverConfiguration(servers: [])
        for rawLine in text.split(whereSeparator: \.isNewline) {
            let line = rawLine.prefix { $0 != "#" && $0 != ";" }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let keyword = fields.first else { continue }
            switch keyword {
            case "nameserver":
                guard fields.count >= 2, configuration.servers.count < maximumServers else { continue }
                // A link-local IPv6 server may carry a zone (`fe80::1%eth0`).
                let host = fields[1].split(separator: "%").first.map(String.init) ?? ""
                if let address = try? SocketAddress(ipAddress: host, port: 53) {
                    configuration.servers.append(address)
                }
            case "options":
                for option in fields.dropFirst() {
                    if option == "rotate" {
                        configuration.rotate = true
                    } else if option.hasPrefix("timeout:"), let seconds = Int(option.dropFirst(8)) {
                        configuration.timeout = .seconds(min(max(seconds, 1), 30))
                    } else if option.hasPrefix("attempts:"), let count = Int(option.dropFirst(9)) {
                        configuration.attempts = min(max(count, 1), 5)
                    }
                }
            default:
                continue
            }
        }
        if configuration.servers.isEmpty {
            configuration.servers = [
                try! SocketAddress(ipAddress: "127.0.0.1", port: 53), try! SocketAddress(ipAddress: "::1", port: 53),
            ]
        }
        return configuration
    }

    /// /etc/resolv.conf, or the glibc default when it cannot be read.
    public static func system(path: String = "/etc/resolv.conf") -> ResolverConfiguration {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return parse(resolvConf: text)
    }

    /// One server given as `host:port` or `[v6]:port` (the testing flag's form).
    public static func single(_ hostPort: String) throws(DNSError) -> ResolverConfiguration {
        guard let endpoint = HostPort(hostPort), case let port = endpoint.port ?? 53, (1...65535).contains(port),
            let address = try? SocketAddress(ipAddress: endpoint.host, port: port)
        else { throw .permanentFailure("invalid DNS server address \"\(hostPort)\"") }
        return ResolverConfiguration(servers: [address])
    }
}
