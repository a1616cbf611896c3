/// The internal LF form of a message to its wire form, CRLF, as chasquid's
/// normalize.ToCRLF does: LF becomes CRLF, a CRLF already there (the
/// Authentication-Results folds, COMPAT.md §12.3) stays one CRLF, a lone CR
/// stays. Fed in chunks of any size, so a message can stream from disk.
public struct CRLFConverter: Sendable {
    private var previous: UInt8 = 0

    public init() {}

    public mutating func convert(_ chunk: some Collection<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(chunk.count + chunk.count / 32)
        for byte in chunk {
            if byte == 0x0A && previous != 0x0D { out.append(0x0D) }
            out.append(byte)
            previous = byte
        }
        return out
    }

    /// A whole message at once.
    public static func convert(_ bytes: some Collection<UInt8>) -> [UInt8] {
        var converter = CRLFConverter()
        return converter.convert(bytes)
    }
}
