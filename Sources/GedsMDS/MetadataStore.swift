import GedsCore
import GedsWire

/// The MDS's state: buckets, keys, blobs and their copies, nodes and their leases.
///
/// Plain synchronous code with no locking of its own (the service guards it), so every operation is
/// atomic and can be tested directly. Keys point at blobs (the immutable bytes of a sealed object): rename
/// moves a key, copy adds a key to the same blob, and a blob goes when its last key does.
public struct MetadataStore: Sendable {
    struct Node {
        var registration: NodeRegistration
        var alive = true
        var lastHeartbeat: UInt64
        var blobs: UInt64 = 0
        var bytes: UInt64 = 0
        /// The bytes its tier 0 can still take, as its last heartbeat said (`UInt64.max`: unknown).
        var room = UInt64.max
        /// Blobs this node must delete, handed over with its next heartbeat.
        var drop: [BlobID] = []
        /// Asked to move its copies away and leave (`geds drain`); told so with every heartbeat until it leaves.
        var draining = false
        var drainFailure: String?

        var info: NodeInfo {
            NodeInfo(name: registration.name, hostID: registration.hostID, role: registration.role, tcp: registration.tcp,
                     rdma: registration.rdma, alive: alive, blobs: blobs, bytes: bytes, draining: draining, drainFailure: drainFailure)
        }
    }

    struct Bucket {
        var index = BucketIndex()
        /// User metadata of the keys that have any, by record number.
        var metadata: [UInt32: [String: String]] = [:]
        /// Objects created but not sealed yet, by key, so that readers can be told "not sealed".
        var pending: [Key: Int] = [:]
        /// The bucket's S3 store, when it has one.
        var storage: BucketStorage?
        /// The replication factor of objects sealed here (unless an object asks for its own).
        var replicas: UInt8 = 1
    }

    /// A blob's S3 copy: assigned at seal in a bucket with an S3 store (so every node that holds the blob knows
    /// where it goes), a location once a node has put it there. Kept per blob, since keys move and share blobs.
    struct S3Copy {
        /// The S3 service and bucket, by number in `s3Stores` (shared by all the blobs stored there).
        var store: UInt32
        var key: String
        /// The GEDS bucket whose key named it: where its metadata is found at upload.
        var bucket: String
        /// The bucket's persistency when the blob was sealed.
        var persistency: Persistency
        var stored: Bool
    }

    /// An S3 object, by store number and key: what the holder and deletion tables are keyed by.
    struct S3Name: Hashable {
        var store: UInt32
        var key: String
    }

    /// An S3 service and bucket that blobs have copies in.
    struct S3Store: Hashable {
        var endpoint: String
        var bucket: String
        var region: String
    }

    /// What a key points at, as moved by rename and shared by copy.
    struct Entry {
        var blob: BlobID
        var modified: UInt64
        var metadata: [String: String]
    }

    struct PendingObject {
        var bucket: String
        var key: Key
        var node: UInt32
        /// Create-if-absent: the seal fails if the key was bound meanwhile, so of racing creators one wins.
        var exclusive = false
        /// Copies placed before the seal (a relocation target that already holds the bytes).
        var placements: [BlobPlacement] = []
        /// The object's own replication factor (0: its bucket's).
        var replicas: UInt8 = 0
    }

    /// A copy a node was asked to make (`replicationOrders`), until it publishes it or the order lapses.
    struct ReplicationInFlight {
        var node: UInt32
        var lapse: UInt64
    }

    public static let maximumDropsPerHeartbeat = 65_536
    public static let defaultEventHistory = 100_000
    public let leaseMilliseconds: UInt64
    var nodes: [UInt32: Node] = [:]
    private var nodeByName: [String: UInt32] = [:]
    var nextNode: UInt32 = 1
    var buckets: [String: Bucket] = [:]
    var blobs: BlobTable
    /// The largest object whose bytes a seal may bring to be kept inline (0: none; see `InlineContents`).
    public let inlineLimit: UInt32
    var pendingObjects: [BlobID: PendingObject] = [:]
    /// One per blob with an S3 copy, since `copy` shares blobs: about 45 bytes (plus a key's bytes beyond 15), and
    /// about 30 more in `s3Holders`.
    var s3Copies: [BlobID: S3Copy] = [:]
    var s3Stores: [S3Store] = []
    private var s3StoreNumbers: [S3Store: UInt32] = [:]
    /// The blob whose bytes belong in each S3 object: the last one assigned it. Deleting a key deletes its blob's S3
    /// object only while that blob is still the holder, so a newer object sealed under the same name keeps its bytes.
    var s3Holders: [S3Name: BlobID] = [:]
    /// S3 objects a node was told to delete, until it says they are gone (or the order lapses, at this MDS time in
    /// milliseconds, when that node died). No blob is uploaded to such an object meanwhile (`s3DeletionPending`), so
    /// the deletion can never remove bytes sealed after it was ordered. Journaled: a restarted MDS still holds them.
    var s3Deletions: [S3Name: UInt64] = [:]
    public static let s3DeletionLapseMilliseconds: UInt64 = 60_000
    /// The replication factor of every blob that wants more than one copy.
    var replicated: [BlobID: UInt8] = [:]
    /// The factor of blobs whose object was created with its own (also 1); the others follow their bucket's.
    var ownReplicas: [BlobID: UInt8] = [:]
    /// Blobs that may have more copies than they want: the extra ones are dropped a few per heartbeat.
    var overReplicated: Set<BlobID> = []
    /// Replicated blobs that may have fewer copies than they want: nodes are asked to copy them, a few per heartbeat.
    var underReplicated: Set<BlobID> = []
    var replicationInFlight: [BlobID: ReplicationInFlight] = [:]
    /// Re-replication's rate limit: copies ordered from one node at a time, and how many blobs one heartbeat looks at.
    public static let replicationOrdersPerNode = 8
    static let replicationScanPerHeartbeat = 1024
    /// An ordered copy not published by then is ordered again (from another node when one fits better).
    public static let replicationOrderLapseMilliseconds: UInt64 = 60_000
    var nextBlob: BlobID
    /// The revision and the recent changes of the namespace: every successful change records its event last,
    /// once nothing can fail any more, so no event is ever published for a change that did not happen.
    public internal(set) var events: EventHistory
    /// Whether changes are kept for the journal (`geds-mds --state`); without one they cost nothing.
    var journaling = false
    /// Changes made since the service last appended them to the journal (in revision order).
    var unjournaled: [JournalFormat.Record] = []

