import Foundation
import Synchronization

/// One event of a trace.
public struct TraceEvent: Sendable {
    public var time: Date
    /// Time since the trace started.
    public var elapsed: Duration
    public var message: String
    public var isError: Bool
}

/// A link from a trace to one it started (a queue item to its delivery attempts).
public struct TraceLink: Sendable {
    public var id: UInt64
    public var family: String
    public var title: String
}

/// What a trace holds at one moment, for the pages.
public struct TraceSnapshot: Sendable {
    public var id: UInt64
    public var family: String
    public var title: String
    public var started: Date
    /// Time from start to finish, or to now while it runs.
    public var elapsed: Duration
    public var isFinished: Bool
    public var isError: Bool
    public var events: [TraceEvent]
    /// Events dropped because the trace hit its limit.
    public var droppedEvents: Int
    public var parent: TraceLink?
    public var children: [TraceLink]
}

/// A short event log of one unit of work: an SMTP connection, a queue item,
/// a delivery attempt. Its memory is bounded: at most `maxEvents` events of
/// at most `maxEventLength` characters each.
///
/// What goes in is the caller's choice, and callers never pass credentials or
/// message bodies (see docs/monitoring.md).
public final class Trace: Sendable {
    /// The trace of the work this task is doing, for code deep in a call
    /// (policy checks, couriers) that was not handed one.
    @TaskLocal public static var current: Trace?

    public static let maxEvents = 300
    public static let maxEventLength = 600
    /// Child links kept (a queue item retried for days has many attempts).
    public static let maxChildren = 100

    public let id: UInt64
    public let family: String
    public let title: String
    public let started: Date
    let startInstant: ContinuousClock.Instant
    let parent: TraceLink?
    private let registry: TraceRegistry?

    private struct State {
        var events: [TraceEvent] = []
        var dropped = 0
        var isError = false
        var finishedAfter: Duration?
        var children: [TraceLink] = []
    }
    private let state = Mutex(State())

    init(id: UInt64, family: String, title: String, parent: TraceLink?, registry: TraceRegistry?) {
        self.id = id
        self.family = family
        self.title = title
        self.parent = parent
        self.registry = registry
        self.started = Date()
        self.startInstant = .now
    }

    /// A trace that records nothing, for when there is no monitoring server
    /// to show traces: its messages are not even built.
    public static let disabled = Trace(id: 0, family: "", title: "", parent: nil, registry: nil)

    private var isRecording: Bool { registry != nil }

    public func log(_ message: @autoclosure () -> String) {
        if isRecording { append(message(), isError: false) }
    }

    /// Records an error; the trace is then listed among its family's errors.
    public func error(_ message: @autoclosure () -> String) {
        if isRecording { append(message(), isError: true) }
    }

    private func append(_ message: String, isError: Bool) {
        let text = message.count > Self.maxEventLength ? message.prefix(Self.maxEventLength) + "…" : message
        let event = TraceEvent(time: Date(), elapsed: .now - startInstant, message: String(text), isError: isError)
        state.withLock { state in
            if isError { state.isError = true }
            guard state.events.count < Self.maxEvents else {
                state.dropped += 1
                return
            }
            state.events.append(event)
        }
    }

    /// Starts a trace for part of this one's work, linked both ways.
    public func child(family: String, title: String) -> Trace {
        guard let registry else { return .disabled }
        let child = registry.start(family: family, title: title, parent: TraceLink(id: id, family: self.family, title: self.title))
        state.withLock { state in
            state.children.append(TraceLink(id: child.id, family: family, title: title))
            if state.children.count > Self.maxChildren { state.children.removeFirst() }
        }
        return child
    }

    /// Ends the trace; it moves from the active list to the recent ones.
    /// Later calls do nothing.
    public func finish() {
        let first = state.withLock { state -> Bool in
            guard state.finishedAfter == nil else { return false }
            state.finishedAfter = .now - startInstant
            return true
        }
        if first { registry?.finished(self) }
    }

    public var isError: Bool { state.withLock { $0.isError } }

    var elapsed: Duration { state.withLock { $0.finishedAfter } ?? (.now - startInstant) }

    public var snapshot: TraceSnapshot {
        state.withLock { state in
            TraceSnapshot(
                id: id, family: family, title: title, started: started,
                elapsed: state.finishedAfter ?? (.now - startInstant), isFinished: state.finishedAfter != nil,
                isError: state.isError, events: state.events, droppedEvents: state.dropped, parent: parent,
                children: state.children)
        }
    }
}
