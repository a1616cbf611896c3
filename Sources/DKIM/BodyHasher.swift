import Crypto

/// Body canonicalization (RFC 6376 §3.4.3, §3.4.4) over chunks of any
/// size, so a message can stream from disk and is never held whole.
///
/// Lines end at LF, the CR before it being the line end's; a CR anywhere
/// else is text. Empty lines are held back until a later line shows they
/// were not trailing; relaxed holds a run of WSP until it knows whether the
/// line ends there.
struct BodyCanonicalizer: Sendable {
    let canonicalization: DKIMCanonicalization
    private var pendingEmptyLines = 0
    private var lineHasContent = false
    private var pendingCR = false
    private var pendingWSP = false
    private var wroteAnything = false

    init(_ canonicalization: DKIMCanonicalization) { self.canonicalization = canonicalization }

    /// The canonical bytes this chunk settles.
    mutating func feed(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        for byte in bytes {
            if pendingCR {
                pendingCR = false
                if byte == 0x0A {
                    endLine(&out)
                    continue
                }
                content(0x0D, &out)
            }
            if byte == 0x0D {
                pendingCR = true
            } else if byte == 0x0A {
                endLine(&out)
            } else if canonicalization == .relaxed && DKIMCanonicalization.isWSP(byte) {
                pendingWSP = true
            } else {
                content(byte, &out)
            }
        }
        return out
    }

    /// The rest: a last line without CRLF gets one; trailing empty lines
    /// go; an empty body is CRLF (simple) or nothing (relaxed).
    mutating func finish() -> [UInt8] {
        var out: [UInt8] = []
        if pendingCR {
            pendingCR = false
            content(0x0D, &out)
        }
        if lineHasContent {
            // A last line without CRLF keeps its WSP run, as one SP (as
            // chasquid and dkimpy do: only WSP before a CRLF is "at the end
            // of a line").
            if pendingWSP {
                out.append(0x20)
                pendingWSP = false
            }
            out += DKIMCanonicalization.crlf
        }
        if !wroteAnything && out.isEmpty && canonicalization == .simple { out = DKIMCanonicalization.crlf }
        return out
    }

    private mutating func content(_ byte: UInt8, _ out: inout [UInt8]) {
        if !lineHasContent {
            for _ in 0..<pendingEmptyLines { out += DKIMCanonicalization.crlf }
            pendingEmptyLines = 0
            lineHasContent = true
            wroteAnything = true
        }
        if pendingWSP {
            out.append(0x20)
            pendingWSP = false
        }
        out.append(byte)
    }

    private mutating func endLine(_ out: inout [UInt8]) {
        // Relaxed: WSP at the end of a line is dropped.
        pendingWSP = false
        if lineHasContent {
            out += DKIMCanonicalization.crlf
            lineHasContent = false
        } else {
            pendingEmptyLines += 1
        }
    }
}

/// The SHA-256 of a canonical body, cut at l= when there is one.
public struct DKIMBodyHasher: Sendable {
    private var canonicalizer: BodyCanonicalizer
    private var hash = SHA256()
    private let limit: Int?
    /// Canonical bytes produced, cut or not (to tell a body shorter than l=).
    public private(set) var canonicalLength = 0

    public init(canonicalization: DKIMCanonicalization, limit: Int? = nil) {
        canonicalizer = BodyCanonicalizer(canonicalization)
        self.limit = limit
    }

    public mutating func feed(_ bytes: some Sequence<UInt8>) { take(canonicalizer.feed(bytes)) }

    public mutating func finish() -> [UInt8] {
        take(canonicalizer.finish())
        return Array(hash.finalize())
    }

    private mutating func take(_ bytes: [UInt8]) {
        let room = limit.map { max(0, $0 - canonicalLength) } ?? bytes.count
        hash.update(data: bytes.prefix(room))
        canonicalLength += bytes.count
    }
}