    /// `epoch` goes into the high bits of blob ids, so ids from an earlier MDS run are never reused.
    /// `eventHistory` events are kept for subscriptions that resume. Objects up to `inlineLimit` bytes keep their
    /// bytes here, `inlineBudget` bytes in all.
    public init(leaseMilliseconds: UInt64 = 5000, epoch: UInt32 = UInt32.random(in: 1...0xFFFFF),
                eventHistory: Int = MetadataStore.defaultEventHistory, inlineLimit: UInt32 = InlineContents.defaultLimit,
                inlineBudget: UInt64 = InlineContents.defaultBudget) {
        self.leaseMilliseconds = leaseMilliseconds
        self.inlineLimit = min(inlineLimit, InlineContents.maximumLimit)
        blobs = BlobTable(contentBudget: inlineBudget)
        events = EventHistory(capacity: eventHistory)
        nextBlob = BlobID(UInt64(epoch & 0xFFFFF) << 44)
    }

    public var objectCount: Int { buckets.values.reduce(0) { $0 + $1.index.count } }

    /// What `/metrics` reports of the namespace (read at scrape time).
    public var levels: (buckets: Int, objects: Int, liveNodes: Int) {
        (buckets.count, objectCount, nodes.values.lazy.filter(\.alive).count)
    }

    /// Hands the events recorded since the last call to the caller, who publishes them (in this order).
    public mutating func takeUnpublishedEvents() -> [NamespaceEvent] { events.takeUnpublished() }

    // MARK: Nodes

    public mutating func register(_ registration: NodeRegistration, now: UInt64) -> UInt32 {
        if let old = nodeByName[registration.name] { retire(node: old) }
        let index = nextNode
        nextNode += 1
        nodes[index] = Node(registration: registration, lastHeartbeat: now)
        nodeByName[registration.name] = index
        return index
    }

    public mutating func heartbeat(node index: UInt32, blobs: UInt64, bytes: UInt64, room: UInt64 = .max,
                                   now: UInt64) throws(GedsError) -> [BlobID] {
        guard nodes[index]?.alive == true else {
            throw GedsError(.noSuchNode, "node \(index) is not registered (its lease ended); register again")
        }
        nodes[index]!.lastHeartbeat = now
        nodes[index]!.blobs = blobs
        nodes[index]!.bytes = bytes
        nodes[index]!.room = room
        trimExcessCopies(now: now)
        // Bounded so the reply stays far below the frame limit; the rest goes with the next heartbeats.
        let drop = Array(nodes[index]!.drop.prefix(MetadataStore.maximumDropsPerHeartbeat))
        nodes[index]!.drop.removeFirst(drop.count)
        return drop
    }

    /// Marks nodes whose lease ran out as dead and withdraws their copies; returns their names.
    public mutating func expireLeases(now: UInt64) -> [String] {
        var expired: [String] = []
        for (index, node) in nodes where node.alive && now > node.lastHeartbeat + leaseMilliseconds {
            expired.append(node.registration.name)
            retire(node: index)
        }
        return expired
    }

    /// A node that shut down cleanly: its copies go now; embedded nodes are forgotten, daemons stay listed.
    public mutating func leave(node index: UInt32) {
        retire(node: index)
        if nodes[index]?.registration.role == .embedded { nodes[index] = nil }
    }

    private mutating func retire(node index: UInt32) {
        guard var node = nodes[index] else { return }
        node.alive = false
        node.drop = []
        nodes[index] = node
        if nodeByName[node.registration.name] == index { nodeByName[node.registration.name] = nil }
        replicationInFlight = replicationInFlight.filter { $0.value.node != index }
        for (blob, pending) in pendingObjects {
            if pending.node == index {
                abort(blob: blob)
            } else {
                pendingObjects[blob]?.placements.removeAll { $0.node == index }
            }
        }
        // Dead nodes are kept (marked) for `listNodes`; only their copies go.
        blobs.remove(node: index)
        findUnderReplicated()
    }

    public func listNodes() -> [NodeInfo] {
        nodes.values.map(\.info).sorted { $0.name < $1.name }
    }

    /// Starts draining the live node `name` (again after a failed drain); a drain under way goes on.
    public mutating func drain(nodeNamed name: String) throws(GedsError) {
        guard let index = nodeByName[name], let node = nodes[index], node.alive else {
            throw GedsError(.noSuchNode, "no live node named '\(name)'")
        }
        guard node.registration.role == .daemon else {
            throw GedsError(.invalidArgument, "\(name) is a task's own node, which goes with its task; only a gedsd is drained")
        }
        nodes[index]!.draining = true
        nodes[index]!.drainFailure = nil
    }

    public func isDraining(node index: UInt32) -> Bool { nodes[index]?.draining == true }

    /// The node gave up its drain (`reason`) and keeps serving.
    public mutating func drainFailed(node index: UInt32, reason: String) throws(GedsError) {
        guard nodes[index]?.alive == true else { throw GedsError(.noSuchNode, "node \(index) is not registered") }
        nodes[index]!.draining = false
        nodes[index]!.drainFailure = reason
    }

