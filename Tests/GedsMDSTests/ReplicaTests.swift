import GedsCore
@testable import GedsMDS
import GedsTestSupport
import GedsWire
import NIOCore
import Testing

/// Replicas at the MDS: replication factors, where missing copies go (distinct hosts, fewest bytes first), and
/// re-replication after a node dies.
@Suite struct ReplicaTests {
    /// A store with an embedded writer and gedsd nodes on hosts A (two), B and C, holding different amounts.
    struct Cluster {
        var f = Fixture()
        var a1: UInt32 = 0, a2: UInt32 = 0, b: UInt32 = 0, c: UInt32 = 0

        /// `journaling`: from the start, so the journal holds the bucket too.
        init(journaling: Bool = false) throws {
            f.store.journaling = journaling
            a1 = daemon("a1", host: "A", bytes: 300)
            a2 = daemon("a2", host: "A", bytes: 100)
            b = daemon("b", host: "B", bytes: 500)
            c = daemon("c", host: "C", bytes: 200)
            try f.store.createBucket("bkt")
        }

        mutating func daemon(_ name: String, host: String, bytes: UInt64) -> UInt32 {
            let index = f.store.register(NodeRegistration(name: name, hostID: host, role: .daemon,
                                                          tcp: Endpoint(host: "10.0.0.1", port: 5000 + Int(bytes)),
                                                          tier0Directory: "/dev/shm/\(name)"), now: 0)
            _ = try? f.store.heartbeat(node: index, blobs: 1, bytes: bytes, now: 0)
            return index
        }

        func names(_ nodes: [NodeInfo]) -> [String] { nodes.map(\.name) }

        /// An object written by the embedded node and handed to `holder` before its seal, with `extra` copies pulled
        /// by other nodes, then sealed.
        mutating func seal(_ key: String, replicas: UInt8 = 0, holder: UInt32, extra: [UInt32] = []) throws -> BlobID {
            let blob = try f.store.createObject(bucket: "bkt", key: key, node: f.n1, replicas: replicas)
            for node in [holder] + extra { try f.store.addLocation(blob: blob, placement: BlobPlacement(node: node, tier: .tier0)) }
            try f.store.seal(blob: blob, size: 64, metadata: [:], placement: BlobPlacement(node: 0, tier: .tier0), now: 1)
            return blob
        }
    }

