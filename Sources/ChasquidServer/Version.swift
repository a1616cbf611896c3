import ChasquidConfig

/// What `chasquid -version` prints.
public enum ChasquidVersion {
    public static let version = "1.18.0-swift"
    public static let sourceDate = "2026-11-26 00:00:00 +0000 UTC"
    /// `sourceDate` in Unix seconds (the `chasquid/sourceDateTimestamp` variable).
    public static let sourceDateTimestamp: Int64 = 1_795_651_200

    /// A Go duration as a Swift `Duration`; nil if it does not parse.
    public static func parseDuration(_ text: String) -> Duration? {
        guard let ns = try? GoDuration.parse(text) else { return nil }
        return .nanoseconds(ns)
    }
}