    // MARK: Buckets

    public mutating func createBucket(_ name: String) throws(GedsError) {
        _ = try BucketName(name)
        guard buckets[name] == nil else { throw GedsError(.bucketExists, "bucket already exists: \(name)") }
        buckets[name] = Bucket()
        events.record(.bucketCreated, bucket: name)
        journal(.createBucket(name))
    }

    public mutating func deleteBucket(_ name: String, force: Bool) throws(GedsError) {
        guard let bucket = buckets[name] else { throw GedsError.noSuchBucket(name) }
        if !force, bucket.index.count > 0 || !bucket.pending.isEmpty {
            throw GedsError(.bucketNotEmpty, "bucket \(name) is not empty (\(bucket.index.count) objects); delete them first or force")
        }
        bucket.index.walk(from: []) { record, _ in
            release(blob: bucket.index[record].blob)
            return .next
        }
        for (blob, pending) in pendingObjects where pending.bucket == name { abort(blob: blob) }
        buckets[name] = nil
        events.record(.bucketDeleted, bucket: name)
        journal(.deleteBucket(name))
    }

    public func listBuckets() -> [String] { buckets.keys.sorted() }

    // MARK: Objects

    /// An unsealed object under the key; `exclusive` refuses a key that is bound now or at the seal.
    /// `replicas`: the object's replication factor (0: its bucket's). `reserved`: an id from `reserveBlobs` (0: a new one).
    public mutating func createObject(bucket: String, key: String, node: UInt32, exclusive: Bool = false,
                                      replicas: UInt8 = 0, reserved: BlobID = 0) throws(GedsError) -> BlobID {
        _ = try ObjectKey(key)
        if replicas != 0 { try Replicas.check(Int(replicas)) }
        guard let bucketState = buckets[bucket] else { throw GedsError.noSuchBucket(bucket) }
        guard nodes[node]?.alive == true else { throw GedsError(.noSuchNode, "node \(node) is not registered") }
        if exclusive, bucketState.index.find(key) != nil { throw GedsError.objectExists(bucket, key) }
        let blob: BlobID
        if reserved == 0 {
            nextBlob = nextBlob.next
            blob = nextBlob
        } else {
            try checkReserved(reserved)
            blob = reserved
        }
        pendingObjects[blob] = PendingObject(bucket: bucket, key: Key(key), node: node, exclusive: exclusive, replicas: replicas)
        buckets[bucket]!.pending[Key(key), default: 0] += 1
        return blob
    }

    /// The first of `count` blob ids only `node` uses (see `Request.reserveBlobs`).
    public mutating func reserveBlobs(node: UInt32, count: UInt32) throws(GedsError) -> BlobID {
        guard nodes[node]?.alive == true else { throw GedsError(.noSuchNode, "node \(node) is not registered") }
        guard (1...MetadataStore.maximumReservation).contains(count) else {
            throw GedsError(.invalidArgument, "a node reserves 1 to \(MetadataStore.maximumReservation) blob ids at a time, not \(count)")
        }
        let first = nextBlob.next
        nextBlob = BlobID(nextBlob.rawValue + UInt64(count))
        return first
    }

    public static let maximumReservation: UInt32 = 1 << 16

    /// A reserved id is one this run of the MDS handed out (its epoch, not beyond the last) that names nothing now.
    private func checkReserved(_ blob: BlobID) throws(GedsError) {
        guard blob.rawValue >> 44 == nextBlob.rawValue >> 44, blob <= nextBlob else {
            throw GedsError(.noSuchBlob, "blob id \(blob.fileName) was not reserved from this MDS (it restarted?); create the object again")
        }
        guard !blobs.contains(blob), pendingObjects[blob] == nil else {
            throw GedsError(.invalidArgument, "blob id \(blob.fileName) is in use; a reserved id serves one object")
        }
    }

    /// `Request.sealNewObject`: creates the object under its reserved id and seals it, unless it wants more copies
    /// than one (`.created`: it is only created, for its copies to be placed before the seal).
    public mutating func sealNewObject(blob: BlobID, bucket: String, key: String, size: UInt64, metadata: [String: String],
                                       placement: BlobPlacement, contents: [UInt8]?, now: UInt64) throws(GedsError) -> SealedNew {
        try UserMetadata.validate(metadata)
        _ = try createObject(bucket: bucket, key: key, node: placement.node, reserved: blob)
        guard wantedCopies(of: blob) == 1 else { return .created }
        do {
            return .sealed(try seal(blob: blob, size: size, metadata: metadata, placement: placement, contents: contents, now: now))
        } catch {
            abort(blob: blob)
            throw error
        }
    }

    public enum SealedNew: Equatable, Sendable {
        case created
        /// Where its S3 copy goes, when its bucket has an S3 store.
        case sealed(S3Assignment?)
    }

