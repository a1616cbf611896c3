/// Finding delimiters per Unicode scalar.
///
/// Swift's `Character` is a grapheme cluster, and a Prepend scalar (U+0600,
/// U+0D4E …) or a combining mark fuses with its neighbour: in
/// `"a\u{0D4E}@evil.com@local.com"` the first `@` is not a `Character` of
/// its own, so `firstIndex(of: "@")` skips it. chasquid (Go) splits bytes;
/// every address, command and list here is split per scalar, which for
/// ASCII delimiters is the same as per byte (issue 13 §6).
extension StringProtocol {
    /// The first `scalar`, or nil.
    public func firstIndex(ofScalar scalar: Unicode.Scalar) -> Index? {
        unicodeScalars.firstIndex(of: scalar)
    }

    /// The last `scalar`, or nil.
    public func lastIndex(ofScalar scalar: Unicode.Scalar) -> Index? {
        unicodeScalars.lastIndex(of: scalar)
    }

    public func contains(scalar: Unicode.Scalar) -> Bool {
        unicodeScalars.contains(scalar)
    }

    /// What follows the scalar at `index`.
    public func suffix(afterScalarAt index: Index) -> SubSequence {
        self[unicodeScalars.index(after: index)...]
    }

    /// Splits at each scalar `isSeparator` accepts, as `split` does.
    public func split(
        maxSplits: Int = .max,
        omittingEmptySubsequences: Bool = true,
        whereScalarSeparator isSeparator: (Unicode.Scalar) -> Bool
    ) -> [SubSequence] {
        unicodeScalars.split(
            maxSplits: maxSplits, omittingEmptySubsequences: omittingEmptySubsequences, whereSeparator: isSeparator
        ).map { self[$0.startIndex..<$0.endIndex] }
    }

    /// Splits at each `separator` scalar, as `split(separator:)` does.
    public func split(
        scalar separator: Unicode.Scalar, maxSplits: Int = .max, omittingEmptySubsequences: Bool = true
    ) -> [SubSequence] {
        split(maxSplits: maxSplits, omittingEmptySubsequences: omittingEmptySubsequences) { $0 == separator }
    }
}
