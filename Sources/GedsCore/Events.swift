/// One committed change of the namespace, numbered by the MDS's revision (one counter for the whole namespace,
/// incremented by every change, so revisions order all changes and a subscriber resumes after the last it saw).
public struct NamespaceEvent: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: UInt8, Sendable, CaseIterable, CustomStringConvertible {
        /// An object was sealed under the key (a new object, or one that replaced an older one), or read through
        /// from the bucket's S3 store.
        case created = 1
        case deleted
        /// The object moved from `source` to the key.
        case renamed
        /// The key now shares the sealed bytes of `source`.
        case copied
        case metadata
        case bucketCreated
        /// The bucket went, with every object in it (no `deleted` event per key).
        case bucketDeleted

        /// The word `geds watch` prints.
        public var description: String {
            switch self {
            case .created: "created"
            case .deleted: "deleted"
            case .renamed: "renamed"
            case .copied: "copied"
            case .metadata: "metadata"
            case .bucketCreated: "bucket-created"
            case .bucketDeleted: "bucket-deleted"
            }
        }
    }

    public var revision: UInt64
    public var kind: Kind
    public var bucket: String
    /// Empty for bucket events.
    public var key: String
    /// The old name of a renamed object, the source of a copy; nil for the other kinds.
    public var source: ObjectName?

    public init(revision: UInt64, kind: Kind, bucket: String, key: String = "", source: ObjectName? = nil) {
        self.revision = revision
        self.kind = kind
        self.bucket = bucket
        self.key = key
        self.source = source
    }

    public var name: ObjectName { ObjectName(bucket: bucket, key: key) }

    /// `REVISION EVENT BUCKET/KEY`, a rename `REVISION renamed OLD NEW` (what `geds watch` prints).
    public var description: String {
        switch kind {
        case .bucketCreated, .bucketDeleted: "\(revision) \(kind) \(bucket)"
        case .renamed: "\(revision) \(kind) \(source.map { "\($0)" } ?? "?") \(name)"
        default: "\(revision) \(kind) \(name)"
        }
    }
}

/// A bucket and a key, printed `BUCKET/KEY`.
public struct ObjectName: Sendable, Hashable, CustomStringConvertible {
    public var bucket: String
    public var key: String

    public init(bucket: String, key: String) {
        self.bucket = bucket
        self.key = key
    }

    public var description: String { "\(bucket)/\(key)" }
}

/// What a subscription follows: a whole bucket, the keys under a prefix, or one key. Bucket events reach every
/// scope in their bucket; a rename reaches a scope that holds either name.
public struct EventScope: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: UInt8, Sendable {
        case bucket = 1
        case prefix
        case key
    }

    public var kind: Kind
    public var bucket: String
    /// The prefix or the key; empty for a bucket.
    public var key: String

    public init(kind: Kind, bucket: String, key: String = "") {
        self.kind = kind
        self.bucket = bucket
        self.key = kind == .bucket ? "" : key
    }

    public static func bucket(_ bucket: String) -> EventScope { EventScope(kind: .bucket, bucket: bucket) }
    public static func prefix(_ prefix: String, in bucket: String) -> EventScope {
        prefix.isEmpty ? .bucket(bucket) : EventScope(kind: .prefix, bucket: bucket, key: prefix)
    }
    public static func key(_ key: String, in bucket: String) -> EventScope { EventScope(kind: .key, bucket: bucket, key: key) }

    public func contains(_ event: NamespaceEvent) -> Bool {
        if event.kind == .bucketCreated || event.kind == .bucketDeleted { return event.bucket == bucket }
        if event.kind == .renamed, let source = event.source, contains(source) { return true }
        return contains(event.name)
    }

    public func contains(_ name: ObjectName) -> Bool {
        guard name.bucket == bucket else { return false }
        switch kind {
        case .bucket: return true
        case .prefix: return name.key.utf8.starts(with: key.utf8)
        case .key: return name.key.utf8.elementsEqual(key.utf8)
        }
    }

    public var description: String {
        switch kind {
        case .bucket: bucket
        case .prefix: "\(bucket)/\(key)*"
        case .key: "\(bucket)/\(key)"
        }
    }
}

/// Why the MDS ended a subscription, with the revision to act on.
public enum SubscriptionEnd: Sendable, Equatable {
    /// The history no longer holds the revisions after the one asked for: re-list, then subscribe after
    /// `oldest - 1` or later (`oldest` is the oldest revision the MDS still has).
    case compacted(oldest: UInt64)
    /// The subscriber did not take its events fast enough: resume after `lastDelivered`.
    case tooSlow(lastDelivered: UInt64)

    public var error: GedsError {
        switch self {
        case .compacted(let oldest):
            GedsError(.compacted, "history compacted: the oldest revision the MDS keeps is \(oldest); "
                      + "list again, then resume from a revision at or after \(oldest - 1)")
        case .tooSlow(let last):
            GedsError(.subscriberTooSlow, "subscriber too slow: the MDS ended the subscription; resume from \(last)")
        }
    }
}