    /// Binds the key to the new blob; an older object under the key is replaced in the same step. The
    /// copies are the creator's (`placement`, unless its node is 0: the creator keeps none) and any placed
    /// before the seal by a relocation target.
    /// Returns where the blob's S3 copy goes when its bucket has an S3 store.
    @discardableResult
    public mutating func seal(blob: BlobID, size: UInt64, metadata: [String: String], placement: BlobPlacement,
                              contents: [UInt8]? = nil, now: UInt64) throws(GedsError) -> S3Assignment? {
        try UserMetadata.validate(metadata)
        guard var pending = pendingObjects[blob] else {
            throw GedsError(.noSuchObject, "object being sealed is unknown (deleted, or its bucket was removed)")
        }
        if placement.node != 0 {
            guard placement.node == pending.node, nodes[placement.node]?.alive == true else {
                throw GedsError(.noSuchNode, "node \(placement.node) cannot seal an object it did not create")
            }
            pending.placements.removeAll { $0.node == placement.node }
            pending.placements.append(placement)
        }
        guard !pending.placements.isEmpty else {
            throw GedsError(.objectLost, "object \(pending.bucket)/\(pending.key.string) cannot be sealed: no node holds it")
        }
        if pending.exclusive, buckets[pending.bucket]?.index.find(pending.key.string) != nil {
            abort(blob: blob)
            throw GedsError.objectExists(pending.bucket, pending.key.string)
        }
        let wanted = wantedCopies(of: blob)
        pendingObjects[blob]?.placements = []
        abort(blob: blob)
        let assignment = bindSealed(blob, as: ObjectName(bucket: pending.bucket, key: pending.key.string), size: size,
                                    metadata: metadata, placements: pending.placements,
                                    contents: size <= UInt64(inlineLimit) ? contents : nil, now: now)
        if pending.replicas != 0 {
            ownReplicas[blob] = pending.replicas
            journal(.ownReplicas(blob, pending.replicas))
        } else if wanted > 1 {
            journal(.replicas(blob, wanted))
        }
        if wanted > 1 { setWantedCopies(wanted, of: blob) }
        return assignment
    }

    /// The seal's change once it is known to succeed (also what a replay of the journal makes).
    mutating func bindSealed(_ blob: BlobID, as name: ObjectName, size: UInt64, metadata: [String: String],
                             placements: [BlobPlacement], contents: [UInt8]?, now: UInt64) -> S3Assignment? {
        blobs.insert(blob, size: size, placements: placements, bytes: contents)
        var assignment: S3Assignment?
        if let storage = buckets[name.bucket]?.storage {
            // Assigned before the key is bound, so the object it replaces no longer holds the S3 object.
            let object = storage.object(forKey: name.key)
            assignS3Copy(of: object, in: name.bucket, to: blob, persistency: storage.persistency, stored: false)
            assignment = S3Assignment(object: object, persistency: storage.persistency)
        }
        bind(bucket: name.bucket, key: name.key, to: Entry(blob: blob, modified: now, metadata: metadata))
        events.record(.created, bucket: name.bucket, key: name.key)
        journal(.seal(name, blob: blob, size: size, metadata: metadata, modified: now))
        return assignment
    }

    /// Forgets an unsealed object; nodes that took a copy of it ahead of the seal are told to drop it.
    public mutating func abort(blob: BlobID) {
        guard let pending = pendingObjects.removeValue(forKey: blob) else { return }
        for placement in pending.placements { nodes[placement.node]?.drop.append(blob) }
        guard buckets[pending.bucket] != nil else { return }
        let remaining = (buckets[pending.bucket]!.pending[pending.key] ?? 1) - 1
        buckets[pending.bucket]!.pending[pending.key] = remaining > 0 ? remaining : nil
    }

    public func lookup(bucket: String, key: String) throws(GedsError) -> ObjectInfo {
        guard let bucketState = buckets[bucket] else { throw GedsError.noSuchBucket(bucket) }
        guard let record = bucketState.index.find(key) else {
            if bucketState.pending[Key(key)] != nil {
                throw GedsError(.objectNotSealed, "object \(bucket)/\(key) is not sealed yet")
            }
            throw GedsError.noSuchObject(bucket, key)
        }
        let entry = bucketState.index[record]
        var locations = blobs.placements(of: entry.blob).compactMap { location(of: $0, blob: entry.blob) }
        if let s3 = s3Copies[entry.blob], s3.stored { locations.append(.s3(object(of: s3))) }
        return ObjectInfo(bucket: bucket, key: key, blob: entry.blob, size: blobs.size(of: entry.blob) ?? 0, sealed: true,
                          modified: entry.modified, metadata: bucketState.metadata[record] ?? [:], locations: locations,
                          // A cache of the copies, not a copy: an object whose copies are all gone is lost, as before.
                          contents: locations.isEmpty ? nil : blobs.contents(of: entry.blob),
                          wantedCopies: Int(replicated[entry.blob] ?? 1))
    }

    func location(of placement: BlobPlacement, blob: BlobID) -> Location? {
        guard let node = nodes[placement.node], node.alive else { return nil }
        let registration = node.registration
        // A copy is readable over RDMA only when its node offers RDMA and registered the copy (an rkey).
        let rdma = registration.rdma.flatMap { endpoint in
            placement.rkey == 0 ? nil : RDMAAccess(endpoint: endpoint, address: placement.rdmaAddress, rkey: placement.rkey)
        }
        var path = registration.tier0Directory
        path.reserveCapacity(path.utf8.count + 1 + 16)  // one allocation for the whole path
        path += "/"
        path += placement.slot?.fileName ?? blob.fileName
        return .node(NodeCopy(node: registration.name, hostID: registration.hostID, tier: placement.tier,
                              tcp: registration.tcp, rdma: rdma, path: path,
                              offset: placement.slot?.offset, checksum: blobs.checksum(of: blob)))
    }

