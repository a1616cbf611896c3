import Foundation

/// "Mon, 02 Jan 2006 15:04:05 -0700", local time: the date of mail headers
/// (Received, DSNs). Built by hand from localtime_r: a DateFormatter per
/// message costs more than the rest of the header.
public func rfc1123Date(_ date: Date) -> String {
    var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
    var parts = tm()
    localtime_r(&seconds, &parts)
    let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    let offset = parts.tm_gmtoff / 60
    let sign = offset < 0 ? "-" : "+"
    func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
    return "\(days[Int(parts.tm_wday)]), \(two(Int(parts.tm_mday))) \(months[Int(parts.tm_mon)]) "
        + "\(parts.tm_year + 1900) \(two(Int(parts.tm_hour))):\(two(Int(parts.tm_min))):\(two(Int(parts.tm_sec))) "
        + "\(sign)\(two(abs(offset) / 60))\(two(abs(offset) % 60))"
}
