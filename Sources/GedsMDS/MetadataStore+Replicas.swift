import GedsCore
import GedsWire

/// Replicas: the replication factor of buckets and blobs, where a blob's missing copies go (each on a host that holds
/// none, the node with the most room in tier 0 first), and re-replication: blobs that fell below their factor (a node
/// died or left) are copied by nodes that the MDS asks with their heartbeats, a few at a time; blobs with more copies
/// than they want (a factor lowered, a node thought dead came back) have the extra ones dropped, a few at a time.
extension MetadataStore {
    /// Sets the bucket's replication factor: of the objects sealed in it from now on, and of those already in it that
    /// have no factor of their own (an object created with `replicas` keeps its own). Those now short of copies are
    /// queued for re-replication, those with more have the extra copies trimmed (`trimExcessCopies`). One journal
    /// record: its replay walks the bucket the same way. Returns how many objects follow the bucket's factor.
    @discardableResult
    public mutating func setReplicas(bucket: String, _ replicas: UInt8) throws(GedsError) -> Int {
        try Replicas.check(Int(replicas))
        guard buckets[bucket] != nil else { throw GedsError.noSuchBucket(bucket) }
        let following = applyReplicas(replicas, toBucket: bucket, queue: true)
        journal(.setReplicas(bucket: bucket, replicas))
        return following
    }

    /// `queue` is false on replay: the copies are not known until nodes offer them back (see `dropLostObjects`).
    @discardableResult
    mutating func applyReplicas(_ replicas: UInt8, toBucket name: String, queue: Bool) -> Int {
        buckets[name]!.replicas = replicas
        let index = buckets[name]!.index
        var following: [BlobID] = []
        index.walk(from: []) { record, _ in
            if ownReplicas[index[record].blob] == nil { following.append(index[record].blob) }
            return .next
        }
        for blob in following { setWantedCopies(replicas, of: blob, queue: queue) }
        return following.count
    }

    public func replicas(bucket: String) throws(GedsError) -> UInt8 {
        guard let state = buckets[bucket] else { throw GedsError.noSuchBucket(bucket) }
        return state.replicas
    }

    /// How many copies the blob wants: a pending object's own factor, else its bucket's; a sealed blob's as sealed.
    func wantedCopies(of blob: BlobID) -> UInt8 {
        if let pending = pendingObjects[blob] {
            return pending.replicas != 0 ? pending.replicas : buckets[pending.bucket]?.replicas ?? 1
        }
        return replicated[blob] ?? 1
    }

    /// Records a sealed blob's factor; with `queue`, one with fewer copies is queued for re-replication, one with more
    /// for trimming.
    mutating func setWantedCopies(_ wanted: UInt8, of blob: BlobID, queue: Bool = true) {
        guard blobs.contains(blob) else { return }
        replicated[blob] = wanted > 1 ? wanted : nil
        guard queue else { return }
        let present = blobs.placements(of: blob).count
        if present < Int(wanted) {
            underReplicated.insert(blob)
        } else {
            underReplicated.remove(blob)
            // A copy still being made will be one too many.
            if present > Int(wanted) || replicationInFlight[blob] != nil { overReplicated.insert(blob) }
        }
    }

    /// The nodes that should take the copies the blob lacks (see `Request.placeCopies`). A drain (`leaving`) always
    /// gets one, since its own copy goes.
    public func placeCopies(blob: BlobID, holder: UInt32, leaving: UInt32) throws(GedsError) -> [NodeInfo] {
        let placements: [BlobPlacement]
        var name: String
        if let pending = pendingObjects[blob] {
            placements = pending.placements
            name = "\(pending.bucket)/\(pending.key.string)"
        } else {
            guard blobs.contains(blob) else { throw GedsError(.noSuchBlob, "blob \(blob.fileName) no longer exists") }
            placements = blobs.placements(of: blob)
            name = "blob \(blob.fileName)"
        }
        var holders = Set(placements.lazy.map(\.node).filter { $0 != leaving && self.nodes[$0]?.alive == true })
        if holder != 0 { holders.insert(holder) }
        let wanted = Int(wantedCopies(of: blob))
        let lacking = max(wanted - holders.count, leaving != 0 ? 1 : 0)
        guard lacking > 0 else { return [] }
        let candidates = replicaCandidates(holders: holders, leaving: leaving)
        guard candidates.count >= lacking else {
            let hosts = Set(holders.compactMap { nodes[$0]?.registration.hostID }).count + candidates.count
            name = "\(name) wants \(wanted) cop\(wanted == 1 ? "y" : "ies") on distinct hosts"
            throw GedsError(.noSuchNode, "\(name), but only \(hosts) host(s) have a live gedsd to hold one (not draining); "
                            + "start a gedsd on another host (--host-id), or ask for fewer replicas")
        }
        return candidates.prefix(lacking).map { nodes[$0]!.info }
    }