    public func list(bucket: String, prefix: String, delimiter: String, startAfter: String,
                     maxKeys: UInt32) throws(GedsError) -> ListPage {
        guard let state = buckets[bucket] else { throw GedsError.noSuchBucket(bucket) }
        let limit = Int(min(max(maxKeys, 1), WireLimits.maximumListKeys))
        var page = ListPage(objects: [], commonPrefixes: [], nextStartAfter: nil)
        var lastReturned = ""
        let prefixBytes = Array(prefix.utf8)
        let startBytes = Array(startAfter.utf8)
        let delimiterBytes = Array(delimiter.utf8)
        let start = prefixBytes.lexicographicallyPrecedes(startBytes) ? startBytes : prefixBytes
        state.index.walk(from: start) { record, key in
            if key.elementsEqual(startBytes) { return .next }
            guard key.starts(with: prefixBytes) else { return .stop }
            let full = page.objects.count + page.commonPrefixes.count == limit
            if let common = BucketIndex.commonPrefix(of: key, after: prefixBytes.count, delimiter: delimiterBytes) {
                if full {
                    page.nextStartAfter = lastReturned
                    return .stop
                }
                page.commonPrefixes.append(String(decoding: common, as: UTF8.self))
                // The next page starts after the last key rolled into this prefix, so it is not repeated.
                lastReturned = state.index.lastRecord(withPrefix: common).map { state.index.key(of: $0) }
                    ?? String(decoding: common, as: UTF8.self)
                return .skipPrefix(common)
            }
            if full {
                page.nextStartAfter = lastReturned
                return .stop
            }
            let entry = state.index[record]
            let name = String(decoding: key, as: UTF8.self)
            page.objects.append(ListEntry(key: name, size: blobs.size(of: entry.blob) ?? 0, modified: entry.modified))
            lastReturned = name
            return .next
        }
        return page
    }

    /// Deletes a key. Returns the S3 objects the caller must now delete (and then confirm with `s3Deleted`): the
    /// blob's, when this was its last key and no newer blob holds that S3 object, and the key's own in the bucket's
    /// S3 store (a key only S3 has is deleted there); nil when the bucket has no S3 store. `inGEDS` is false when
    /// GEDS had no such key; with no S3 store that is `noSuchObject`.
    @discardableResult
    public mutating func delete(bucket: String, key: String,
                                now: UInt64) throws(GedsError) -> (inGEDS: Bool, s3Objects: [S3ObjectReference]?) {
        let storage = try self.storage(bucket: bucket)
        var doomed: [S3Name] = []
        let entry = unbind(bucket: bucket, key: key)
        if let entry, let name = release(blob: entry.blob) { doomed.append(name) }
        if let storage {
            let name = s3Name(of: storage.object(forKey: key))
            if s3Holders[name] == nil, !doomed.contains(name) { doomed.append(name) }
        } else if entry == nil {
            throw GedsError.noSuchObject(bucket, key)
        }
        guard entry != nil else {
            // A key only S3 has: no change of the namespace to replay, so the deletion is journaled on its own.
            return (false, storage == nil ? nil : journaledDeletions(doomed, now: now))
        }
        events.record(.deleted, bucket: bucket, key: key)
        journal(.delete(ObjectName(bucket: bucket, key: key), now: now))
        return (true, storage == nil ? nil : orderDeletions(doomed, now: now))
    }

    public mutating func delete(bucket: String, prefix: String) throws(GedsError) -> UInt64 {
        guard let state = buckets[bucket] else { throw GedsError.noSuchBucket(bucket) }
        var doomed: [String] = []
        let prefixBytes = Array(prefix.utf8)
        state.index.walk(from: prefixBytes) { record, key in
            guard key.starts(with: prefixBytes) else { return .stop }
            doomed.append(String(decoding: key, as: UTF8.self))
            return .next
        }
        for key in doomed {
            if let entry = unbind(bucket: bucket, key: key) { release(blob: entry.blob) }
            events.record(.deleted, bucket: bucket, key: key)
        }
        if !doomed.isEmpty { journal(.deletePrefix(bucket: bucket, prefix: prefix)) }
        return UInt64(doomed.count)
    }

    /// Where a renamed object's S3 copy must go: the caller copies `from` to `to` in S3 (server-side), reports the
    /// copy with `addS3Copy`, deletes `from` when `deleteSource`, and confirms both with `s3Deleted`; no upload to
    /// either starts meanwhile.
    public struct S3Move: Sendable, Equatable {
        public var blob: BlobID
        public var from: S3ObjectReference
        public var to: S3ObjectReference
        public var deleteSource: Bool
    }

    /// Moves a key; an object already at the destination is replaced. No bytes move in GEDS. In a bucket with an
    /// S3 store the blob's S3 copy follows the key: returned when it is in S3 already and must be moved there (one
    /// not uploaded yet is simply uploaded to the new key).
    @discardableResult
    public mutating func rename(from: (bucket: String, key: String), to: (bucket: String, key: String),
                                now: UInt64) throws(GedsError) -> S3Move? {
        _ = try ObjectKey(to.key)
        guard buckets[from.bucket] != nil else { throw GedsError.noSuchBucket(from.bucket) }
        guard buckets[to.bucket] != nil else { throw GedsError.noSuchBucket(to.bucket) }
        guard buckets[from.bucket]!.index.find(from.key) != nil else { throw GedsError.noSuchObject(from.bucket, from.key) }
        if from.bucket == to.bucket, Key(from.key) == Key(to.key) { return nil }
        // An S3 object being deleted (the destination key was deleted a moment ago) must be gone before the
        // moved object is copied there, or the deletion could remove it: the caller tries again shortly.
        let blob = buckets[from.bucket]!.index[buckets[from.bucket]!.index.find(from.key)!].blob
        if s3Copies[blob]?.stored == true, let storage = buckets[to.bucket]!.storage,
           let lapse = s3Deletions[s3Name(of: storage.object(forKey: to.key))], now < lapse {
            throw GedsError(.s3DeletionPending, "\(storage.object(forKey: to.key).url) is being deleted; rename once that is done")
        }
        var entry = unbind(bucket: from.bucket, key: from.key)!
        entry.modified = now
        bind(bucket: to.bucket, key: to.key, to: entry)
        events.record(.renamed, bucket: to.bucket, key: to.key, source: ObjectName(bucket: from.bucket, key: from.key))
        journal(.rename(from: ObjectName(bucket: from.bucket, key: from.key), to: ObjectName(bucket: to.bucket, key: to.key), now: now))
        return moveS3Copy(of: entry.blob, to: to.key, in: to.bucket, now: now)
    }

