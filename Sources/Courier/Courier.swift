/// The result of one delivery attempt to one recipient.
public enum DeliveryResult: Equatable, Sendable {
    case sent
    /// Try again later.
    case temporary(String)
    /// Give up on this recipient now; the sender gets a DSN.
    case permanent(String)
}

/// Delivers a message to one recipient: a local MDA, a pipe, SMTP.
public protocol Courier: Sendable {
    /// - Parameter data: the message, LF line endings.
    func deliver(from: String, to: String, data: MessageData) async -> DeliveryResult
    /// A FORWARD recipient: through the `via` servers, in order (§12.4).
    /// Couriers that do not forward deliver as usual.
    func deliver(from: String, to: String, data: MessageData, via: [String]) async -> DeliveryResult
}

extension Courier {
    public func deliver(from: String, to: String, data: MessageData, via: [String]) async -> DeliveryResult {
        await deliver(from: from, to: to, data: data)
    }

    /// A message in memory.
    public func deliver(from: String, to: String, data: [UInt8]) async -> DeliveryResult {
        await deliver(from: from, to: to, data: MessageData(data))
    }
}

/// A courier that can take several recipients at one domain in one go
/// (one SMTP transaction), with a result for each.
public protocol BatchCourier: Courier {
    /// - Returns: one result per recipient, in order.
    func deliver(from: String, to: [String], data: MessageData, via: [String]) async -> [DeliveryResult]
}
