/// Keeps a message's header block (up to `limit` bytes) from the DATA bytes
/// as they arrive, for the header checks. Each byte is looked at once,
/// however small the pieces: a rescan of the whole block on every read
/// made a header sent 64 bytes at a time cost O(n²) up to the limit.
struct HeaderCollector {
    let limit: Int
    /// The header so far: up to the LF of the blank line that ends it
    /// (excluded), or everything kept when the limit was reached first.
    private(set) var bytes: [UInt8] = []
    private(set) var isComplete = false
    /// Bytes examined in the search for the end; for the complexity test.
    private(set) var bytesExamined = 0

    init(limit: Int) {
        self.limit = limit
    }

    /// Data bytes with LF line ends (the DATA decoder's output).
    mutating func feed(_ piece: [UInt8]) {
        guard !isComplete else { return }
        let lf = UInt8(ascii: "\n")
        var from = piece.startIndex
        while let newline = piece[from...].firstIndex(of: lf) {
            // The byte before this LF: in this piece, or the header's last
            // (nil at the very start: a first LF is an empty header).
            let before = newline > piece.startIndex ? piece[newline - 1] : bytes.last
            if before == nil || before == lf {
                bytes.append(contentsOf: piece[..<newline])
                bytesExamined += newline - piece.startIndex + 1
                isComplete = true
                return
            }
            from = newline + 1
        }
        bytesExamined += piece.count
        bytes.append(contentsOf: piece)
        if bytes.count > limit { isComplete = true }
    }
}