    @Test func aBucketKeepsItsFactorAndBadOnesAreRefused() throws {
        var cluster = try Cluster()
        #expect(try cluster.f.store.replicas(bucket: "bkt") == 1)
        try cluster.f.store.setReplicas(bucket: "bkt", 3)
        #expect(try cluster.f.store.replicas(bucket: "bkt") == 3)
        #expect(gedsError { try cluster.f.store.setReplicas(bucket: "bkt", 0) }?.code == .invalidArgument)
        #expect(gedsError { try cluster.f.store.setReplicas(bucket: "bkt", 17) }?.code == .invalidArgument)
        #expect(gedsError { try cluster.f.store.setReplicas(bucket: "nope", 2) }?.code == .noSuchBucket)
        #expect(gedsError { _ = try cluster.f.store.createObject(bucket: "bkt", key: "k", node: cluster.f.n1, replicas: 17) }?.code
                == .invalidArgument)
        #expect(try cluster.f.store.replicas(bucket: "bkt") == 3)
    }

    /// The copies a pending object lacks go to one node per host without a copy, fewest bytes first; the bucket's
    /// factor applies unless the object has its own; too few hosts is a clear error.
    @Test func missingCopiesGoToDistinctHostsFewestBytesFirst() throws {
        var cluster = try Cluster()
        try cluster.f.store.setReplicas(bucket: "bkt", 3)
        let blob = try cluster.f.store.createObject(bucket: "bkt", key: "k", node: cluster.f.n1)
        try cluster.f.store.addLocation(blob: blob, placement: BlobPlacement(node: cluster.a1, tier: .tier0))
        // a1 holds one (host A), so B and C take the others, C first (fewer bytes); a2 shares a1's host.
        #expect(cluster.names(try cluster.f.store.placeCopies(blob: blob, holder: 0, leaving: 0)) == ["c", "b"])
        // The writer keeping its own copy (host-of-n1) counts as one.
        #expect(cluster.names(try cluster.f.store.placeCopies(blob: blob, holder: cluster.f.n1, leaving: 0)) == ["c"])

        let own = try cluster.f.store.createObject(bucket: "bkt", key: "own", node: cluster.f.n1, replicas: 2)
        #expect(cluster.names(try cluster.f.store.placeCopies(blob: own, holder: 0, leaving: 0)) == ["a2", "c"])
        // Five copies on distinct hosts, with three hosts of gedsd nodes (plus the writer's): refused, saying why.
        let many = try cluster.f.store.createObject(bucket: "bkt", key: "many", node: cluster.f.n1, replicas: 5)
        let error = gedsError { _ = try cluster.f.store.placeCopies(blob: many, holder: cluster.f.n1, leaving: 0) }
        #expect(error?.code == .noSuchNode)
        #expect(error?.message.contains("bkt/many wants 5 copies on distinct hosts, but only 4 host(s)") == true, "\(error?.message ?? "")")
        // A draining node takes none.
        try cluster.f.store.drain(nodeNamed: "c")
        #expect(cluster.names(try cluster.f.store.placeCopies(blob: own, holder: 0, leaving: 0)) == ["a2", "b"])
    }

    /// Free space, as heartbeats report it, comes before the bytes held: a node with little room left takes copies last.
    @Test func copiesGoWhereThereIsRoomFirst() throws {
        var cluster = try Cluster()
        _ = try cluster.f.store.heartbeat(node: cluster.c, blobs: 1, bytes: 200, room: 1 << 20, now: 1)
        _ = try cluster.f.store.heartbeat(node: cluster.b, blobs: 1, bytes: 500, room: 1 << 30, now: 1)
        _ = try cluster.f.store.heartbeat(node: cluster.a2, blobs: 1, bytes: 100, room: 1 << 30, now: 1)
        let blob = try cluster.f.store.createObject(bucket: "bkt", key: "k", node: cluster.f.n1, replicas: 3)
        // a1 reports no room (unknown: as much as any), so host A's best is a1 now, then b (more room than c).
        #expect(cluster.names(try cluster.f.store.placeCopies(blob: blob, holder: 0, leaving: 0)) == ["a1", "b", "c"])
    }

    @Test func aSealedBlobKnowsItsFactorAndADrainGetsAHostWithoutACopy() throws {
        var cluster = try Cluster()
        let blob = try cluster.seal("k", replicas: 2, holder: cluster.b, extra: [cluster.a1])
        let info = try cluster.f.store.lookup(bucket: "bkt", key: "k")
        #expect(info.wantedCopies == 2 && info.presentCopies == 2)
        #expect(try cluster.f.store.lookup(bucket: "bkt", key: "k").locations.map(\.holder) == ["b", "a1"])
        // Draining a1: its copy must not go to a2 (host A holds none after it leaves, but B does): C or A's a2.
        // Host A loses its copy with a1, so a2 (100 bytes) is the best host without one.
        #expect(cluster.names(try cluster.f.store.placeCopies(blob: blob, holder: 0, leaving: cluster.a1)) == ["a2"])
        // Draining b: host A holds a1's copy, so the copy goes to C.
        #expect(cluster.names(try cluster.f.store.placeCopies(blob: blob, holder: 0, leaving: cluster.b)) == ["c"])
        // An unreplicated object has one copy, wanted 1.
        _ = try cluster.seal("single", holder: cluster.b)
        let single = try cluster.f.store.lookup(bucket: "bkt", key: "single")
        #expect(single.wantedCopies == 1 && single.presentCopies == 1)
    }

    /// A node's death leaves replicated blobs short: the best node for each is asked to copy it from a survivor,
    /// a few at a time, and once published nothing more is ordered.
    @Test func aDeadNodesCopiesAreMadeAgainRateLimited() throws {
        var cluster = try Cluster()
        let count = MetadataStore.replicationOrdersPerNode + 3
        var blobs: [BlobID] = []
        for index in 0..<count { blobs.append(try cluster.seal("k\(index)", replicas: 2, holder: cluster.b, extra: [cluster.a1])) }
        let unreplicated = try cluster.seal("single", holder: cluster.a1)
        // Nothing is short: no orders.
        #expect(cluster.f.store.replicationOrders(for: cluster.c, now: 1).isEmpty)

        // a1 dies (its lease runs out; the others beat on).
        for node in [cluster.f.n1, cluster.a2, cluster.b, cluster.c] { _ = try cluster.f.store.heartbeat(node: node, blobs: 0, bytes: 0, now: 2000) }
        #expect(cluster.f.store.expireLeases(now: 2500) == ["a1"])
        #expect(try cluster.f.store.lookup(bucket: "bkt", key: "k0").presentCopies == 1)
        // Host B holds the survivor; a2 and c hold 0 bytes now, a2 has the lower number: it is asked, c and b are not.
        #expect(cluster.f.store.replicationOrders(for: cluster.c, now: 2600).isEmpty)
        #expect(cluster.f.store.replicationOrders(for: cluster.b, now: 2600).isEmpty)
        let first = cluster.f.store.replicationOrders(for: cluster.a2, now: 2600)
        #expect(first.count == MetadataStore.replicationOrdersPerNode)
        #expect(first.allSatisfy { $0.source.holder == "b" && $0.size == 64 && blobs.contains($0.blob) })
        #expect(!first.contains { $0.blob == unreplicated })
        // In flight: none more until some are published.
        #expect(cluster.f.store.replicationOrders(for: cluster.a2, now: 2700).isEmpty)
        for order in first { try cluster.f.store.addLocation(blob: order.blob, placement: BlobPlacement(node: cluster.a2, tier: .tier0)) }
        let second = cluster.f.store.replicationOrders(for: cluster.a2, now: 2800)
        #expect(second.count == 3)
        #expect(Set((first + second).map(\.blob)) == Set(blobs))
        for order in second { try cluster.f.store.addLocation(blob: order.blob, placement: BlobPlacement(node: cluster.a2, tier: .tier0)) }
        #expect(cluster.f.store.replicationOrders(for: cluster.a2, now: 2900).isEmpty)
        #expect(cluster.f.store.underReplicated.isEmpty && cluster.f.store.replicationInFlight.isEmpty)
        for index in 0..<count {
            let info = try cluster.f.store.lookup(bucket: "bkt", key: "k\(index)")
            #expect(Set(info.locations.map(\.holder)) == ["b", "a2"])
        }
    }

    /// An order not carried out lapses and is given again; a deleted blob is no longer ordered.
    @Test func aLapsedOrderIsGivenAgainAndDeletedBlobsAreForgotten() throws {
        var cluster = try Cluster()
        let kept = try cluster.seal("kept", replicas: 3, holder: cluster.b)
        let deleted = try cluster.seal("deleted", replicas: 3, holder: cluster.b)
        let orders = cluster.f.store.replicationOrders(for: cluster.a2, now: 10)
        #expect(Set(orders.map(\.blob)) == [kept, deleted])
        #expect(cluster.f.store.replicationOrders(for: cluster.a2, now: 20).isEmpty)
        try cluster.f.store.delete(bucket: "bkt", key: "deleted", now: 30)
        let again = cluster.f.store.replicationOrders(for: cluster.a2, now: 10 + MetadataStore.replicationOrderLapseMilliseconds + 1)
        #expect(again.map(\.blob) == [kept])
    }

    /// The factors survive a restart: journal replay and snapshot.
    @Test func factorsAreJournaledAndSnapshotted() throws {
        var cluster = try Cluster(journaling: true)
        try cluster.f.store.setReplicas(bucket: "bkt", 2)
        _ = try cluster.seal("two", holder: cluster.b, extra: [cluster.c])
        _ = try cluster.seal("three", replicas: 3, holder: cluster.b)
        let (replayed, restored) = try restarted(from: cluster.f.store.takeUnjournaled())
        for store in [replayed, restored] {
            #expect(try store.replicas(bucket: "bkt") == 2)
            #expect(try store.lookup(bucket: "bkt", key: "two").wantedCopies == 2)
            #expect(try store.lookup(bucket: "bkt", key: "three").wantedCopies == 3)
        }
    }

    /// A bucket's factor applies to the objects already in it, except those created with their own: raised, the short
    /// ones are queued for re-replication; lowered, their extra copies are withdrawn and dropped by their nodes.
    @Test func aBucketsFactorAppliesToItsObjectsButNotToOwnFactors() throws {
        var cluster = try Cluster()
        let follows = try cluster.seal("follows", holder: cluster.b)
        _ = try cluster.seal("own1", replicas: 1, holder: cluster.b)
        _ = try cluster.seal("own3", replicas: 3, holder: cluster.b, extra: [cluster.a2, cluster.c])
        #expect(try cluster.f.store.setReplicas(bucket: "bkt", 2) == 1)
        #expect(try cluster.f.store.lookup(bucket: "bkt", key: "follows").wantedCopies == 2)
        #expect(try cluster.f.store.lookup(bucket: "bkt", key: "own1").wantedCopies == 1)
        #expect(try cluster.f.store.lookup(bucket: "bkt", key: "own3").wantedCopies == 3)
        #expect(cluster.f.store.underReplicated == [follows])
        let orders = cluster.f.store.replicationOrders(for: cluster.a2, now: 1)
        #expect(orders.map(\.blob) == [follows] && orders.first?.source.holder == "b")
        try cluster.f.store.addLocation(blob: follows, placement: BlobPlacement(node: cluster.a2, tier: .tier0))
        #expect(cluster.f.store.underReplicated.isEmpty && cluster.f.store.overReplicated.isEmpty)

        // Lowered: b (500 bytes) is fuller than a2 (100), so b's copy goes; own3 keeps its three.
        try cluster.f.store.setReplicas(bucket: "bkt", 1)
        #expect(cluster.f.store.overReplicated == [follows])
        #expect(try cluster.f.store.heartbeat(node: cluster.c, blobs: 1, bytes: 200, now: 2).isEmpty)
        #expect(try cluster.f.store.lookup(bucket: "bkt", key: "follows").locations.map(\.holder) == ["a2"])
        #expect(try cluster.f.store.heartbeat(node: cluster.b, blobs: 1, bytes: 500, now: 2) == [follows])
        #expect(try cluster.f.store.lookup(bucket: "bkt", key: "own3").presentCopies == 3)
        #expect(cluster.f.store.overReplicated.isEmpty)

        // Lowered while a copy is being made: that copy is one too many once it arrives, and goes then.
        try cluster.f.store.setReplicas(bucket: "bkt", 2)
        #expect(cluster.f.store.replicationOrders(for: cluster.c, now: 3).map(\.blob) == [follows])
        try cluster.f.store.setReplicas(bucket: "bkt", 1)
        #expect(try cluster.f.store.heartbeat(node: cluster.b, blobs: 0, bytes: 0, now: 4).isEmpty)
        try cluster.f.store.addLocation(blob: follows, placement: BlobPlacement(node: cluster.c, tier: .tier0))
        _ = try cluster.f.store.heartbeat(node: cluster.b, blobs: 0, bytes: 0, now: 5)
        #expect(cluster.f.store.blobs.placements(of: follows).count == 1)
        #expect(cluster.f.store.overReplicated.isEmpty)
    }

    /// An object read through from S3 in a bucket with a factor above 1 takes it: nodes copy it from S3.
    @Test func readThroughObjectsTakeTheBucketsFactor() throws {
        var cluster = try Cluster()
        let storage = BucketStorage(endpoint: "http://127.0.0.1:4569", bucket: "s3b", prefix: "", region: "eu-west-1",
                                    persistency: .writeThrough)
        try cluster.f.store.setStorage(bucket: "bkt", storage)
        try cluster.f.store.setReplicas(bucket: "bkt", 2)
        let info = try cluster.f.store.adoptS3Object(bucket: "bkt", key: "in-s3", size: 64, now: 1)
        #expect(info.wantedCopies == 2 && info.presentCopies == 0)
        let orders = cluster.f.store.replicationOrders(for: cluster.a2, now: 1)
        #expect(orders.map(\.blob) == [info.blob] && orders.first?.source.s3Object == storage.object(forKey: "in-s3"))
    }

    /// Which extra copy goes: one on a host holding another copy first, then the fullest node's, never the only
    /// tier-0 copy; a few per heartbeat; none while a holder drains.
    @Test func excessCopiesGoFromSharedHostsAndFullNodesFirstRateLimited() throws {
        var cluster = try Cluster()
        // Hosts A (a1, a2), B: one of A's goes, a1 (300 bytes) before a2 (100).
        let shared = try cluster.seal("shared", replicas: 2, holder: cluster.b, extra: [cluster.a1, cluster.a2])
        #expect(cluster.f.store.excessCopy(of: shared)?.node == cluster.a1)
        // Any node's heartbeat trims: a1's copy is withdrawn now, and a1 is told to drop it with its own heartbeat.
        _ = try cluster.f.store.heartbeat(node: cluster.c, blobs: 1, bytes: 200, room: 1 << 20, now: 1)
        #expect(Set(cluster.f.store.blobs.placements(of: shared).map(\.node)) == [cluster.b, cluster.a2])
        #expect(cluster.f.store.nodes[cluster.a1]?.drop == [shared])
        // c has the least room, but its copy is the only one in tier 0: b's (tier 1) goes.
        _ = try cluster.f.store.heartbeat(node: cluster.b, blobs: 1, bytes: 500, room: 1 << 30, now: 1)
        let tiers = try cluster.f.store.createObject(bucket: "bkt", key: "tiers", node: cluster.f.n1, replicas: 1)
        try cluster.f.store.addLocation(blob: tiers, placement: BlobPlacement(node: cluster.b, tier: .tier1))
        try cluster.f.store.addLocation(blob: tiers, placement: BlobPlacement(node: cluster.c, tier: .tier0))
        try cluster.f.store.seal(blob: tiers, size: 64, metadata: [:], placement: BlobPlacement(node: 0, tier: .tier0), now: 1)
        #expect(cluster.f.store.excessCopy(of: tiers)?.node == cluster.b)
        // Both in tier 0: c, the fullest, goes.
        try cluster.f.store.addLocation(blob: tiers, placement: BlobPlacement(node: cluster.b, tier: .tier0))
        #expect(cluster.f.store.excessCopy(of: tiers)?.node == cluster.c)

        // Copies beyond the factor offered later (a node thought dead came back) are trimmed too, a few per heartbeat.
        var blobs: [BlobID] = []
        for index in 0..<(MetadataStore.trimOrdersPerHeartbeat + 5) {
            blobs.append(try cluster.seal("k\(index)", replicas: 2, holder: cluster.a2, extra: [cluster.c]))
        }
        for blob in blobs { try cluster.f.store.addLocation(blob: blob, placement: BlobPlacement(node: cluster.a1, tier: .tier0)) }
        func trimmed() -> Int { blobs.count { cluster.f.store.blobs.placements(of: $0).count == 2 } }
        #expect(trimmed() == 0)
        var dropped = Set(try cluster.f.store.heartbeat(node: cluster.a1, blobs: 0, bytes: 1000, now: 2))
        #expect(trimmed() == MetadataStore.trimOrdersPerHeartbeat)
        dropped.formUnion(try cluster.f.store.heartbeat(node: cluster.a1, blobs: 0, bytes: 1000, now: 3))
        #expect(trimmed() == blobs.count && cluster.f.store.overReplicated.isEmpty)
        // a1 now holds the most bytes: its copies went (two per host at most, never both of one blob's on host A).
        #expect(dropped == Set(blobs + [shared]))
        for blob in blobs { #expect(!cluster.f.store.blobs.placements(of: blob).contains { $0.node == cluster.a1 }) }

        // A copy on a task's own node (n1) is a cache that goes with the task: not counted, not dropped.
        let cached = try cluster.seal("cached", replicas: 1, holder: cluster.b, extra: [cluster.f.n1])
        #expect(cluster.f.store.excessCopy(of: cached) == nil)

        try cluster.f.store.drain(nodeNamed: "b")
        #expect(cluster.f.store.excessCopy(of: tiers) == nil)
    }

    /// A bucket's factor set after its objects were sealed is one journal record; a restarted MDS (journal or
    /// snapshot) has the same factors, and objects with their own keep them when the bucket's changes again.
    @Test func factorsSetLaterAreJournaledAndOwnFactorsKept() throws {
        var cluster = try Cluster(journaling: true)
        _ = try cluster.seal("follows", holder: cluster.b)
        _ = try cluster.seal("own1", replicas: 1, holder: cluster.b)
        _ = try cluster.seal("own3", replicas: 3, holder: cluster.b)
        let records = cluster.f.store.takeUnjournaled()
        try cluster.f.store.setReplicas(bucket: "bkt", 2)
        let setting = cluster.f.store.takeUnjournaled()
        #expect(setting.map(\.change) == [.setReplicas(bucket: "bkt", 2)])
        let (replayed, restored) = try restarted(from: records + setting)
        for var store in [replayed, restored] {
            // Nothing queued before nodes offer their copies back.
            #expect(store.underReplicated.isEmpty)
            #expect(try store.lookup(bucket: "bkt", key: "follows").wantedCopies == 2)
            #expect(try store.lookup(bucket: "bkt", key: "own1").wantedCopies == 1)
            #expect(try store.lookup(bucket: "bkt", key: "own3").wantedCopies == 3)
            try store.setReplicas(bucket: "bkt", 4)
            #expect(try store.lookup(bucket: "bkt", key: "follows").wantedCopies == 4)
            #expect(try store.lookup(bucket: "bkt", key: "own1").wantedCopies == 1)
            #expect(try store.lookup(bucket: "bkt", key: "own3").wantedCopies == 3)
        }
    }
}
