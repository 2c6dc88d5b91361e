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
        /// Blobs this node must delete, handed over with its next heartbeat.
        var drop: [BlobID] = []
    }

    struct Entry {
        var blob: BlobID
        var modified: UInt64
        var metadata: [String: String]
    }

    struct Bucket {
        var entries: [Key: Entry] = [:]
        var keys = SortedKeys()
        /// Objects created but not sealed yet, by key, so that readers can be told "not sealed".
        var pending: [Key: Int] = [:]
    }

    struct Blob {
        var size: UInt64
        var references: UInt32
        var placements: [BlobPlacement]
    }

    struct PendingObject {
        var bucket: String
        var key: Key
        var node: UInt32
        /// Copies placed before the seal (a relocation target that already holds the bytes).
        var placements: [BlobPlacement] = []
    }

    public let leaseMilliseconds: UInt64
    private var nodes: [UInt32: Node] = [:]
    private var nodeByName: [String: UInt32] = [:]
    private var nextNode: UInt32 = 1
    private var buckets: [String: Bucket] = [:]
    private var blobs: [BlobID: Blob] = [:]
    private var pendingObjects: [BlobID: PendingObject] = [:]
    private var nextBlob: BlobID

    /// `epoch` goes into the high bits of blob ids, so ids from an earlier MDS run are never reused.
    public init(leaseMilliseconds: UInt64 = 5000, epoch: UInt32 = UInt32.random(in: 1...0xFFFFF)) {
        self.leaseMilliseconds = leaseMilliseconds
        nextBlob = BlobID(epoch & 0xFFFFF) << 44
    }

    public var objectCount: Int { buckets.values.reduce(0) { $0 + $1.entries.count } }

    // MARK: Nodes

    public mutating func register(_ registration: NodeRegistration, now: UInt64) -> UInt32 {
        if let old = nodeByName[registration.name] { retire(node: old) }
        let index = nextNode
        nextNode += 1
        nodes[index] = Node(registration: registration, lastHeartbeat: now)
        nodeByName[registration.name] = index
        return index
    }

    public mutating func heartbeat(node index: UInt32, blobs: UInt64, bytes: UInt64, now: UInt64) throws(GedsError) -> [BlobID] {
        guard var node = nodes[index], node.alive else {
            throw GedsError(.noSuchNode, "node \(index) is not registered (its lease ended); register again")
        }
        node.lastHeartbeat = now
        node.blobs = blobs
        node.bytes = bytes
        let drop = node.drop
        node.drop = []
        nodes[index] = node
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
        for (blob, pending) in pendingObjects {
            if pending.node == index {
                abort(blob: blob)
            } else {
                pendingObjects[blob]?.placements.removeAll { $0.node == index }
            }
        }
        // Dead nodes are kept (marked) for `listNodes`; only their copies go.
        for blob in Array(blobs.keys) {
            blobs[blob]!.placements.removeAll { $0.node == index }
        }
    }

    public func listNodes() -> [NodeInfo] {
        nodes.values.map { node in
            NodeInfo(name: node.registration.name, hostID: node.registration.hostID, role: node.registration.role,
                     tcp: node.registration.tcp, alive: node.alive, blobs: node.blobs, bytes: node.bytes)
        }.sorted { $0.name < $1.name }
    }

    // MARK: Buckets

    public mutating func createBucket(_ name: String) throws(GedsError) {
        _ = try BucketName(name)
        guard buckets[name] == nil else { throw GedsError(.bucketExists, "bucket already exists: \(name)") }
        buckets[name] = Bucket()
    }

    public mutating func deleteBucket(_ name: String, force: Bool) throws(GedsError) {
        guard let bucket = buckets[name] else { throw GedsError.noSuchBucket(name) }
        if !force, !bucket.entries.isEmpty || !bucket.pending.isEmpty {
            throw GedsError(.bucketNotEmpty, "bucket \(name) is not empty (\(bucket.entries.count) objects); delete them first or force")
        }
        for entry in bucket.entries.values { release(blob: entry.blob) }
        for (blob, pending) in pendingObjects where pending.bucket == name { abort(blob: blob) }
        buckets[name] = nil
    }

    public func listBuckets() -> [String] { buckets.keys.sorted() }

    // MARK: Objects

    public mutating func createObject(bucket: String, key: String, node: UInt32) throws(GedsError) -> BlobID {
        _ = try ObjectKey(key)
        guard buckets[bucket] != nil else { throw GedsError.noSuchBucket(bucket) }
        guard nodes[node]?.alive == true else { throw GedsError(.noSuchNode, "node \(node) is not registered") }
        nextBlob += 1
        pendingObjects[nextBlob] = PendingObject(bucket: bucket, key: Key(key), node: node)
        buckets[bucket]!.pending[Key(key), default: 0] += 1
        return nextBlob
    }

    /// Binds the key to the new blob; an older object under the key is replaced in the same step. The
    /// copies are the creator's (`placement`, unless its node is 0: the creator keeps none) and any placed
    /// before the seal by a relocation target.
    public mutating func seal(blob: BlobID, size: UInt64, metadata: [String: String], placement: BlobPlacement,
                              now: UInt64) throws(GedsError) {
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
        pendingObjects[blob]?.placements = []
        abort(blob: blob)
        blobs[blob] = Blob(size: size, references: 1, placements: pending.placements)
        bind(bucket: pending.bucket, key: pending.key, to: Entry(blob: blob, modified: now, metadata: metadata))
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
        guard let entry = bucketState.entries[Key(key)] else {
            if bucketState.pending[Key(key)] != nil {
                throw GedsError(.objectNotSealed, "object \(bucket)/\(key) is not sealed yet")
            }
            throw GedsError.noSuchObject(bucket, key)
        }
        let blob = blobs[entry.blob]!
        return ObjectInfo(bucket: bucket, key: key, blob: entry.blob, size: blob.size, sealed: true,
                          modified: entry.modified, metadata: entry.metadata,
                          locations: blob.placements.compactMap { location(of: $0, blob: entry.blob) })
    }

    private func location(of placement: BlobPlacement, blob: BlobID) -> Location? {
        guard let node = nodes[placement.node], node.alive else { return nil }
        let registration = node.registration
        return Location(node: registration.name, hostID: registration.hostID, tier: placement.tier,
                        tcp: registration.tcp, rdma: nil,
                        path: registration.tier0Directory + "/" + blob.fileName)
    }

    public func list(bucket: String, prefix: String, delimiter: String, startAfter: String,
                     maxKeys: UInt32) throws(GedsError) -> ListPage {
        guard let state = buckets[bucket] else { throw GedsError.noSuchBucket(bucket) }
        let limit = Int(min(max(maxKeys, 1), WireLimits.maximumListKeys))
        var page = ListPage(objects: [], commonPrefixes: [], nextStartAfter: nil)
        var lastReturned = ""
        let prefixKey = Key(prefix)
        let startKey = Key(startAfter)
        state.keys.walk(from: max(prefixKey, startKey)) { key in
            if key == startKey { return .next }
            guard key.hasPrefix(prefixKey) else { return .stop }
            if let common = key.string.commonPrefix(after: prefix, delimiter: delimiter) {
                let commonKey = Key(common)
                if page.objects.count + page.commonPrefixes.count == limit {
                    page.nextStartAfter = lastReturned
                    return .stop
                }
                page.commonPrefixes.append(common)
                // The next page starts after the last key rolled into this prefix, so it is not repeated.
                lastReturned = state.keys.lastKey(withPrefix: commonKey)?.string ?? common
                return .skipPrefix(commonKey)
            }
            if page.objects.count + page.commonPrefixes.count == limit {
                page.nextStartAfter = lastReturned
                return .stop
            }
            let entry = state.entries[key]!
            page.objects.append(ListEntry(key: key.string, size: blobs[entry.blob]!.size, modified: entry.modified))
            lastReturned = key.string
            return .next
        }
        return page
    }

    public mutating func delete(bucket: String, key: String) throws(GedsError) {
        guard buckets[bucket] != nil else { throw GedsError.noSuchBucket(bucket) }
        guard let entry = unbind(bucket: bucket, key: key) else { throw GedsError.noSuchObject(bucket, key) }
        release(blob: entry.blob)
    }

    public mutating func delete(bucket: String, prefix: String) throws(GedsError) -> UInt64 {
        guard let state = buckets[bucket] else { throw GedsError.noSuchBucket(bucket) }
        var doomed: [String] = []
        let prefixKey = Key(prefix)
        state.keys.walk(from: prefixKey) { key in
            guard key.hasPrefix(prefixKey) else { return .stop }
            let key = key.string
            doomed.append(key)
            return .next
        }
        for key in doomed {
            if let entry = unbind(bucket: bucket, key: key) { release(blob: entry.blob) }
        }
        return UInt64(doomed.count)
    }

    /// Moves a key; an object already at the destination is replaced. No bytes move.
    public mutating func rename(from: (bucket: String, key: String), to: (bucket: String, key: String),
                                now: UInt64) throws(GedsError) {
        _ = try ObjectKey(to.key)
        guard buckets[from.bucket] != nil else { throw GedsError.noSuchBucket(from.bucket) }
        guard buckets[to.bucket] != nil else { throw GedsError.noSuchBucket(to.bucket) }
        guard buckets[from.bucket]!.entries[Key(from.key)] != nil else { throw GedsError.noSuchObject(from.bucket, from.key) }
        if from.bucket == to.bucket, Key(from.key) == Key(to.key) { return }
        var entry = unbind(bucket: from.bucket, key: from.key)!
        entry.modified = now
        bind(bucket: to.bucket, key: to.key, to: entry)
    }

    /// Adds a key for the same sealed bytes (they are immutable, so sharing them is safe).
    public mutating func copy(from: (bucket: String, key: String), to: (bucket: String, key: String),
                              now: UInt64) throws(GedsError) {
        _ = try ObjectKey(to.key)
        guard buckets[from.bucket] != nil else { throw GedsError.noSuchBucket(from.bucket) }
        guard buckets[to.bucket] != nil else { throw GedsError.noSuchBucket(to.bucket) }
        guard var entry = buckets[from.bucket]!.entries[Key(from.key)] else { throw GedsError.noSuchObject(from.bucket, from.key) }
        if from.bucket == to.bucket, Key(from.key) == Key(to.key) { return }
        entry.modified = now
        blobs[entry.blob]!.references += 1
        bind(bucket: to.bucket, key: to.key, to: entry)
    }

    public mutating func setMetadata(bucket: String, key: String, metadata: [String: String]) throws(GedsError) {
        try UserMetadata.validate(metadata)
        guard buckets[bucket] != nil else { throw GedsError.noSuchBucket(bucket) }
        guard buckets[bucket]!.entries[Key(key)] != nil else { throw GedsError.noSuchObject(bucket, key) }
        buckets[bucket]!.entries[Key(key)]!.metadata = metadata
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
        guard blobs[blob] != nil else { throw GedsError(.noSuchBlob, "blob \(blob.fileName) no longer exists") }
        blobs[blob]!.placements.removeAll { $0.node == placement.node }
        blobs[blob]!.placements.append(placement)
    }

    public mutating func removeLocation(blob: BlobID, node: UInt32) {
        pendingObjects[blob]?.placements.removeAll { $0.node == node }
        blobs[blob]?.placements.removeAll { $0.node == node }
    }

    // MARK: Internals

    private mutating func bind(bucket: String, key: String, to entry: Entry) {
        bind(bucket: bucket, key: Key(key), to: entry)
    }

    private mutating func bind(bucket: String, key: Key, to entry: Entry) {
        if let old = buckets[bucket]!.entries.updateValue(entry, forKey: key) {
            release(blob: old.blob)
        } else {
            buckets[bucket]!.keys.insert(key)
        }
    }

    private mutating func unbind(bucket: String, key: String) -> Entry? {
        guard let entry = buckets[bucket]!.entries.removeValue(forKey: Key(key)) else { return nil }
        buckets[bucket]!.keys.remove(Key(key))
        return entry
    }

    /// Drops one key's hold on a blob; the last one withdraws its copies and tells their nodes to delete
    /// them (withdrawn first, so an RDMA key is never handed out for memory that is about to go).
    private mutating func release(blob: BlobID) {
        guard var state = blobs[blob] else { return }
        state.references -= 1
        if state.references > 0 {
            blobs[blob] = state
            return
        }
        blobs[blob] = nil
        for placement in state.placements { nodes[placement.node]?.drop.append(blob) }
    }
}

extension String {
    /// For a key under `prefix`: the key up to and including the first `delimiter` after the prefix.
    func commonPrefix(after prefix: String, delimiter: String) -> String? {
        guard !delimiter.isEmpty else { return nil }
        let bytes = Array(utf8)
        let needle = Array(delimiter.utf8)
        var index = prefix.utf8.count
        while index + needle.count <= bytes.count {
            if bytes[index] == needle[0], Array(bytes[index..<(index + needle.count)]) == needle {
                return String(decoding: bytes[..<(index + needle.count)], as: UTF8.self)
            }
            index += 1
        }
        return nil
    }
}
