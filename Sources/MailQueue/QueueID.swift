/// Queue IDs: base64url of 8 random bytes, no padding (11 characters), as
/// chasquid makes them. They are file names, so they never hold `/`.
public enum QueueID {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    public static func generate() -> String {
        // One 64-bit draw (one getrandom call), not one per byte.
        var rng = SystemRandomNumberGenerator()
        let value = rng.next()
        return encode((0..<8).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) })
    }

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        var index = 0
        while index < bytes.count {
            let chunk = Array(bytes[index..<min(index + 3, bytes.count)])
            let n = (UInt32(chunk[0]) << 16) | (UInt32(chunk.count > 1 ? chunk[1] : 0) << 8)
                | UInt32(chunk.count > 2 ? chunk[2] : 0)
            let characters = chunk.count + 1
            for shift in stride(from: 18, through: 0, by: -6).prefix(characters) {
                out.append(alphabet[Int((n >> UInt32(shift)) & 0x3F)])
            }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}