    private mutating func moveS3Copy(of blob: BlobID, to key: String, in bucket: String, now: UInt64) -> S3Move? {
        guard var copy = s3Copies[blob], let storage = buckets[bucket]?.storage else { return nil }
        let old = S3Name(store: copy.store, key: copy.key)
        let new = s3Name(of: storage.object(forKey: key))
        guard old != new else { return nil }
        let ownsOld = s3Holders[old] == blob
        if ownsOld { s3Holders[old] = nil }
        s3Holders[new] = blob
        let stored = copy.stored
        copy.store = new.store
        copy.key = new.key
        copy.bucket = bucket
        copy.stored = false
        s3Copies[blob] = copy
        guard stored else { return nil }
        _ = orderDeletions(ownsOld ? [old, new] : [new], now: now)
        return S3Move(blob: blob, from: object(of: old), to: object(of: new), deleteSource: ownsOld)
    }

    /// Adds a key for the same sealed bytes (they are immutable, so sharing them is safe). Into a bucket with an S3
    /// store, an object already in S3 is copied there instead (returned: the caller copies it server-side and
    /// reports it), as a new blob whose one copy is the new S3 object: S3 then has both names, each deleted with
    /// its own key.
    @discardableResult
    public mutating func copy(from: (bucket: String, key: String), to: (bucket: String, key: String),
                              now: UInt64) throws(GedsError) -> S3Move? {
        _ = try ObjectKey(to.key)
        guard buckets[from.bucket] != nil else { throw GedsError.noSuchBucket(from.bucket) }
        guard buckets[to.bucket] != nil else { throw GedsError.noSuchBucket(to.bucket) }
        guard let record = buckets[from.bucket]!.index.find(from.key) else { throw GedsError.noSuchObject(from.bucket, from.key) }
        if from.bucket == to.bucket, Key(from.key) == Key(to.key) { return nil }
        let source = buckets[from.bucket]!
        let blob = source.index[record].blob
        let entry = Entry(blob: blob, modified: now, metadata: source.metadata[record] ?? [:])
        let newBlob = nextBlob.next
        var move: S3Move?
        if let copy = s3Copies[blob], copy.stored, let storage = buckets[to.bucket]!.storage {
            move = try copyInS3(copy, sizeOf: blob, as: entry, to: to, storage: storage, now: now)
        } else {
            blobs.retain(blob)
            bind(bucket: to.bucket, key: to.key, to: entry)
        }
        events.record(.copied, bucket: to.bucket, key: to.key, source: ObjectName(bucket: from.bucket, key: from.key))
        journal(.copy(from: ObjectName(bucket: from.bucket, key: from.key), to: ObjectName(bucket: to.bucket, key: to.key), now: now,
                      blob: newBlob))
        return move
    }

    private mutating func copyInS3(_ source: S3Copy, sizeOf blob: BlobID, as entry: Entry, to: (bucket: String, key: String),
                                   storage: BucketStorage, now: UInt64) throws(GedsError) -> S3Move {
        let target = storage.object(forKey: to.key)
        let name = s3Name(of: target)
        if let lapse = s3Deletions[name], now < lapse {
            throw GedsError(.s3DeletionPending, "\(target.url) is being deleted; copy once that is done")
        }
        nextBlob = nextBlob.next
        blobs.insert(nextBlob, size: blobs.size(of: blob) ?? 0, placements: [], bytes: blobs.contents(of: blob))
        // Held before the key is bound, so the object it replaces no longer holds the S3 object.
        assignS3Copy(of: target, in: to.bucket, to: nextBlob, persistency: storage.persistency, stored: false)
        var copied = entry
        copied.blob = nextBlob
        bind(bucket: to.bucket, key: to.key, to: copied)
        _ = orderDeletions([name], now: now)
        return S3Move(blob: nextBlob, from: object(of: source), to: target, deleteSource: false)
    }

    public mutating func setMetadata(bucket: String, key: String, metadata: [String: String]) throws(GedsError) {
        try UserMetadata.validate(metadata)
        guard buckets[bucket] != nil else { throw GedsError.noSuchBucket(bucket) }
        guard let record = buckets[bucket]!.index.find(key) else { throw GedsError.noSuchObject(bucket, key) }
        buckets[bucket]!.metadata[record] = metadata.isEmpty ? nil : metadata
        buckets[bucket]!.index[record].hasMetadata = !metadata.isEmpty
        events.record(.metadata, bucket: bucket, key: key)
        journal(.setMetadata(ObjectName(bucket: bucket, key: key), metadata))
    }

    // MARK: Copies

    /// Records a copy: of a sealed blob (a cached copy, a relocation) or of one still pending (a relocation
    /// target that took the bytes before the creator seals).
    public mutating func addLocation(blob: BlobID, placement: BlobPlacement) throws(GedsError) {
        guard nodes[placement.node]?.alive == true else { throw GedsError(.noSuchNode, "node \(placement.node) is not registered") }
        if pendingObjects[blob] != nil {
            pendingObjects[blob]!.placements.removeAll { $0.node == placement.node }
            pendingObjects[blob]!.placements.append(placement)
            return
        }
        guard blobs.contains(blob) else { throw GedsError(.noSuchBlob, "blob \(blob.fileName) no longer exists") }
        if let offered = placement.checksum, let known = blobs.checksum(of: blob), offered != known {
            throw GedsError(.checksumMismatch, "checksum mismatch: the copy of blob \(blob.fileName) offered by node \(placement.node) "
                            + "has CRC-32C \(hex32(offered)), the blob's is \(hex32(known))")
        }
        if let offered = placement.checksum, blobs.checksum(of: blob) == nil { journal(.checksum(blob, offered)) }
        blobs.add(placement, to: blob)
        if replicationInFlight[blob]?.node == placement.node { replicationInFlight[blob] = nil }
        let present = blobs.placements(of: blob).count
        if underReplicated.contains(blob), present >= Int(replicated[blob] ?? 1) { underReplicated.remove(blob) }
        // A copy beyond the factor of a replicated blob: a node that was thought dead offers its copies back after
        // they were made again elsewhere, a reader cached one.
        if let wanted = replicated[blob], present > Int(wanted) { overReplicated.insert(blob) }
    }

