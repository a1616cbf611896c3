/// The checks on a received message before it is queued (COMPAT.md §12.2,
/// DATA): it is not empty, its header block parses, and it has not been
/// through too many hops.
enum MessageChecks {
    /// Bytes of the header block kept in memory for the checks.
    static let headerLimit = 1 << 20

    enum Verdict: Equatable {
        case accepted
        case refused(Reply)
        case loop(receivedHeaders: Int, Reply)
    }

    static func check(header: [UInt8], messageIsEmpty: Bool, maxReceivedHeaders: Int) -> Verdict {
        if messageIsEmpty { return .refused(Reply(554, "5.6.0 Error parsing message: empty message")) }
        // A message that starts with a blank line has no headers, which is fine.
        if header.isEmpty { return .accepted }
        // A header block cut at the limit may end mid-line; check whole lines only.
        var block = header
        if header.count > headerLimit, let lastNewline = block.lastIndex(of: UInt8(ascii: "\n")) {
            block.removeSubrange((lastNewline + 1)...)
        }
        do {
            let result = try HeaderCheck.check(block)
            if result.receivedCount > maxReceivedHeaders {
                return .loop(
                    receivedHeaders: result.receivedCount, Reply(554, "5.4.6 Loop detected (\(maxReceivedHeaders) hops)"))
            }
        } catch {
            return .refused(Reply(554, "5.6.0 Error parsing message: \(error)"))
        }
        return .accepted
    }
}
