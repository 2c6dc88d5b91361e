import GedsCore
import GedsWire

/// A node's write-back uploads still to do, in the order they are tried. Every step is O(1) (amortized), so
/// a queue of many small objects costs no quadratic time.
public struct WriteBackQueue: Sendable {
    /// Blobs not in S3 yet, and where they go.
    public private(set) var pending: [BlobID: S3ObjectReference] = [:]
    /// The order uploads are tried in: as sealed, a failed one again at the back. Ids no longer pending are
    /// skipped when their turn comes.
    private var order: [BlobID] = []
    private var head = 0
    /// Blobs an uploader is working on.
    private var uploading: Set<BlobID> = []
    /// Uploader tasks running: at most `PersistenceAgent.maximumUploaders`, each while there is a blob nobody uploads yet.
    public var uploaders = 0
    /// Why the last attempt failed, for `flush`'s error.
    public var lastError: String?

    public init() {}

    /// False when the blob is queued already.
    public mutating func add(_ blob: BlobID, to object: S3ObjectReference) -> Bool {
        guard pending[blob] == nil else { return false }
        pending[blob] = object
        order.append(blob)
        return true
    }

    /// The next blob nobody uploads yet, now marked as being uploaded.
    public mutating func take() -> (blob: BlobID, object: S3ObjectReference)? {
        while head < order.count {
            let blob = order[head]
            head += 1
            if head >= 4096, head * 2 >= order.count {
                order.removeFirst(head)
                head = 0
            }
            if let object = pending[blob], !uploading.contains(blob) {
                uploading.insert(blob)
                return (blob, object)
            }
        }
        return nil
    }

    /// An upload ended: done (or moot), else tried again later.
    public mutating func finish(_ blob: BlobID, done: Bool) {
        uploading.remove(blob)
        if done {
            pending[blob] = nil
        } else if pending[blob] != nil {
            order.append(blob)
        }
    }

    /// The blob reached S3 another way (spilled there from tier 1).
    public mutating func forget(_ blob: BlobID) { pending[blob] = nil }
}
