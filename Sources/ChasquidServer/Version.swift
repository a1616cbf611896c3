import ChasquidConfig
import Foundation
import GoCompat

/// What `chasquid -version` prints.
public enum ChasquidVersion {
    public static let version = "1.18.0-swift"
    public static let sourceDate = "2026-11-26 00:00:00 +0000 UTC"
    /// `sourceDate` in Unix seconds (the `chasquid/sourceDateTimestamp` variable).
    public static var sourceDateTimestamp: Int64 {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss Z"
        // The zone name after the offset is for people.
        let text = sourceDate.split(separator: " ").prefix(3).joined(separator: " ")
        return Int64(formatter.date(from: text)?.timeIntervalSince1970 ?? 0)
    }

    /// A Go duration as a Swift `Duration`; nil if it does not parse.
    public static func parseDuration(_ text: String) -> Duration? {
        guard let ns = try? GoDuration.parse(text) else { return nil }
        return .nanoseconds(ns)
    }
}
