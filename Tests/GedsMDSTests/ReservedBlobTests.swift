import GedsCore
import GedsMDS
import GedsTestSupport
import GedsWire
import Testing

/// Objects a node creates on its own under reserved blob ids and announces with their seal (`sealNewObject`).
@Suite struct ReservedBlobTests {
    @Test func aReservedIDIsCreatedAndSealedInOneStep() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let first = try f.store.reserveBlobs(node: f.n1, count: 4)
        // Ids the MDS hands out afterwards are beyond the range.
        let other = try f.store.createObject(bucket: "bkt", key: "other", node: f.n1)
        #expect(other.rawValue >= first.rawValue + 4)
        let placement = BlobPlacement(node: f.n1, tier: .tier0)
        let outcome = try f.store.sealNewObject(blob: first, bucket: "bkt", key: "k", size: 3, metadata: ["m": "v"],
                                                placement: placement, contents: [1, 2, 3], now: 7)
        #expect(outcome == .sealed(nil))
        let info = try f.store.lookup(bucket: "bkt", key: "k")
        #expect(info.blob == first)
        #expect(info.size == 3)
        #expect(info.metadata == ["m": "v"])
        #expect(info.contents == [1, 2, 3])
        #expect(f.store.takeUnpublishedEvents().contains { $0.kind == .created && $0.name.key == "k" })
        // One object per id.
        #expect(gedsError {
            _ = try f.store.sealNewObject(blob: first, bucket: "bkt", key: "again", size: 1, metadata: [:], placement: placement,
                                          contents: nil, now: 8)
        }?.code == .invalidArgument)
        #expect(gedsError { _ = try f.store.lookup(bucket: "bkt", key: "again") }?.code == .noSuchObject)
    }

    @Test func idsNotReservedFromThisRunAreRefused() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let placement = BlobPlacement(node: f.n1, tier: .tier0)
        let first = try f.store.reserveBlobs(node: f.n1, count: 2)
        // Beyond what was handed out, and from another epoch (an MDS that restarted).
        for blob in [BlobID(first.rawValue + 100), BlobID(first.rawValue ^ (1 << 50))] {
            #expect(gedsError {
                _ = try f.store.sealNewObject(blob: blob, bucket: "bkt", key: "k", size: 1, metadata: [:], placement: placement,
                                              contents: nil, now: 1)
            }?.code == .noSuchBlob)
        }
        #expect(gedsError { _ = try f.store.reserveBlobs(node: f.n1, count: 0) }?.code == .invalidArgument)
        #expect(gedsError { _ = try f.store.reserveBlobs(node: f.n1, count: MetadataStore.maximumReservation + 1) }?.code
                == .invalidArgument)
        #expect(gedsError { _ = try f.store.reserveBlobs(node: 999, count: 1) }?.code == .noSuchNode)
    }

    @Test func aFailedSealLeavesNothingPending() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let first = try f.store.reserveBlobs(node: f.n1, count: 2)
        #expect(gedsError {
            _ = try f.store.sealNewObject(blob: first, bucket: "nope", key: "k", size: 1, metadata: [:],
                                          placement: BlobPlacement(node: f.n1, tier: .tier0), contents: nil, now: 1)
        }?.code == .noSuchBucket)
        #expect(gedsError {
            _ = try f.store.sealNewObject(blob: first, bucket: "bkt", key: "k", size: 1, metadata: ["": "x"],
                                          placement: BlobPlacement(node: f.n1, tier: .tier0), contents: nil, now: 1)
        } != nil)
        // The bucket can be deleted without force: no pending object was left behind, and the id is still free.
        let second = BlobID(first.rawValue + 1)
        #expect(gedsError {
            _ = try f.store.sealNewObject(blob: second, bucket: "bkt", key: "k", size: 1, metadata: [:],
                                          placement: BlobPlacement(node: 0, tier: .tier0), contents: nil, now: 1)
        }?.code == .noSuchNode)
        try f.store.deleteBucket("bkt", force: false)
    }

    @Test func anObjectWantingCopiesIsOnlyCreated() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        try f.store.setReplicas(bucket: "bkt", 2)
        let blob = try f.store.reserveBlobs(node: f.n1, count: 1)
        let placement = BlobPlacement(node: f.n1, tier: .tier0)
        #expect(try f.store.sealNewObject(blob: blob, bucket: "bkt", key: "k", size: 1, metadata: [:], placement: placement,
                                          contents: nil, now: 1) == .created)
        #expect(gedsError { _ = try f.store.lookup(bucket: "bkt", key: "k") }?.code == .objectNotSealed)
        // The node places the copies, then seals as for any created object.
        try f.store.seal(blob: blob, size: 1, metadata: [:], placement: placement, now: 2)
        #expect(try f.store.lookup(bucket: "bkt", key: "k").blob == blob)
    }
}
