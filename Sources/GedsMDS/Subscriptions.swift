import GedsCore
import GedsCarrier
import GedsWire
import Synchronization

/// The MDS's live subscriptions, by bucket. The store's critical section only appends its events (and progress marks)
/// to `pending`, in revision order; they are handed to the subscribers after it, by one thread at a time (whichever
/// finds none draining), so the store's lock is never held while events fan out, and every subscriber still
/// receives them in revision order. Fanning out only appends to bounded queues and wakes event loops, so no
/// subscriber can hold up the MDS or the others.
final class SubscriptionHub: Sendable {
    private enum Item {
        case events([NamespaceEvent])
        case progress(UInt64)
    }

    private struct State {
        var subscribers: [String: [ObjectIdentifier: Subscriber]] = [:]
        var pending: [Item] = []
        var draining = false
    }

    private let state = Mutex(State())

    /// Call in the store's critical section, at the subscription's revision: events after it reach it.
    func add(_ subscriber: Subscriber) {
        state.withLock { $0.subscribers[subscriber.scope.bucket, default: [:]][ObjectIdentifier(subscriber)] = subscriber }
    }

    func remove(_ subscriber: Subscriber) {
        state.withLock { state in
            state.subscribers[subscriber.scope.bucket]?[ObjectIdentifier(subscriber)] = nil
            if state.subscribers[subscriber.scope.bucket]?.isEmpty == true { state.subscribers[subscriber.scope.bucket] = nil }
        }
    }

    var count: Int { state.withLock { $0.subscribers.values.reduce(0) { $0 + $1.count } } }

    /// Queues committed events (call in the store's critical section, so they queue in revision order).
    func enqueue(_ events: [NamespaceEvent]) {
        state.withLock { $0.pending.append(.events(events)) }
    }

    /// Queues a progress mark: every idle subscriber will learn it has seen everything up to `revision`.
    func enqueueProgress(_ revision: UInt64) {
        state.withLock { $0.pending.append(.progress(revision)) }
    }

    /// Hands what is queued to the subscribers, unless another thread is doing so (it then takes this too).
    func drain() {
        var draining = false
        while true {
            let batch = state.withLock { state -> ([Item], [String: [ObjectIdentifier: Subscriber]])? in
                if !draining, state.draining { return nil }
                if state.pending.isEmpty {
                    if draining { state.draining = false }
                    return nil
                }
                state.draining = true
                defer { state.pending = [] }
                return (state.pending, state.subscribers)
            }
            draining = true
            guard let (items, subscribers) = batch else { return }
            for item in items {
                switch item {
                case .events(let events): publish(events, to: subscribers)
                case .progress(let revision):
                    for bucket in subscribers.values {
                        for subscriber in bucket.values { subscriber.offerProgress(revision) }
                    }
                }
            }
        }
    }

    private func publish(_ events: [NamespaceEvent], to subscribers: [String: [ObjectIdentifier: Subscriber]]) {
        // The buckets the events touch (a rename touches its old name's bucket too), each once.
        var buckets: [String] = []
        for event in events {
            for bucket in [event.bucket, event.source?.bucket].compactMap({ $0 }) where !buckets.contains(bucket) {
                buckets.append(bucket)
            }
        }
        for bucket in buckets {
            for subscriber in (subscribers[bucket] ?? [:]).values {
                let matching = events.filter { subscriber.scope.contains($0) }
                if !matching.isEmpty { subscriber.offer(matching) }
            }
        }
    }
}

/// One subscription on one connection: events waiting to be written, bounded; written on the connection's thread
/// while it takes them. When the queue overflows (the peer stopped reading), the subscription ends
/// with `tooSlow` and the revision of the last event written, which the peer resumes from.
final class Subscriber: PushSource {
    struct Queue {
        var sink: (any PushSink)?
        var first: Reply?
        var events: [NamespaceEvent] = []
        /// The highest revision the subscriber will have seen once the queue is written (events or progress).
        var seen: UInt64
        /// The revision of the last event written to the connection.
        var written: UInt64
        var progress: UInt64?
        var end: SubscriptionEnd?
        var flushScheduled = false
        var stopped = false
    }