    public mutating func removeLocation(blob: BlobID, node: UInt32) {
        pendingObjects[blob]?.placements.removeAll { $0.node == node }
        blobs.remove(node: node, from: blob)
        if let wanted = replicated[blob], blobs.placements(of: blob).count < Int(wanted) { underReplicated.insert(blob) }
    }

    // MARK: Internals

    /// Points `key` at the entry's blob; an object already there is replaced (its blob released).
    mutating func bind(bucket: String, key: String, to entry: Entry) {
        let old = unbind(bucket: bucket, key: key)
        let record = buckets[bucket]!.index.insert(key, blob: entry.blob, modified: entry.modified,
                                                   hasMetadata: !entry.metadata.isEmpty)
        if !entry.metadata.isEmpty { buckets[bucket]!.metadata[record] = entry.metadata }
        if let old { release(blob: old.blob) }
    }

    private mutating func unbind(bucket: String, key: String) -> Entry? {
        guard let record = buckets[bucket]!.index.find(key) else { return nil }
        let stored = buckets[bucket]!.index[record]
        let metadata = buckets[bucket]!.metadata.removeValue(forKey: record) ?? [:]
        buckets[bucket]!.index.remove(record)
        return Entry(blob: stored.blob, modified: stored.modified, metadata: metadata)
    }

    /// Drops one key's hold on a blob; the last one withdraws its copies and tells their nodes to delete
    /// them (withdrawn first, so an RDMA key is never handed out for memory that is about to go).
    /// Returns the blob's S3 object when the blob went and still held it: a deletion deletes it too, an overwrite
    /// leaves it to the new blob's upload.
    @discardableResult
    private mutating func release(blob: BlobID) -> S3Name? {
        guard let copies = blobs.release(blob) else { return nil }
        for placement in copies { nodes[placement.node]?.drop.append(blob) }
        if replicated.removeValue(forKey: blob) != nil {
            underReplicated.remove(blob)
            replicationInFlight[blob] = nil
        }
        ownReplicas[blob] = nil
        overReplicated.remove(blob)
        guard let copy = s3Copies.removeValue(forKey: blob) else { return nil }
        let name = S3Name(store: copy.store, key: copy.key)
        guard s3Holders[name] == blob else { return nil }
        s3Holders[name] = nil
        return name
    }

    // MARK: S3 persistence

    /// Sets or removes a bucket's S3 store, creating the bucket when it does not exist. Blobs sealed before keep
    /// the S3 copies they were assigned.
    public mutating func setStorage(bucket: String, _ storage: BucketStorage?) throws(GedsError) {
        _ = try BucketName(bucket)
        if buckets[bucket] == nil {
            buckets[bucket] = Bucket()
            events.record(.bucketCreated, bucket: bucket)
        }
        buckets[bucket]!.storage = storage
        journal(.setStorage(bucket: bucket, storage))
    }

    public func storage(bucket: String) throws(GedsError) -> BucketStorage? {
        guard let state = buckets[bucket] else { throw GedsError.noSuchBucket(bucket) }
        return state.storage
    }

    /// Where the blob's S3 copy goes; an error when its bucket had no S3 store when it was sealed. A node asks this
    /// right before every upload: `s3DeletionPending` while a deletion of that S3 object is still under way.
    public func s3Assignment(blob: BlobID, now: UInt64) throws(GedsError) -> S3Assignment {
        guard blobs.contains(blob) else { throw GedsError(.noSuchBlob, "blob \(blob.fileName) no longer exists") }
        guard let copy = s3Copies[blob] else {
            throw GedsError(.invalidArgument, "blob \(blob.fileName) has no S3 store (its bucket had none when it was sealed)")
        }
        let object = object(of: copy)
        if let lapse = s3Deletions[S3Name(store: copy.store, key: copy.key)], now < lapse {
            throw GedsError(.s3DeletionPending, "\(object.url) is being deleted; upload once that is done")
        }
        return S3Assignment(object: object, persistency: copy.persistency, metadata: metadata(of: blob, copy),
                            stored: copy.stored)
    }

    /// Orders the deletion of the S3 objects of keys that only S3 has (listed by a node deleting a prefix): every
    /// key neither bound in GEDS nor held by a blob. Returns the objects the caller must delete and confirm.
    public mutating func claimS3Deletions(bucket: String, keys: [String], now: UInt64) throws(GedsError) -> [S3ObjectReference] {
        guard let state = buckets[bucket] else { throw GedsError.noSuchBucket(bucket) }
        guard let storage = state.storage else { return [] }
        let names = keys.filter { state.index.find($0) == nil }.map { s3Name(of: storage.object(forKey: $0)) }
        return journaledDeletions(names.filter { s3Holders[$0] == nil }, now: now)
    }

    /// A node uploaded a blob that was deleted meanwhile: its S3 object is to be deleted unless a newer blob holds
    /// it (whose own upload then puts the right bytes there).
    public mutating func abandonS3Upload(_ object: S3ObjectReference, now: UInt64) -> [S3ObjectReference] {
        let name = s3Name(of: object)
        return s3Holders[name] == nil ? journaledDeletions([name], now: now) : []
    }

