/// The internal LF form of a message to its wire form, CRLF, as chasquid's
/// normalize.ToCRLF does: LF becomes CRLF, a CRLF already there (the
/// Authentication-Results folds, COMPAT.md §12.3) stays one CRLF, a lone CR
/// stays. Fed in chunks of any size, so a message can stream from disk.
public struct CRLFConverter: Sendable {
    private var previous: UInt8 = 0

    public init() {}

    public mutating func convert(_ chunk: some Collection<UInt8>) -> [UInt8] {
        // Over contiguous bytes (an Array, a slice, a ByteBuffer view) the
        // work is a search for LF and block copies; a generic loop here ran
        // unspecialised, a witness call per byte.
        if let converted = chunk.withContiguousStorageIfAvailable({ convert(buffer: $0) }) { return converted }
        return Array(chunk).withUnsafeBufferPointer { convert(buffer: $0) }
    }

    private mutating func convert(buffer: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(buffer.count + buffer.count / 32)
        var start = 0
        while start < buffer.count {
            guard let newline = buffer[start...].firstIndex(of: 0x0A) else {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[start...]))
                break
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[start..<newline]))
            let before = newline > 0 ? buffer[newline - 1] : previous
            if before != 0x0D { out.append(0x0D) }
            out.append(0x0A)
            start = newline + 1
        }
        if let last = buffer.last { previous = last }
        return out
    }

    /// A whole message at once.
    public static func convert(_ bytes: some Collection<UInt8>) -> [UInt8] {
        var converter = CRLFConverter()
        return converter.convert(bytes)
    }
}
