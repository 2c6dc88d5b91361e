import GedsCore
import GedsMDS
import GedsWire
import Testing

@Suite struct S3CopyTests {
    let storage = BucketStorage(endpoint: "http://127.0.0.1:4569", bucket: "s3b", prefix: "run/", region: "eu-west-1",
                                persistency: .writeThrough)

    /// A seal in a bucket with an S3 store assigns the blob's S3 key; it is a location only once a node put it
    /// there, it stays when the node goes, and rename and copy share it (it is the blob's, not the key's).
    @Test func s3CopiesBelongToBlobsAndOutliveNodes() throws {
        var f = Fixture()
        try f.store.setStorage(bucket: "data", storage)  // creates the bucket
        #expect(try f.store.storage(bucket: "data") == storage)
        let blob = try f.store.createObject(bucket: "data", key: "a/b", node: f.n1)
        let assignment = try f.store.seal(blob: blob, size: 5, metadata: [:], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 1)
        let object = S3ObjectReference(endpoint: "http://127.0.0.1:4569", bucket: "s3b", key: "run/a/b", region: "eu-west-1")
        #expect(assignment == S3Assignment(object: object, persistency: .writeThrough))
        #expect(try f.store.lookup(bucket: "data", key: "a/b").locations.map(\.tier) == [.tier0])
        try f.store.addS3Copy(blob: blob)
        let s3 = try #require(try f.store.lookup(bucket: "data", key: "a/b").locations.last)
        #expect(s3.tier == .s3 && s3.node == "http://127.0.0.1:4569/s3b/run/a/b" && s3.s3Object == object)
        try f.store.rename(from: ("data", "a/b"), to: ("data", "moved"), now: 2)
        try f.store.copy(from: ("data", "moved"), to: ("data", "copy"), now: 3)
        #expect(try f.store.lookup(bucket: "data", key: "copy").locations.last?.s3Object == object)
        f.store.leave(node: f.n1)
        #expect(try f.store.lookup(bucket: "data", key: "moved").locations.map(\.tier) == [.s3])
        #expect(try f.store.s3Assignment(blob: blob) == assignment)
        // The last key gone, the blob's record goes (the S3 object itself stays in S3).
        try f.store.delete(bucket: "data", key: "moved")
        try f.store.delete(bucket: "data", key: "copy")
        #expect(gedsError { _ = try f.store.s3Assignment(blob: blob) }?.code == .noSuchBlob)
    }

    @Test func bucketsWithoutAStoreAssignNothing() throws {
        var f = Fixture()
        try f.store.createBucket("plain")
        let blob = try f.store.createObject(bucket: "plain", key: "k", node: f.n1)
        #expect(try f.store.seal(blob: blob, size: 1, metadata: [:], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 1) == nil)
        #expect(gedsError { _ = try f.store.s3Assignment(blob: blob) }?.code == .invalidArgument)
        #expect(gedsError { _ = try f.store.adoptS3Object(bucket: "plain", key: "k2", size: 1, now: 1) }?.code == .invalidArgument)
        #expect(gedsError { _ = try f.store.storage(bucket: "nope") }?.code == .noSuchBucket)
    }

    /// Read-through: an S3-only key becomes an object whose one copy is in S3; adopting it again (a second
    /// reader) keeps the first blob, and a key GEDS already has is left as it is.
    @Test func adoptionBindsOnce() throws {
        var f = Fixture()
        try f.store.setStorage(bucket: "data", storage)
        let first = try f.store.adoptS3Object(bucket: "data", key: "outside", size: 42, now: 1)
        #expect(first.size == 42 && first.locations.map(\.node) == ["http://127.0.0.1:4569/s3b/run/outside"])
        #expect(try f.store.adoptS3Object(bucket: "data", key: "outside", size: 42, now: 2).blob == first.blob)
        let own = try f.put("data", "mine", size: 7)
        #expect(try f.store.adoptS3Object(bucket: "data", key: "mine", size: 99, now: 3).blob == own)
        #expect(try f.keys("data") == ["mine", "outside"])
        try f.store.setStorage(bucket: "data", nil)
        #expect(try f.store.storage(bucket: "data") == nil)
    }
}
