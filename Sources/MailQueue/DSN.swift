import ChasquidProto
import Foundation
import GoCompat
import MailLog

/// Delivery status notifications (RFC 3464, RFC 6533), in chasquid's shape
/// (COMPAT.md §12.4, "DSN").
enum DSN {
    /// Builds the DSN message (LF line endings) for `item`, whose recipients
    /// that are not SENT failed or are still pending. The layout is
    /// chasquid's template byte for byte (blank lines included), so tools
    /// that read chasquid's notices read ours.
    static func make(
        for message: Queue_Message, originalData: [UInt8], reportingDomain: String, now: Date = Date()
    ) -> [UInt8] {
        let boundary = QueueID.generate()
        let failed = message.rcpt.filter { $0.status == .failed }
        let pending = message.rcpt.filter { $0.status == .pending }
        // Go ranges over a map in key (byte) order.
        let failedOriginals = Set((failed + pending).map(\.originalAddress)).sorted {
            $0.utf8.lexicographicallyPrecedes($1.utf8)
        }
        let originalMessageID = messageID(in: originalData) ?? ""

        var text = ""
        text += "From: Mail Delivery System <postmaster-dsn@\(reportingDomain)>\n"
        text += "To: <\(message.from)>\n"
        text += "Subject: Mail delivery failed: returning message to sender\n"
        text += "Message-ID: <chasquid-dsn-\(QueueID.generate())@\(reportingDomain)>\n"
        text += "Date: \(rfc1123Date(now))\n"
        text += "In-Reply-To: \(originalMessageID)\n"
        text += "References: \(originalMessageID)\n"
        text += "X-Failed-Recipients: \(failedOriginals.map { $0 + ", " }.joined())\n"
        text += "Auto-Submitted: auto-replied\n"
        text += "MIME-Version: 1.0\n"
        text += "Content-Type: multipart/report; report-type=delivery-status;\n"
        text += "    boundary=\"\(boundary)\"\n"
        text += "\n\n"
        text += "--\(boundary)\n"
        text += "Content-Type: text/plain; charset=\"utf-8\"\n"
        text += "Content-Disposition: inline\n"
        text += "Content-Description: Notification\n"
        text += "Content-Transfer-Encoding: 8bit\n"
        text += "\n"
        text += "Delivery of your message to the following recipient(s) failed permanently:\n\n"
        for address in failedOriginals { text += "  - \(address)\n" }
        text += "\n\nTechnical details:\n"
        for r in failed {
            text += "- \"\(r.address)\" (\(typeName(r.type))) failed permanently with error:\n    \(indented(r.lastFailureMessage))\n"
        }
        for r in pending {
            text += "- \"\(r.address)\" (\(typeName(r.type))) failed repeatedly and timed out, last error:\n"
            text += "    \(indented(r.lastFailureMessage))\n"
        }
        text += "\n\n"
        text += "--\(boundary)\n"
        text += "Content-Type: message/global-delivery-status\n"
        text += "Content-Description: Delivery Report\n"
        text += "Content-Transfer-Encoding: 8bit\n"
        text += "\n"
        text += "Reporting-MTA: dns; \(reportingDomain)\n"
        text += "\n"
        for r in failed + pending {
            text += "Original-Recipient: utf-8; \(r.originalAddress)\n"
            text += "Final-Recipient: utf-8; \(r.address)\n"
            text += "Action: failed\n"
            text += "Status: \(r.status == .failed ? "5.0.0" : "4.0.0")\n"
            text += "Diagnostic-Code: smtp; \(indented(r.lastFailureMessage))\n"
            text += "\n"
        }
        text += "\n\n"
        text += "--\(boundary)\n"
        text += "Content-Type: message/rfc822\n"
        text += "Content-Description: Undelivered Message\n"
        text += "Content-Transfer-Encoding: 8bit\n"
        text += "\n"
        var bytes = Array(text.utf8)
        bytes += originalData.prefix(256 * 1024)
        bytes += Array("\n\n--\(boundary)--\n".utf8)
        return bytes
    }

    /// A multi-line error (a remote server's multi-line reply) with its
    /// continuation lines indented under the first, as chasquid lays it
    /// out; a trailing line break would only leave an empty line.
    static func indented(_ message: String) -> String {
        var lines = message.split(separator: "\n", omittingEmptySubsequences: false)
        while let last = lines.last, last.allSatisfy(\.isWhitespace), lines.count > 1 { lines.removeLast() }
        return lines.joined(separator: "\n    ")
    }

    static func typeName(_ t: Queue_Recipient.TypeEnum) -> String {
        switch t {
        case .email: "EMAIL"
        case .pipe: "PIPE"
        case .forward: "FORWARD"
        case .UNRECOGNIZED(let n): "\(n)"
        }
    }

    /// The Message-ID header of a message (LF form), if any.
    static func messageID(in data: [UInt8]) -> String? {
        var start = 0
        while start < data.count {
            let end = data[start...].firstIndex(of: UInt8(ascii: "\n")) ?? data.count
            let line = data[start..<end]
            if line.isEmpty { return nil }
            if let colon = line.firstIndex(of: UInt8(ascii: ":")),
                String(decoding: line[..<colon], as: UTF8.self).lowercased() == "message-id"
            {
                return String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingCharacters(in: .whitespaces)
            }
            start = end + 1
        }
        return nil
    }
}
