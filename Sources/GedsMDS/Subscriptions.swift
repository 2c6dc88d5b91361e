import GedsCore
import GedsTCP
import GedsWire
import NIOCore
import Synchronization

/// The MDS's live subscriptions, by bucket. `publish` and `progress` are called inside the store's critical
/// section, so every subscriber's queue receives events in revision order; they only append to bounded queues
/// and wake the subscribers' event loops, so no subscriber can hold up the MDS or the others.
final class SubscriptionHub: Sendable {
    private let subscribers = Mutex<[String: [ObjectIdentifier: Subscriber]]>([:])

    func add(_ subscriber: Subscriber) {
        subscribers.withLock { $0[subscriber.scope.bucket, default: [:]][ObjectIdentifier(subscriber)] = subscriber }
    }

    func remove(_ subscriber: Subscriber) {
        subscribers.withLock { table in
            table[subscriber.scope.bucket]?[ObjectIdentifier(subscriber)] = nil
            if table[subscriber.scope.bucket]?.isEmpty == true { table[subscriber.scope.bucket] = nil }
        }
    }

    var count: Int { subscribers.withLock { $0.values.reduce(0) { $0 + $1.count } } }

    /// Hands each subscriber the events in its scope (call in revision order).
    func publish(_ events: [NamespaceEvent]) {
        // The buckets the events touch (a rename touches its old name's bucket too), each once.
        var buckets: [String] = []
        for event in events {
            for bucket in [event.bucket, event.source?.bucket].compactMap({ $0 }) where !buckets.contains(bucket) {
                buckets.append(bucket)
            }
        }
        subscribers.withLock { table in
            for bucket in buckets {
                for subscriber in (table[bucket] ?? [:]).values {
                    let matching = events.filter { subscriber.scope.contains($0) }
                    if !matching.isEmpty { subscriber.offer(matching) }
                }
            }
        }
    }

    /// Tells every idle subscriber that it has seen everything up to `revision`.
    func progress(revision: UInt64) {
        subscribers.withLock { table in
            for bucket in table.values {
                for subscriber in bucket.values { subscriber.offerProgress(revision) }
            }
        }
    }
}

/// One subscription on one connection: events waiting to be written, bounded; written on the connection's event
/// loop while its socket takes them. When the queue overflows (the peer stopped reading), the subscription ends
/// with `tooSlow` and the revision of the last event written, which the peer resumes from.
final class Subscriber: PushSource {
    struct Queue {
        var sink: PushSink?
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
        let wake = queue.withLock { queue -> PushSink? in
            guard queue.end == nil, !queue.stopped else { return nil }
            queue.seen = events.last!.revision
            if queue.events.count + events.count > limit {
                queue.events = []
                queue.end = .tooSlow(lastDelivered: queue.written)
            } else {
                queue.events += events
            }
            return Subscriber.schedule(&queue)
        }
        if let wake { wake.eventLoop.execute { self.flush() } }
    }

    func offerProgress(_ revision: UInt64) {
        let wake = queue.withLock { queue -> PushSink? in
            guard queue.end == nil, !queue.stopped, queue.events.isEmpty, queue.seen < revision else { return nil }
            queue.seen = revision
            queue.progress = revision
            return Subscriber.schedule(&queue)
        }
        if let wake { wake.eventLoop.execute { self.flush() } }
    }

    /// The sink to wake when a flush is not already on its way (nil before the stream started).
    private static func schedule(_ queue: inout Queue) -> PushSink? {
        guard let sink = queue.sink, !queue.flushScheduled else { return nil }
        queue.flushScheduled = true
        return sink
    }

    func start(_ sink: PushSink) {
        queue.withLock { $0.sink = sink }
        flush()
    }

    func writable() { flush() }

    func stop() {
        queue.withLock { $0.stopped = true }
        onStop(self)
    }

    /// Writes what is queued while the socket takes it (on the sink's event loop).
    private func flush() {
        let (sink, first, events, progress, end) = queue.withLock { queue in
            queue.flushScheduled = false
            guard let sink = queue.sink, !queue.stopped else {
                return (nil as PushSink?, nil as Reply?, [NamespaceEvent](), nil as UInt64?, nil as SubscriptionEnd?)
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
