/// What a TLS handshake settled on, for people to read (smtp-check's
/// `TLS OK: TLS-1.3 - TLS_AES_128_GCM_SHA256`).
public struct TLSParameters: Sendable, Equatable {
    /// The protocol version, e.g. 0x0304 for TLS 1.3.
    public var version: UInt16?
    /// The cipher suite's IANA code point.
    public var cipherSuite: UInt16?

    public init(version: UInt16? = nil, cipherSuite: UInt16? = nil) {
        self.version = version
        self.cipherSuite = cipherSuite
    }

    /// chasquid's version names (its tlsconst package): `TLS-1.2`.
    public static func versionName(_ version: UInt16) -> String {
        switch version {
        case 0x0300: "SSL-3.0"
        case 0x0301: "TLS-1.0"
        case 0x0302: "TLS-1.1"
        case 0x0303: "TLS-1.2"
        case 0x0304: "TLS-1.3"
        default: "TLS-" + hex(version)
        }
    }

    /// IANA's names for the suites a TLS library may still negotiate, and
    /// chasquid's form for any other.
    public static func cipherSuiteName(_ suite: UInt16) -> String {
        cipherSuiteNames[suite] ?? "TLS_UNKNOWN_CIPHER_SUITE-" + hex(suite)
    }

    static func hex(_ value: UInt16) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    static let cipherSuiteNames: [UInt16: String] = [
        0x1301: "TLS_AES_128_GCM_SHA256",
        0x1302: "TLS_AES_256_GCM_SHA384",
        0x1303: "TLS_CHACHA20_POLY1305_SHA256",
        0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
        0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
        0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
        0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
        0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
        0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
        0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
        0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
        0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
        0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256",
        0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    ]
}

/// Reads the server's cipher choice from its ServerHello as the bytes go by
/// (to the client's TLS handler, or from the server's): NIOSSL does not
/// expose the negotiated suite. The
/// ServerHello is sent in the clear in every TLS version, before anything
/// encrypted, so this looks only at the first handshake records.
///
///     TLSPlaintext = type(1) version(2) length(2) fragment
///     Handshake    = msg_type(1) = 2 | length(3) | legacy_version(2)
///                    random(32) | session_id<0..32> | cipher_suite(2) ...
public struct ServerHelloParser: Sendable {
    /// Bytes not yet parsed into records (at most one record's worth).
    private var pending: [UInt8] = []
    /// Handshake bytes gathered from the leading handshake records.
    private var handshake: [UInt8] = []
    /// Bytes seen in all, for the limit.
    private var seen = 0
    public private(set) var finished = false
    public private(set) var cipherSuite: UInt16?

    public init() {}

    /// The most bytes looked at before giving up (a ServerHello is well
    /// under 1 KiB; TLS records are at most 16 KiB plus header).
    public static let limit = 20 * 1024

    public mutating func feed(_ bytes: some Collection<UInt8>) {
        guard !finished else { return }
        seen += bytes.count
        guard seen <= Self.limit else {
            finished = true
            return
        }
        pending.append(contentsOf: bytes)
        var offset = 0
        defer { if !finished { pending.removeFirst(offset) } }
        while pending.count - offset >= 5, !finished {
            guard pending[offset] == 22 else {
                finished = true
                return
            }
            let length = Int(pending[offset + 3]) << 8 | Int(pending[offset + 4])
            guard pending.count - offset >= 5 + length else { return }
            handshake.append(contentsOf: pending[(offset + 5)..<(offset + 5 + length)])
            offset += 5 + length
            parseHandshake()
        }
    }

    /// Handshake = msg_type(1) length(3) body: a ServerHello's body is
    /// legacy_version(2) random(32) session_id<0..32> cipher_suite(2) ...
    private mutating func parseHandshake() {
        guard handshake.count >= 4 else { return }
        guard handshake[0] == 2 else {
            finished = true
            return
        }
        let messageLength = Int(handshake[1]) << 16 | Int(handshake[2]) << 8 | Int(handshake[3])
        let sessionIDLengthAt = 4 + 2 + 32
        guard handshake.count > sessionIDLengthAt else { return }
        let sessionIDLength = Int(handshake[sessionIDLengthAt])
        let suiteAt = sessionIDLengthAt + 1 + sessionIDLength
        // A malformed hello gives no suite rather than one read from
        // elsewhere.
        guard sessionIDLength <= 32, suiteAt + 2 <= 4 + messageLength else {
            finished = true
            return
        }
        guard handshake.count >= suiteAt + 2 else { return }
        cipherSuite = UInt16(handshake[suiteAt]) << 8 | UInt16(handshake[suiteAt + 1])
        finished = true
    }
}