    /// Events per frame; a frame of maximal names stays far below the message limit.
    static let batch = 256
    let scope: EventScope
    let limit: Int
    private let queue: Mutex<Queue>
    private let onStop: @Sendable (Subscriber) -> Void

    /// A subscription that starts with `first` and `replay` (the events after `after` up to `revision`, the current
    /// one), or (`end`) one refused at once.
    init(scope: EventScope, first: Reply?, replay: [NamespaceEvent], after: UInt64, revision: UInt64,
         end: SubscriptionEnd? = nil, limit: Int, onStop: @escaping @Sendable (Subscriber) -> Void) {
        self.scope = scope
        self.limit = limit
        self.onStop = onStop
        queue = Mutex(Queue(first: first, events: replay, seen: revision, written: after, end: end))
    }

    func offer(_ events: [NamespaceEvent]) {
        let wake = queue.withLock { queue -> (any PushSink)? in
            guard queue.end == nil, !queue.stopped, let last = events.last, last.revision > queue.seen else { return nil }
            // Events committed before the subscription began may still be on their way out: its replay has them.
            let events = events.first!.revision > queue.seen ? events : events.filter { $0.revision > queue.seen }
            queue.seen = last.revision
            queue.progress = nil  // a progress mark not yet written is older than these events
            if queue.events.count + events.count > limit {
                queue.events = []
                queue.end = .tooSlow(lastDelivered: queue.written)
            } else {
                queue.events += events
            }
            return Subscriber.schedule(&queue)
        }
        if let wake { wakeUp(wake) }
    }

    func offerProgress(_ revision: UInt64) {
        let wake = queue.withLock { queue -> (any PushSink)? in
            guard queue.end == nil, !queue.stopped, queue.events.isEmpty, queue.seen < revision else { return nil }
            queue.seen = revision
            queue.progress = revision
            return Subscriber.schedule(&queue)
        }
        if let wake { wakeUp(wake) }
    }

    /// Flushes on the sink's thread (see `PushSink.execute`): on the committing thread itself, the turn's first event
    /// is written at once and the rest of the turn's (the seals of one batch of reads) together at its end, where
    /// flushing each at once wrote one frame per event (measured: 1.6–2× the events delivered and objects sealed
    /// under 100 subscribers, see PERFORMANCE).
    private func wakeUp(_ sink: any PushSink) {
        sink.execute { self.flush() }
    }

    /// The sink to wake when a flush is not already on its way (nil before the stream started).
    private static func schedule(_ queue: inout Queue) -> (any PushSink)? {
        guard let sink = queue.sink, !queue.flushScheduled else { return nil }
        queue.flushScheduled = true
        return sink
    }

    func start(_ sink: any PushSink) {
        queue.withLock { $0.sink = sink }
        flush()
    }

    func writable() { flush() }

    func stop() {
        queue.withLock { $0.stopped = true }
        onStop(self)
    }

    /// Writes what is queued while the socket takes it (on the sink's thread).
    private func flush() {
        let (sink, first, events, progress, end) = queue.withLock { queue in
            queue.flushScheduled = false
            guard let sink = queue.sink, !queue.stopped else {
                return (nil as (any PushSink)?, nil as Reply?, [NamespaceEvent](), nil as UInt64?, nil as SubscriptionEnd?)
            }
            // An ending subscription sends what it has at once; otherwise wait while the peer is not reading.
            guard sink.isWritable || queue.end != nil || queue.first != nil else { return (nil, nil, [], nil, nil) }
            defer {
                queue.first = nil
                queue.events = []
                queue.progress = nil
            }
            if let last = queue.events.last { queue.written = last.revision }
            return (sink, queue.first, queue.events, queue.progress, queue.end)
        }
        guard let sink else { return }
        if let first { sink.write(first) }
        var start = 0
        while start < events.count {
            let end = min(start + Subscriber.batch, events.count)
            sink.write(.events(Array(events[start..<end])))
            start = end
        }
        if let progress { sink.write(.progress(revision: progress)) }
        if let end {
            sink.write(.subscriptionEnded(end))
            sink.close(after: .seconds(5))
            stop()
        } else {
            sink.flush()
        }
    }
}
