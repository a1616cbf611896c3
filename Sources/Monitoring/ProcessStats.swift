import Foundation

/// The process's memory, from /proc/self/status, for `memstats` in
/// `/debug/vars` (Go's runtime numbers do not exist here).
struct ProcessStats {
    var residentBytes: Int64 = 0
    var peakResidentBytes: Int64 = 0
    var virtualBytes: Int64 = 0
    var threads: Int64 = 0

    static func read() -> ProcessStats {
        var stats = ProcessStats()
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return stats }
        for line in text.split(separator: "\n") {
            let parts = line.split(whereSeparator: { $0 == ":" || $0 == " " || $0 == "\t" })
            guard parts.count >= 2, let value = Int64(parts[1]) else { continue }
            switch parts[0] {
            case "VmRSS": stats.residentBytes = value * 1024
            case "VmHWM": stats.peakResidentBytes = value * 1024
            case "VmSize": stats.virtualBytes = value * 1024
            case "Threads": stats.threads = value
            default: break
            }
        }
        return stats
    }

    var memstats: [(String, Int64)] {
        [("Sys", residentBytes), ("MaxRSS", peakResidentBytes), ("VirtualSize", virtualBytes), ("Threads", threads)]
    }
}
