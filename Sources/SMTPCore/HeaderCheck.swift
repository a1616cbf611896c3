/// What the server needs to know about a message's header block, read the
/// way Go's `net/mail` reads it (COMPAT.md §12.3).
public struct HeaderCheck: Equatable, Sendable {
    public enum Problem: Error, Equatable, Sendable {
        case empty
        case continuationFirst
        case lineWithoutColon(line: Int)
    }

    public var receivedCount: Int
    public var messageID: String?

    /// Checks `header`: the message bytes (LF form) up to the first blank
    /// line, or all of it when there is none.
    public static func check(_ message: [UInt8]) throws(Problem) -> HeaderCheck {
        if message.isEmpty { throw .empty }
        var result = HeaderCheck(receivedCount: 0, messageID: nil)
        var lineNumber = 0
        var lastName: String?
        var start = 0
        while start < message.count {
            let end = message[start...].firstIndex(of: UInt8(ascii: "\n")) ?? message.count
            var line = message[start..<end]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            start = end + 1
            lineNumber += 1
            if line.isEmpty { break }  // End of the header block.
            if line.first == UInt8(ascii: " ") || line.first == UInt8(ascii: "\t") {
                if lineNumber == 1 { throw .continuationFirst }
                if lastName == "message-id", result.messageID != nil {
                    result.messageID! += String(decoding: line, as: UTF8.self)
                }
                continue
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw .lineWithoutColon(line: lineNumber) }
            let name = String(decoding: line[..<colon], as: UTF8.self).lowercased()
            lastName = name
            if name == "received" { result.receivedCount += 1 }
            if name == "message-id" && result.messageID == nil {
                result.messageID = String(decoding: line[(colon + 1)...], as: UTF8.self)
            }
        }
        result.messageID = result.messageID.map { trimmed($0) }
        return result
    }

    /// Spaces and tabs off both ends, by index: building the String from a
    /// reversed view was an allocation per character (most of a message's
    /// allocations, for its Message-ID).
    static func trimmed(_ s: String) -> String {
        func isBlank(_ c: Character) -> Bool { c == " " || c == "\t" }
        var start = s.startIndex
        var end = s.endIndex
        while start < end, isBlank(s[start]) { start = s.index(after: start) }
        while end > start {
            let before = s.index(before: end)
            guard isBlank(s[before]) else { break }
            end = before
        }
        return String(s[start..<end])
    }
}
