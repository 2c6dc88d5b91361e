import GedsCore
import NIOCore

/// The namespace's revision and the last `capacity` events, which serve resumes. Every committed change gets the
/// next revision, so the history holds consecutive revisions and a resume point is found by arithmetic.
/// The revision is journaled by a durable MDS (`--state`), so it never goes back across a restart; the history is
/// rebuilt only from the journal after the last snapshot. An MDS without state starts again at revision 0 with an
/// empty history, so a resume from beyond its revision is refused with an error naming it.
public struct EventHistory: Sendable {
    public let capacity: Int
    /// The revision of the last change (0 before the first).
    public private(set) var revision: UInt64 = 0
    private var kept = CircularBuffer<NamespaceEvent>()
    /// Events recorded since the service last handed them to the subscriptions (in revision order).
    public private(set) var unpublished: [NamespaceEvent] = []

    public init(capacity: Int) {
        self.capacity = max(0, capacity)
        kept.reserveCapacity(min(self.capacity, 1 << 16))
    }

    /// The oldest revision still kept; `revision + 1` when none is.
    public var oldest: UInt64 { kept.first?.revision ?? revision + 1 }

    /// Numbers a committed change and keeps it; call only once the change can no longer fail.
    public mutating func record(_ kind: NamespaceEvent.Kind, bucket: String, key: String = "", source: ObjectName? = nil) {
        revision += 1
        let event = NamespaceEvent(revision: revision, kind: kind, bucket: bucket, key: key, source: source)
        unpublished.append(event)
        guard capacity > 0 else { return }
        if kept.count == capacity { kept.removeFirst() }
        kept.append(event)
    }

    /// Moves the revision on to one restored from the journal (never back); a gap empties the history, which must
    /// stay consecutive.
    mutating func advance(to restored: UInt64) {
        guard restored > revision else { return }
        kept.removeAll()
        revision = restored
    }

    public mutating func takeUnpublished() -> [NamespaceEvent] {
        defer { unpublished = [] }
        return unpublished
    }

    public enum Resume: Equatable, Sendable {
        case events([NamespaceEvent])
        case compacted(oldest: UInt64)
    }

    /// Every kept event after `after` in the scope, or `compacted` when some of them are no longer kept.
    public func events(after: UInt64, in scope: EventScope) throws(GedsError) -> Resume {
        guard after <= revision else {
            throw GedsError(.invalidArgument, "revision \(after) is ahead of the MDS's revision \(revision) (was the MDS restarted?)")
        }
        guard after + 1 >= oldest else { return .compacted(oldest: oldest) }
        let start = kept.index(kept.startIndex, offsetBy: Int(after + 1 - oldest))
        return .events(kept[start...].filter { scope.contains($0) })
    }
}