    /// A node deleted these S3 objects: uploads to them may go ahead.
    public mutating func s3Deleted(_ objects: [S3ObjectReference]) {
        let done = objects.filter { object in
            let store = S3Store(endpoint: object.endpoint, bucket: object.bucket, region: object.region)
            guard let number = s3StoreNumbers[store] else { return false }
            return s3Deletions.removeValue(forKey: S3Name(store: number, key: object.key)) != nil
        }
        if !done.isEmpty { journal(.s3DeletionsDone(done)) }
    }

    /// Deletions ordered by no journaled change of the namespace: journaled themselves, so a restarted MDS still holds
    /// off uploads to those S3 objects and read-through of their keys.
    private mutating func journaledDeletions(_ names: [S3Name], now: UInt64) -> [S3ObjectReference] {
        let objects = orderDeletions(names, now: now)
        if !objects.isEmpty { journal(.s3DeletionsOrdered(objects, now: now)) }
        return objects
    }

    mutating func orderDeletions(_ names: [S3Name], now: UInt64) -> [S3ObjectReference] {
        for name in names { s3Deletions[name] = now + MetadataStore.s3DeletionLapseMilliseconds }
        return names.map { object(of: $0) }
    }

    /// A node put the blob's S3 copy in place: from now on it is a location, and outlives every node.
    public mutating func addS3Copy(blob: BlobID) throws(GedsError) {
        guard blobs.contains(blob), s3Copies[blob] != nil else {
            throw GedsError(.noSuchBlob, "blob \(blob.fileName) no longer exists")
        }
        s3Copies[blob]!.stored = true
        journal(.storedInS3(blob))
    }

    /// Makes `blob` the holder of the S3 object: its S3 copy goes there.
    mutating func assignS3Copy(of object: S3ObjectReference, in bucket: String, to blob: BlobID,
                                       persistency: Persistency, stored: Bool) {
        let name = s3Name(of: object)
        s3Copies[blob] = S3Copy(store: name.store, key: name.key, bucket: bucket, persistency: persistency, stored: stored)
        s3Holders[name] = blob
    }

    mutating func s3Name(of object: S3ObjectReference) -> S3Name {
        let store = S3Store(endpoint: object.endpoint, bucket: object.bucket, region: object.region)
        let number = s3StoreNumbers[store] ?? {
            s3Stores.append(store)
            s3StoreNumbers[store] = UInt32(s3Stores.count - 1)
            return UInt32(s3Stores.count - 1)
        }()
        return S3Name(store: number, key: object.key)
    }

    func object(of copy: S3Copy) -> S3ObjectReference { object(of: S3Name(store: copy.store, key: copy.key)) }

    func object(of name: S3Name) -> S3ObjectReference {
        let store = s3Stores[Int(name.store)]
        return S3ObjectReference(endpoint: store.endpoint, bucket: store.bucket, key: name.key, region: store.region)
    }

    /// The user metadata of the key whose S3 object the blob's copy is (none when no key of the bucket names it now).
    private func metadata(of blob: BlobID, _ copy: S3Copy) -> [String: String] {
        guard let state = buckets[copy.bucket], let key = state.storage?.gedsKey(forS3Key: copy.key),
              let record = state.index.find(key), state.index[record].blob == blob else { return [:] }
        return state.metadata[record] ?? [:]
    }

    /// Read-through: a key found only in the bucket's S3 store becomes an object whose one copy is there. A key
    /// bound meanwhile (by a seal or by another reader's adoption) is kept as it is.
    public mutating func adoptS3Object(bucket: String, key: String, size: UInt64, metadata: [String: String] = [:],
                                       now: UInt64) throws(GedsError) -> ObjectInfo {
        _ = try ObjectKey(key)
        try UserMetadata.validate(metadata)
        guard let state = buckets[bucket] else { throw GedsError.noSuchBucket(bucket) }
        guard let storage = state.storage else {
            throw GedsError(.invalidArgument, "bucket \(bucket) has no S3 store")
        }
        if state.index.find(key) == nil {
            // Deleted or renamed away a moment ago, and its S3 object not gone yet: it must not come back.
            if let lapse = s3Deletions[s3Name(of: storage.object(forKey: key))], now < lapse {
                throw GedsError.noSuchObject(bucket, key)
            }
            nextBlob = nextBlob.next
            blobs.insert(nextBlob, size: size, placements: [])
            assignS3Copy(of: storage.object(forKey: key), in: bucket, to: nextBlob, persistency: storage.persistency, stored: true)
            bind(bucket: bucket, key: key, to: Entry(blob: nextBlob, modified: now, metadata: metadata))
            // Its factor is its bucket's, as for every object there: more than 1, nodes copy it from S3.
            if state.replicas > 1 { setWantedCopies(state.replicas, of: nextBlob) }
            events.record(.created, bucket: bucket, key: key)
            let blob = nextBlob
            journal(.adoptS3Object(ObjectName(bucket: bucket, key: key), blob: blob, size: size, metadata: metadata, now: now))
        }
        return try lookup(bucket: bucket, key: key)
    }
}

extension BucketIndex {
    /// For a key under a prefix of `prefixLength` bytes: the key up to and including the first delimiter
    /// after the prefix, or nil when there is none (or no delimiter).
    static func commonPrefix(of key: UnsafeBufferPointer<UInt8>, after prefixLength: Int, delimiter: [UInt8]) -> [UInt8]? {
        guard !delimiter.isEmpty, key.count >= prefixLength + delimiter.count else { return nil }
        var index = prefixLength
        while index + delimiter.count <= key.count {
            if key[index] == delimiter[0], UnsafeBufferPointer(rebasing: key[index..<(index + delimiter.count)]).elementsEqual(delimiter) {
                return Array(key[..<(index + delimiter.count)])
            }
            index += 1
        }
        return nil
    }
}
