import GedsCore

/// Objects this node creates without asking the MDS: under blob ids it reserved in advance (`reserveBlobs`), in
/// buckets a create here has found to exist, and announced at their seal (`sealNewObject`), so writing a small
/// object whole costs one round trip to the MDS instead of two. Ids are reserved per registration: an MDS that
/// restarted (the node registers again, under a new index) knows none of them.
struct LocalCreates {
    private var node: UInt32 = 0
    private var next: UInt64 = 0
    private var end: UInt64 = 0
    private var knownBuckets: Set<String> = []
    /// Objects created here that the MDS does not know of yet.
    private var unannounced: [BlobID: ObjectName] = [:]

    /// Ids reserved at once: one round trip per this many creates.
    static let reservation: UInt32 = 1024

    enum Taken {
        case blob(BlobID)
        /// No create here has found the bucket yet: the MDS checks it (a create through it).
        case unknownBucket
        /// Reserve more ids first.
        case noIDs
    }

    /// An id for a new object under `name`, created by node `index`, recorded as unannounced.
    mutating func take(for name: ObjectName, node index: UInt32) -> Taken {
        guard knownBuckets.contains(name.bucket) else { return .unknownBucket }
        guard node == index, next < end else { return .noIDs }
        let blob = BlobID(next)
        next += 1
        unannounced[blob] = name
        return .blob(blob)
    }

    mutating func reserved(first: BlobID, count: UInt32, node index: UInt32) {
        (node, next, end) = (index, first.rawValue, first.rawValue + UInt64(count))
    }

    mutating func bucketExists(_ bucket: String) {
        knownBuckets.insert(bucket)
    }

    mutating func bucketGone(_ bucket: String) {
        knownBuckets.remove(bucket)
    }

    /// The object's name when the MDS does not know of it yet (and from now on it is the caller's to announce).
    mutating func announce(_ blob: BlobID) -> ObjectName? {
        unannounced.removeValue(forKey: blob)
    }
}
