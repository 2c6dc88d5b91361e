import GedsCore
import GedsTestSupport
import GedsMDS
import GedsWire
import Testing

@Suite struct S3CopyTests {
    let storage = BucketStorage(endpoint: "http://127.0.0.1:4569", bucket: "s3b", prefix: "run/", region: "eu-west-1",
                                persistency: .writeThrough)

    /// A seal in a bucket with an S3 store assigns the blob's S3 key; it is a location only once a node put it
    /// there, it stays when the node goes; a rename moves it, a copy of an object in S3 is copied there.
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
        #expect(s3.tier == .s3 && s3.holder == "http://127.0.0.1:4569/s3b/run/a/b" && s3.s3Object == object)
        // A rename moves the S3 copy with the key: the node copies it in S3, reports it, deletes the old object.
        let move = try #require(try f.store.rename(from: ("data", "a/b"), to: ("data", "moved"), now: 2))
        let movedObject = S3ObjectReference(endpoint: "http://127.0.0.1:4569", bucket: "s3b", key: "run/moved", region: "eu-west-1")
        #expect(move.blob == blob && move.from == object && move.to == movedObject && move.deleteSource)
        #expect(gedsError { _ = try f.store.s3Assignment(blob: blob, now: 2) }?.code == .s3DeletionPending)
        try f.store.addS3Copy(blob: blob)
        f.store.s3Deleted([object, movedObject])
        // A copy of an object in S3 is copied there: a new blob whose one copy is the new S3 object.
        let copyMove = try #require(try f.store.copy(from: ("data", "moved"), to: ("data", "copy"), now: 3))
        let copyObject = S3ObjectReference(endpoint: "http://127.0.0.1:4569", bucket: "s3b", key: "run/copy", region: "eu-west-1")
        #expect(copyMove.blob != blob && copyMove.from == movedObject && copyMove.to == copyObject && !copyMove.deleteSource)
        try f.store.addS3Copy(blob: copyMove.blob)
        f.store.s3Deleted([copyObject])
        #expect(try f.store.lookup(bucket: "data", key: "copy").locations.map(\.s3Object) == [copyObject])
        f.store.leave(node: f.n1)
        #expect(try f.store.lookup(bucket: "data", key: "moved").locations.map(\.tier) == [.s3])
        #expect(try f.store.s3Assignment(blob: blob, now: 3) == S3Assignment(object: movedObject, persistency: .writeThrough,
                                                                             stored: true))
        // Each key's S3 object goes with it.
        let moved = try f.store.delete(bucket: "data", key: "moved", now: 0)
        #expect(moved.inGEDS && moved.s3Objects == [movedObject])
        let copy = try f.store.delete(bucket: "data", key: "copy", now: 0)
        #expect(copy.inGEDS && copy.s3Objects == [copyObject])
        #expect(gedsError { _ = try f.store.s3Assignment(blob: blob, now: 0) }?.code == .noSuchBlob)
    }

    /// Deleting a key orders the deletion of its S3 object only while its blob holds it: a newer object sealed
    /// under the same name keeps it. No upload to an object being deleted starts until the deletion is confirmed
    /// (or lapses), and a key only S3 has is claimed for deletion unless GEDS binds it.
    @Test func deletionsSpareNewerObjectsAndHoldUploadsBack() throws {
        var f = Fixture()
        try f.store.setStorage(bucket: "data", storage)
        let object = S3ObjectReference(endpoint: "http://127.0.0.1:4569", bucket: "s3b", key: "run/k", region: "eu-west-1")
        _ = try f.put("data", "k", size: 1)
        let newer = try f.store.createObject(bucket: "data", key: "k", node: f.n1)
        let deletion = try f.store.delete(bucket: "data", key: "k", now: 10)
        #expect(deletion.inGEDS && deletion.s3Objects == [object])
        // Sealed after the deletion was ordered: its upload waits for the deletion.
        try f.store.seal(blob: newer, size: 2, metadata: [:], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 11)
        #expect(gedsError { _ = try f.store.s3Assignment(blob: newer, now: 12) }?.code == .s3DeletionPending)
        f.store.s3Deleted([object])
        #expect(try f.store.s3Assignment(blob: newer, now: 13).object == object)
        // An upload of the deleted blob that landed late is deleted, unless a newer blob holds the object.
        #expect(f.store.abandonS3Upload(object, now: 14) == [])
        try f.store.delete(bucket: "data", key: "k", now: 15)
        f.store.s3Deleted([object])
        #expect(f.store.abandonS3Upload(object, now: 16) == [object])
        // An order lapses when its node never confirms.
        let lapsing = try f.put("data", "k", size: 3)
        #expect(try f.store.s3Assignment(blob: lapsing, now: 16 + MetadataStore.s3DeletionLapseMilliseconds).object == object)
        // Keys only S3 has: claimed unless bound in GEDS.
        let claimed = try f.store.claimS3Deletions(bucket: "data", keys: ["k", "s3-only"], now: 20)
        #expect(claimed.map(\.key) == ["run/s3-only"])
        let onlyInS3 = try f.store.delete(bucket: "data", key: "never", now: 21)
        #expect(!onlyInS3.inGEDS && onlyInS3.s3Objects?.map(\.key) == ["run/never"])
    }

    /// A rename of an object in S3 onto a key whose S3 object is being deleted waits for that deletion, which
    /// would otherwise remove the moved bytes; the old name is not read through while its deletion is under way.
    @Test func renameWaitsForADeletionOfItsDestination() throws {
        var f = Fixture()
        try f.store.setStorage(bucket: "data", storage)
        let moving = try f.put("data", "a", size: 1)
        try f.store.addS3Copy(blob: moving)
        _ = try f.put("data", "b", size: 2)
        let deletion = try f.store.delete(bucket: "data", key: "b", now: 10)
        #expect(gedsError { _ = try f.store.rename(from: ("data", "a"), to: ("data", "b"), now: 11) }?.code == .s3DeletionPending)
        #expect(try f.keys("data") == ["a"])
        f.store.s3Deleted(deletion.s3Objects ?? [])
        let move = try #require(try f.store.rename(from: ("data", "a"), to: ("data", "b"), now: 12))
        #expect(move.from.key == "run/a" && move.to.key == "run/b" && move.deleteSource)
        #expect(gedsError { _ = try f.store.adoptS3Object(bucket: "data", key: "a", size: 1, now: 13) }?.code == .noSuchObject)
    }

    @Test func bucketsWithoutAStoreAssignNothing() throws {
        var f = Fixture()
        try f.store.createBucket("plain")
        let blob = try f.store.createObject(bucket: "plain", key: "k", node: f.n1)
        #expect(try f.store.seal(blob: blob, size: 1, metadata: [:], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 1) == nil)
        #expect(gedsError { _ = try f.store.s3Assignment(blob: blob, now: 0) }?.code == .invalidArgument)
        #expect(gedsError { _ = try f.store.adoptS3Object(bucket: "plain", key: "k2", size: 1, now: 1) }?.code == .invalidArgument)
        #expect(gedsError { _ = try f.store.storage(bucket: "nope") }?.code == .noSuchBucket)
    }

    /// Read-through: an S3-only key becomes an object whose one copy is in S3; adopting it again (a second
    /// reader) keeps the first blob, and a key GEDS already has is left as it is.
    @Test func adoptionBindsOnce() throws {
        var f = Fixture()
        try f.store.setStorage(bucket: "data", storage)
        let first = try f.store.adoptS3Object(bucket: "data", key: "outside", size: 42, now: 1)
        #expect(first.size == 42 && first.locations.map(\.holder) == ["http://127.0.0.1:4569/s3b/run/outside"])
        #expect(try f.store.adoptS3Object(bucket: "data", key: "outside", size: 42, now: 2).blob == first.blob)
        let own = try f.put("data", "mine", size: 7)
        #expect(try f.store.adoptS3Object(bucket: "data", key: "mine", size: 99, now: 3).blob == own)
        #expect(try f.keys("data") == ["mine", "outside"])
        try f.store.setStorage(bucket: "data", nil)
        #expect(try f.store.storage(bucket: "data") == nil)
    }
}
