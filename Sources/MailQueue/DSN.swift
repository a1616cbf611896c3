import ChasquidProto
import Foundation
import MailLog

/// Delivery status notifications (RFC 3464, RFC 6533), in chasquid's shape
/// (COMPAT.md §12.4, "DSN").
enum DSN {
    /// Builds the DSN message (LF line endings) for `item`, whose recipients
    /// that are not SENT failed or are still pending.
    static func make(
        for message: Queue_Message, originalData: [UInt8], reportingDomain: String, now: Date = Date()
    ) -> [UInt8] {
        let boundary = QueueID.generate() + QueueID.generate()
        let failed = message.rcpt.filter { $0.status == .failed }
        let pending = message.rcpt.filter { $0.status == .pending }
        let notSent = failed + pending
        let failedOriginals = Set(notSent.map(\.originalAddress)).sorted()
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
        text += "\n"
        text += "--\(boundary)\n"
        text += "Content-Type: text/plain; charset=\"utf-8\"\n"
        text += "Content-Disposition: inline\n"
        text += "Content-Description: Notification\n"
        text += "Content-Transfer-Encoding: 8bit\n"
        text += "\n"
        text += "Delivery of your message to the following recipient(s) failed permanently:\n\n"
        for r in failed { text += "  - \(r.originalAddress)\n" }
        if !pending.isEmpty {
            text += "\nDelivery to the following recipient(s) is still pending, but we gave up:\n\n"
            for r in pending { text += "  - \(r.originalAddress)\n" }
        }
        text += "\nTechnical details:\n"
        for r in notSent { text += "- \"\(r.address)\" (\(typeName(r.type))) failed with error:\n    \(r.lastFailureMessage)\n" }
        text += "\n"
        text += "--\(boundary)\n"
        text += "Content-Type: message/global-delivery-status\n"
        text += "Content-Description: Delivery Report\n"
        text += "Content-Transfer-Encoding: 8bit\n"
        text += "\n"
        text += "Reporting-MTA: dns; \(reportingDomain)\n"
        for r in notSent {
            let diagnostic = r.lastFailureMessage.trimmingCharacters(in: .whitespacesAndNewlines)
                .replacingOccurrences(of: "\n", with: "\n    ")
            text += "\n"
            text += "Original-Recipient: utf-8; \(r.originalAddress)\n"
            text += "Final-Recipient: utf-8; \(r.address)\n"
            text += "Action: failed\n"
            text += "Status: \(r.status == .failed ? "5.0.0" : "4.0.0")\n"
            text += "Diagnostic-Code: smtp; \(diagnostic)\n"
        }
        text += "\n"
        text += "--\(boundary)\n"
        text += "Content-Type: message/rfc822\n"
        text += "Content-Description: Undelivered Message\n"
        text += "Content-Transfer-Encoding: 8bit\n"
        text += "\n"
        var bytes = Array(text.utf8)
        bytes += originalData.prefix(256 * 1024)
        if bytes.last != UInt8(ascii: "\n") { bytes.append(UInt8(ascii: "\n")) }
        bytes += Array("\n--\(boundary)--\n".utf8)
        return bytes
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