    /// Live gedsd nodes, not draining nor `leaving`, on hosts where none of `holders` is: the best of each such host,
    /// best first. Best: the most room in tier 0 (free space, as heartbeats report it), then the fewest bytes held.
    func replicaCandidates(holders: Set<UInt32>, leaving: UInt32) -> [UInt32] {
        let takenHosts = Set(holders.compactMap { nodes[$0]?.registration.hostID })
        var bestOfHost: [String: UInt32] = [:]
        func better(_ lhs: UInt32, _ rhs: UInt32) -> Bool {
            let (left, right) = (nodes[lhs]!, nodes[rhs]!)
            return (UInt64.max - left.room, left.bytes, lhs) < (UInt64.max - right.room, right.bytes, rhs)
        }
        for (index, node) in nodes where node.alive && node.registration.role == .daemon && !node.draining && index != leaving
            && !holders.contains(index) && !takenHosts.contains(node.registration.hostID) {
            let host = node.registration.hostID
            if let current = bestOfHost[host], better(current, index) { continue }
            bestOfHost[host] = index
        }
        return bestOfHost.values.sorted(by: better)
    }

    /// Queues every replicated blob with fewer copies than it wants (after a node's copies were withdrawn).
    mutating func findUnderReplicated() {
        for (blob, wanted) in replicated where !underReplicated.contains(blob) && blobs.placements(of: blob).count < Int(wanted) {
            underReplicated.insert(blob)
        }
    }

    /// The copies the node `index` is asked to make with this heartbeat: of queued blobs for which it is the best
    /// candidate, from a surviving copy, up to `replicationOrdersPerNode` in flight per node.
    public mutating func replicationOrders(for index: UInt32, now: UInt64) -> [ReplicationOrder] {
        guard !underReplicated.isEmpty, let node = nodes[index], node.alive, node.registration.role == .daemon,
              !node.draining else { return [] }
        var budget = MetadataStore.replicationOrdersPerNode
            - replicationInFlight.values.lazy.filter { $0.node == index && now < $0.lapse }.count
        var orders: [ReplicationOrder] = []
        var settled: [BlobID] = []
        for blob in underReplicated.prefix(MetadataStore.replicationScanPerHeartbeat) where budget > 0 {
            if let order = replicationInFlight[blob], now < order.lapse { continue }
            let placements = blobs.placements(of: blob)
            guard placements.count < Int(replicated[blob] ?? 1) else {
                settled.append(blob)
                continue
            }
            let storedInS3 = s3Copies[blob].flatMap { $0.stored ? Location.s3(object(of: $0)) : nil }
            guard let source = placements.compactMap({ location(of: $0, blob: blob) }).first ?? storedInS3,
                  replicaCandidates(holders: Set(placements.map(\.node)), leaving: 0).first == index else { continue }
            orders.append(ReplicationOrder(blob: blob, size: blobs.size(of: blob) ?? 0, source: source))
            replicationInFlight[blob] = ReplicationInFlight(node: index, lapse: now + MetadataStore.replicationOrderLapseMilliseconds)
            budget -= 1
        }
        for blob in settled { underReplicated.remove(blob) }
        return orders
    }
}

extension MetadataStore {
    /// Trimming's rate limit: copies ordered dropped per heartbeat (of any node), over all blobs.
    public static let trimOrdersPerHeartbeat = 64

    /// The copy to drop first of a blob with more copies on gedsd nodes than it wants, or nil when none is to go now:
    /// first one on a host that holds another copy, then the one on the fullest node (least room, most bytes). Never the
    /// only tier-0 copy (the one readers map), never an S3 copy (not a node's), never below the factor; none while a
    /// copy is being made (re-replication) or a holder drains (the drain settles where its copies go). Copies on a
    /// task's own node are caches that go with the task: neither dropped nor counted here.
    func excessCopy(of blob: BlobID) -> BlobPlacement? {
        let all = blobs.placements(of: blob)
        let placements = all.filter { nodes[$0.node]?.registration.role == .daemon }
        guard placements.count > Int(replicated[blob] ?? 1), replicationInFlight[blob] == nil,
              all.allSatisfy({ nodes[$0.node]?.alive == true && nodes[$0.node]?.draining == false }) else { return nil }
        let hosts = placements.map { nodes[$0.node]!.registration.hostID }
        let tier0Copies = placements.count { $0.tier == .tier0 }
        func order(_ index: Int) -> (Int, UInt64, UInt64, UInt32) {
            let node = nodes[placements[index].node]!
            return (hosts.count { $0 == hosts[index] } > 1 ? 0 : 1, node.room, UInt64.max - node.bytes, placements[index].node)
        }
        return placements.indices.filter { placements[$0].tier != .tier0 || tier0Copies > 1 }
            .min { order($0) < order($1) }.map { placements[$0] }
    }

    /// Orders extra copies dropped, a few per heartbeat: each is withdrawn here first (readers go to the other copies)
    /// and its node deletes it when its next heartbeat brings the drop.
    mutating func trimExcessCopies(now: UInt64) {
        var budget = MetadataStore.trimOrdersPerHeartbeat
        var settled: [BlobID] = []
        for blob in overReplicated.prefix(MetadataStore.replicationScanPerHeartbeat) where budget > 0 {
            if let order = replicationInFlight[blob], now >= order.lapse { replicationInFlight[blob] = nil }
            while budget > 0, let copy = excessCopy(of: blob) {
                blobs.remove(node: copy.node, from: blob)
                nodes[copy.node]!.drop.append(blob)
                budget -= 1
            }
            if budget > 0, replicationInFlight[blob] == nil,
               blobs.placements(of: blob).allSatisfy({ nodes[$0.node]?.draining == false }) {
                settled.append(blob)  // else tried again once the copy is made or the drain is over
            }
        }
        for blob in settled { overReplicated.remove(blob) }
    }
}
