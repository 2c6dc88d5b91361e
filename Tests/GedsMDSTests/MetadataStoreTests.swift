import GedsTestSupport
import GedsCore
import GedsMDS
import GedsWire
import Testing

@Suite struct BucketTests {
    @Test func createListDelete() throws {
        var f = Fixture()
        #expect(f.store.listBuckets() == [])
        try f.store.createBucket("beta")
        try f.store.createBucket("alpha")
        try f.store.createBucket("gamma.bucket")
        #expect(f.store.listBuckets() == ["alpha", "beta", "gamma.bucket"])
        #expect(gedsError { try f.store.createBucket("beta") }?.code == .bucketExists)
        #expect(gedsError { try f.store.createBucket("Bad_Name") }?.code == .invalidName)
        #expect(gedsError { try f.store.createBucket("xn--abc") }?.code == .invalidName)
        #expect(gedsError { try f.store.createBucket("ab") }?.code == .invalidName)
        #expect(f.store.listBuckets() == ["alpha", "beta", "gamma.bucket"])
        try f.store.deleteBucket("beta", force: false)
        #expect(f.store.listBuckets() == ["alpha", "gamma.bucket"])
        #expect(gedsError { try f.store.deleteBucket("beta", force: false) }?.code == .noSuchBucket)
        #expect(gedsError { try f.store.deleteBucket("never", force: true) }?.code == .noSuchBucket)
        // A deleted bucket can be created again, empty.
        try f.store.createBucket("beta")
        #expect(try f.store.list(bucket: "beta", prefix: "", delimiter: "", startAfter: "", maxKeys: 10).objects.isEmpty)
    }

    @Test func deletingNonEmptyBucketNeedsForce() throws {
        var f = Fixture()
        try f.store.createBucket("full")
        try f.store.createBucket("other")
        let a = try f.put("full", "a")
        let b = try f.put("full", "dir/b")
        let shared = try f.put("full", "shared")
        try f.store.copy(from: ("full", "shared"), to: ("other", "copy"), now: 5)
        #expect(gedsError { try f.store.deleteBucket("full", force: false) }?.code == .bucketNotEmpty)
        #expect(try f.store.lookup(bucket: "full", key: "a").blob == a)
        #expect(try f.drops().isEmpty)

        try f.store.deleteBucket("full", force: true)
        #expect(f.store.listBuckets() == ["other"])
        #expect(gedsError { _ = try f.store.lookup(bucket: "full", key: "a") }?.code == .noSuchBucket)
        #expect(gedsError { _ = try f.store.list(bucket: "full", prefix: "", delimiter: "", startAfter: "", maxKeys: 1) }?.code == .noSuchBucket)
        // The bytes of the deleted keys are dropped; the copy in another bucket keeps its blob.
        #expect(try f.drops() == [a, b])
        #expect(try f.store.lookup(bucket: "other", key: "copy").blob == shared)
        #expect(f.store.objectCount == 1)
    }

    @Test func bucketWithOnlyAPendingObjectIsNotEmpty() throws {
        var f = Fixture()
        try f.store.createBucket("pending")
        let blob = try f.store.createObject(bucket: "pending", key: "k", node: f.n1)
        #expect(gedsError { try f.store.deleteBucket("pending", force: false) }?.code == .bucketNotEmpty)
        try f.store.deleteBucket("pending", force: true)
        // The writer's seal finds its object gone, even after the bucket is created again.
        try f.store.createBucket("pending")
        #expect(gedsError {
            try f.store.seal(blob: blob, size: 1, metadata: [:], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 1)
        }?.code == .noSuchObject)
        #expect(gedsError { _ = try f.store.lookup(bucket: "pending", key: "k") }?.code == .noSuchObject)
        try f.store.deleteBucket("pending", force: false)
    }
}

@Suite struct ObjectLifecycleTests {
    @Test func pendingObjectIsInvisibleUntilSealed() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let blob = try f.store.createObject(bucket: "bkt", key: "dir/k", node: f.n1)
        #expect(gedsError { _ = try f.store.lookup(bucket: "bkt", key: "dir/k") }?.code == .objectNotSealed)
        #expect(gedsError { _ = try f.store.lookup(bucket: "bkt", key: "dir/other") }?.code == .noSuchObject)
        #expect(try f.keys("bkt") == [])
        #expect(try f.store.list(bucket: "bkt", prefix: "", delimiter: "/", startAfter: "", maxKeys: 10).commonPrefixes == [])
        #expect(f.store.objectCount == 0)
        #expect(gedsError { try f.store.delete(bucket: "bkt", key: "dir/k", now: 0) }?.code == .noSuchObject)
        #expect(gedsError { try f.store.rename(from: ("bkt", "dir/k"), to: ("bkt", "x"), now: 1) }?.code == .noSuchObject)

        try f.store.seal(blob: blob, size: 4097, metadata: ["m": "v"], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 1234)
        let info = try f.store.lookup(bucket: "bkt", key: "dir/k")
        #expect(info == ObjectInfo(bucket: "bkt", key: "dir/k", blob: blob, size: 4097, sealed: true, modified: 1234,
                                   metadata: ["m": "v"],
                                   locations: [.node(NodeCopy(node: "n1", hostID: "host-of-n1", tier: .tier0,
                                                              tcp: Endpoint(host: "10.0.0.1", port: 4000), rdma: nil,
                                                              path: "/dev/shm/geds-n1/" + blob.fileName))]))
        #expect(try f.keys("bkt") == ["dir/k"])
        #expect(f.store.objectCount == 1)
        // A blob is sealed once.
        #expect(gedsError {
            try f.store.seal(blob: blob, size: 1, metadata: [:], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 1)
        }?.code == .noSuchObject)
        #expect(try f.store.lookup(bucket: "bkt", key: "dir/k").size == 4097)
    }

    /// Create-if-absent: refused at once when the key is bound; of two pending exclusive creators, the first seal
    /// wins and the second is refused and forgotten (its node told to drop its copy); the winner's object stays.
    @Test func exclusiveCreateHasOneWinner() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let first = try f.store.createObject(bucket: "bkt", key: "k", node: f.n1, exclusive: true)
        let second = try f.store.createObject(bucket: "bkt", key: "k", node: f.n1, exclusive: true)
        let copy = BlobPlacement(node: f.n1, tier: .tier0)
        try f.store.seal(blob: first, size: 3, metadata: [:], placement: copy, now: 1)
        #expect(gedsError { try f.store.seal(blob: second, size: 5, metadata: [:], placement: copy, now: 2) }?.code == .objectExists)
        #expect(try f.store.lookup(bucket: "bkt", key: "k").blob == first)
        #expect(try f.store.lookup(bucket: "bkt", key: "k").size == 3)
        #expect(gedsError { _ = try f.store.createObject(bucket: "bkt", key: "k", node: f.n1, exclusive: true) }?.code == .objectExists)
        // The refused blob is forgotten: sealing it again finds nothing.
        #expect(gedsError { try f.store.seal(blob: second, size: 5, metadata: [:], placement: copy, now: 3) }?.code == .noSuchObject)
        // A plain create still replaces, and a deleted key can be created exclusively again.
        try f.put("bkt", "k", size: 7)
        #expect(try f.store.lookup(bucket: "bkt", key: "k").size == 7)
        try f.store.delete(bucket: "bkt", key: "k", now: 4)
        let again = try f.store.createObject(bucket: "bkt", key: "k", node: f.n1, exclusive: true)
        try f.store.seal(blob: again, size: 9, metadata: [:], placement: copy, now: 5)
        #expect(try f.store.lookup(bucket: "bkt", key: "k").blob == again)
    }

    /// A tier-0 copy packed into a slab: its location names the slab file and the slot's offset; a second copy, with
    /// RDMA details, and one in a slot beyond what fits inline, come back as given too.
    @Test func packedCopiesNameTheirSlabAndSlot() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let n2 = f.store.register(registration("n2", port: 4001), now: 0)
        let blob = try f.store.createObject(bucket: "bkt", key: "k", node: f.n1)
        try f.store.seal(blob: blob, size: 1024, metadata: [:],
                         placement: BlobPlacement(node: f.n1, tier: .tier0, slot: SlabSlot(slab: 3, offset: 1040 * 7)), now: 1)
        try f.store.addLocation(blob: blob, placement: BlobPlacement(node: n2, tier: .tier0, rdmaAddress: 0x7000, rkey: 9,
                                                                     slot: SlabSlot(slab: 1, offset: 1 << 40)))
        let locations = try f.store.lookup(bucket: "bkt", key: "k").locations
        #expect(locations.map(\.nodeCopy?.path) == ["/dev/shm/geds-n1/slab-00000003", "/dev/shm/geds-n2/slab-00000001"])
        #expect(locations.map(\.nodeCopy?.offset) == [1040 * 7, 1 << 40])
        try f.store.addLocation(blob: blob, placement: BlobPlacement(node: f.n1, tier: .tier1))
        let moved = try f.store.lookup(bucket: "bkt", key: "k").locations.first { $0.holder == "n1" }
        #expect(moved?.nodeCopy?.offset == nil && moved?.nodeCopy?.path == "/dev/shm/geds-n1/" + blob.fileName, "spilled: a file again")
    }

    @Test func overwriteKeepsOldObjectReadableUntilSealed() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let old = try f.put("bkt", "k", size: 100, metadata: ["v": "1"], now: 10)
        let new = try f.store.createObject(bucket: "bkt", key: "k", node: f.n1)
        #expect(new != old)
        let during = try f.store.lookup(bucket: "bkt", key: "k")
        #expect(during.blob == old && during.size == 100 && during.metadata == ["v": "1"] && during.modified == 10)
        #expect(try f.store.list(bucket: "bkt", prefix: "", delimiter: "", startAfter: "", maxKeys: 10).objects
            == [ListEntry(key: "k", size: 100, modified: 10)])
        #expect(try f.drops().isEmpty)

        try f.store.seal(blob: new, size: 200, metadata: ["v": "2"], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 20)
        let after = try f.store.lookup(bucket: "bkt", key: "k")
        #expect(after.blob == new && after.size == 200 && after.metadata == ["v": "2"] && after.modified == 20)
        #expect(try f.drops() == [old])
        #expect(try f.drops().isEmpty)  // handed over once
        #expect(f.store.objectCount == 1)
    }

    @Test func abortRestoresTheStateBefore() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let old = try f.put("bkt", "k")
        let first = try f.store.createObject(bucket: "bkt", key: "k", node: f.n1)
        let second = try f.store.createObject(bucket: "bkt", key: "k", node: f.n1)
        f.store.abort(blob: first)
        #expect(try f.store.lookup(bucket: "bkt", key: "k").blob == old)
        f.store.abort(blob: second)
        f.store.abort(blob: second)  // twice is harmless
        #expect(try f.store.lookup(bucket: "bkt", key: "k").blob == old)
        // A fresh key: pending while either writer is open, absent after both abort.
        let x = try f.store.createObject(bucket: "bkt", key: "fresh", node: f.n1)
        let y = try f.store.createObject(bucket: "bkt", key: "fresh", node: f.n1)
        f.store.abort(blob: x)
        #expect(gedsError { _ = try f.store.lookup(bucket: "bkt", key: "fresh") }?.code == .objectNotSealed)
        f.store.abort(blob: y)
        #expect(gedsError { _ = try f.store.lookup(bucket: "bkt", key: "fresh") }?.code == .noSuchObject)
        #expect(gedsError {
            try f.store.seal(blob: x, size: 1, metadata: [:], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 1)
        }?.code == .noSuchObject)
        try f.store.delete(bucket: "bkt", key: "k", now: 0)
        try f.store.deleteBucket("bkt", force: false)
    }

    @Test func lastSealWins() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let first = try f.store.createObject(bucket: "bkt", key: "k", node: f.n1)
        let second = try f.store.createObject(bucket: "bkt", key: "k", node: f.n1)
        try f.store.seal(blob: second, size: 2, metadata: [:], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 1)
        try f.store.seal(blob: first, size: 1, metadata: [:], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 2)
        #expect(try f.store.lookup(bucket: "bkt", key: "k").blob == first)
        #expect(try f.drops() == [second])
        #expect(f.store.objectCount == 1)
    }

    @Test func createAndSealValidateTheirArguments() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        #expect(gedsError { _ = try f.store.createObject(bucket: "bkt", key: "", node: f.n1) }?.code == .invalidName)
        #expect(gedsError { _ = try f.store.createObject(bucket: "bkt", key: "a\u{7}", node: f.n1) }?.code == .invalidName)
        #expect(gedsError { _ = try f.store.createObject(bucket: "bkt", key: String(repeating: "k", count: 1025), node: f.n1) }?.code == .invalidName)
        #expect(gedsError { _ = try f.store.createObject(bucket: "nope", key: "k", node: f.n1) }?.code == .noSuchBucket)
        #expect(gedsError { _ = try f.store.createObject(bucket: "bkt", key: "k", node: 999) }?.code == .noSuchNode)
        let n2 = f.store.register(registration("n2"), now: 0)
        let blob = try f.store.createObject(bucket: "bkt", key: "k", node: f.n1)
        // Only the creating node may seal, and only with valid metadata.
        #expect(gedsError {
            try f.store.seal(blob: blob, size: 1, metadata: [:], placement: BlobPlacement(node: n2, tier: .tier0), now: 1)
        }?.code == .noSuchNode)
        #expect(gedsError {
            try f.store.seal(blob: blob, size: 1, metadata: ["k": String(repeating: "v", count: 3000)],
                             placement: BlobPlacement(node: f.n1, tier: .tier0), now: 1)
        }?.code == .metadataTooLarge)
        #expect(gedsError {
            try f.store.seal(blob: blob, size: 1, metadata: ["bad name": "v"], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 1)
        }?.code == .invalidArgument)
        #expect(gedsError {
            try f.store.seal(blob: BlobID(blob.rawValue &+ 1000), size: 1, metadata: [:], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 1)
        }?.code == .noSuchObject)
        // Still pending, and sealable by its creator.
        #expect(gedsError { _ = try f.store.lookup(bucket: "bkt", key: "k") }?.code == .objectNotSealed)
        try f.store.seal(blob: blob, size: 1, metadata: [:], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 1)
        #expect(try f.store.lookup(bucket: "bkt", key: "k").size == 1)
    }

    @Test func blobIDsAreUniqueAndCarryTheEpoch() throws {
        var store = MetadataStore(leaseMilliseconds: 1000, epoch: 0xABCDE)
        let node = store.register(registration("n"), now: 0)
        try store.createBucket("bkt")
        var seen = Set<BlobID>()
        for index in 0..<500 {
            let blob = try store.createObject(bucket: "bkt", key: "k\(index % 7)", node: node)
            #expect(blob.rawValue >> 44 == 0xABCDE)
            #expect(seen.insert(blob).inserted)
            if index % 2 == 0 { store.abort(blob: blob) }
        }
        var other = MetadataStore(leaseMilliseconds: 1000, epoch: 0xABCDF)
        let otherNode = other.register(registration("n"), now: 0)
        try other.createBucket("bkt")
        #expect(!seen.contains(try other.createObject(bucket: "bkt", key: "k", node: otherNode)))
    }

    @Test func deleteObjects() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let a = try f.put("bkt", "a")
        let b = try f.put("bkt", "b")
        #expect(gedsError { try f.store.delete(bucket: "bkt", key: "c", now: 0) }?.code == .noSuchObject)
        #expect(gedsError { try f.store.delete(bucket: "nope", key: "a", now: 0) }?.code == .noSuchBucket)
        try f.store.delete(bucket: "bkt", key: "a", now: 0)
        #expect(gedsError { _ = try f.store.lookup(bucket: "bkt", key: "a") }?.code == .noSuchObject)
        #expect(gedsError { try f.store.delete(bucket: "bkt", key: "a", now: 0) }?.code == .noSuchObject)
        #expect(try f.keys("bkt") == ["b"])
        #expect(try f.drops() == [a])
        try f.store.delete(bucket: "bkt", key: "b", now: 0)
        #expect(try f.drops() == [b])
        #expect(f.store.objectCount == 0)
        try f.store.deleteBucket("bkt", force: false)
    }
}

@Suite struct DeletePrefixTests {
    @Test func deletesExactlyTheKeysUnderThePrefix() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        var random = SplitMix64(seed: 11)
        let alphabet = ["a", "b", "/", "ab", "-"]
        var blobs: [String: BlobID] = [:]
        while blobs.count < 600 {
            let key = (0...(random.next() % 6)).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] }.joined()
            if blobs[key] == nil { blobs[key] = try f.put("bkt", key) }
        }
        for prefix in ["a/", "ab", "b/a", "zzz", "a", "/", "-"] {
            let doomed = blobs.keys.filter { $0.utf8.starts(with: prefix.utf8) }
            let doomedBlobs = Set(doomed.map { blobs[$0]! })
            let count = try f.store.delete(bucket: "bkt", prefix: prefix)
            #expect(count == UInt64(doomed.count), "prefix \(prefix)")
            for key in doomed { blobs[key] = nil }
            #expect(try f.keys("bkt") == blobs.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }, "after prefix \(prefix)")
            #expect(try f.drops() == doomedBlobs, "prefix \(prefix)")
            for key in blobs.keys.prefix(20) { #expect(try f.store.lookup(bucket: "bkt", key: key).blob == blobs[key]) }
        }
        #expect(try f.store.delete(bucket: "bkt", prefix: "") == UInt64(blobs.count))
        #expect(try f.keys("bkt") == [])
        #expect(f.store.objectCount == 0)
        #expect(gedsError { _ = try f.store.delete(bucket: "nope", prefix: "") }?.code == .noSuchBucket)
    }

    @Test func droppedBlobsAreReported() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let x1 = try f.put("bkt", "x/1")
        let x2 = try f.put("bkt", "x/2")
        let y = try f.put("bkt", "y")
        let pending = try f.store.createObject(bucket: "bkt", key: "x/3", node: f.n1)
        #expect(try f.store.delete(bucket: "bkt", prefix: "x/") == 2)
        #expect(try f.drops() == [x1, x2])
        #expect(try f.store.lookup(bucket: "bkt", key: "y").blob == y)
        // A pending object under the prefix is not deleted: it appears when sealed.
        try f.store.seal(blob: pending, size: 3, metadata: [:], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 1)
        #expect(try f.store.lookup(bucket: "bkt", key: "x/3").blob == pending)
    }
}

@Suite struct RenameCopyTests {
    @Test func renameMovesTheKeyAndKeepsTheBlob() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        try f.store.createBucket("ckt")
        let src = try f.put("bkt", "src", size: 33, metadata: ["m": "1"], now: 5)
        let dst = try f.put("bkt", "dst", size: 44, now: 6)
        try f.store.rename(from: ("bkt", "src"), to: ("bkt", "dst"), now: 50)
        #expect(gedsError { _ = try f.store.lookup(bucket: "bkt", key: "src") }?.code == .noSuchObject)
        let moved = try f.store.lookup(bucket: "bkt", key: "dst")
        #expect(moved.blob == src && moved.size == 33 && moved.metadata == ["m": "1"] && moved.modified == 50)
        #expect(moved.locations.map(\.nodeCopy?.path) == ["/dev/shm/geds-n1/" + src.fileName])
        #expect(try f.keys("bkt") == ["dst"])
        // The replaced object's bytes go; the moved ones stay.
        #expect(try f.drops() == [dst])

        try f.store.rename(from: ("bkt", "dst"), to: ("ckt", "elsewhere/k"), now: 60)
        #expect(try f.keys("bkt") == [])
        #expect(try f.keys("ckt") == ["elsewhere/k"])
        #expect(try f.store.lookup(bucket: "ckt", key: "elsewhere/k").blob == src)
        // Onto itself: nothing changes.
        try f.store.rename(from: ("ckt", "elsewhere/k"), to: ("ckt", "elsewhere/k"), now: 70)
        #expect(try f.store.lookup(bucket: "ckt", key: "elsewhere/k").blob == src)
        #expect(try f.drops().isEmpty)
        #expect(f.store.objectCount == 1)
    }

    @Test func failedRenameChangesNothing() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let src = try f.put("bkt", "src")
        let dst = try f.put("bkt", "dst")
        #expect(gedsError { try f.store.rename(from: ("bkt", "src"), to: ("nope", "x"), now: 1) }?.code == .noSuchBucket)
        #expect(gedsError { try f.store.rename(from: ("nope", "src"), to: ("bkt", "x"), now: 1) }?.code == .noSuchBucket)
        #expect(gedsError { try f.store.rename(from: ("bkt", "missing"), to: ("bkt", "dst"), now: 1) }?.code == .noSuchObject)
        #expect(gedsError { try f.store.rename(from: ("bkt", "src"), to: ("bkt", ""), now: 1) }?.code == .invalidName)
        #expect(gedsError { try f.store.rename(from: ("bkt", "src"), to: ("bkt", "a\nb"), now: 1) }?.code == .invalidName)
        #expect(try f.store.lookup(bucket: "bkt", key: "src").blob == src)
        #expect(try f.store.lookup(bucket: "bkt", key: "dst").blob == dst)
        #expect(try f.drops().isEmpty)
    }

    @Test func copySharesTheBlobUntilBothKeysAreGone() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        try f.store.createBucket("ckt")
        let blob = try f.put("bkt", "orig", size: 77, metadata: ["m": "x"], now: 5)
        try f.store.copy(from: ("bkt", "orig"), to: ("ckt", "copy"), now: 9)
        let copy = try f.store.lookup(bucket: "ckt", key: "copy")
        #expect(copy.blob == blob && copy.size == 77 && copy.metadata == ["m": "x"] && copy.modified == 9)
        #expect(copy.locations == (try f.store.lookup(bucket: "bkt", key: "orig").locations))
        #expect(try f.store.lookup(bucket: "bkt", key: "orig").modified == 5)
        #expect(f.store.objectCount == 2)

        // Either key can go first; the bytes stay until the other goes too.
        try f.store.delete(bucket: "bkt", key: "orig", now: 0)
        #expect(try f.drops().isEmpty)
        #expect(try f.store.lookup(bucket: "ckt", key: "copy").blob == blob)
        try f.store.delete(bucket: "ckt", key: "copy", now: 0)
        #expect(try f.drops() == [blob])
    }

    @Test func copyCountsEveryReference() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let blob = try f.put("bkt", "a")
        try f.store.copy(from: ("bkt", "a"), to: ("bkt", "b"), now: 1)
        try f.store.copy(from: ("bkt", "a"), to: ("bkt", "b"), now: 2)  // replaces b with the same blob
        try f.store.copy(from: ("bkt", "b"), to: ("bkt", "c"), now: 3)
        try f.store.copy(from: ("bkt", "c"), to: ("bkt", "c"), now: 4)  // onto itself: nothing
        try f.store.rename(from: ("bkt", "c"), to: ("bkt", "d"), now: 5)
        #expect(try f.keys("bkt") == ["a", "b", "d"])
        // Overwriting the source binds only the source to new bytes.
        let newer = try f.put("bkt", "a", size: 1)
        #expect(try f.store.lookup(bucket: "bkt", key: "b").blob == blob)
        #expect(try f.store.lookup(bucket: "bkt", key: "a").blob == newer)
        #expect(try f.drops().isEmpty)
        try f.store.delete(bucket: "bkt", key: "b", now: 0)
        #expect(try f.drops().isEmpty)
        try f.store.delete(bucket: "bkt", key: "d", now: 0)
        #expect(try f.drops() == [blob])
        try f.store.delete(bucket: "bkt", key: "a", now: 0)
        #expect(try f.drops() == [newer])
    }

    @Test func copyFailures() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        _ = try f.put("bkt", "a")
        #expect(gedsError { try f.store.copy(from: ("bkt", "missing"), to: ("bkt", "x"), now: 1) }?.code == .noSuchObject)
        #expect(gedsError { try f.store.copy(from: ("bkt", "a"), to: ("nope", "x"), now: 1) }?.code == .noSuchBucket)
        #expect(gedsError { try f.store.copy(from: ("bkt", "a"), to: ("bkt", ""), now: 1) }?.code == .invalidName)
        _ = try f.store.createObject(bucket: "bkt", key: "pending", node: f.n1)
        #expect(gedsError { try f.store.copy(from: ("bkt", "pending"), to: ("bkt", "x"), now: 1) }?.code == .noSuchObject)
        #expect(try f.keys("bkt") == ["a"])
        // A single delete of the only key drops the bytes: the failed copies took no reference.
        try f.store.delete(bucket: "bkt", key: "a", now: 0)
        #expect(try f.drops().count == 1)
    }

    @Test func forceDeletingABucketReleasesCopiesCorrectly() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let blob = try f.put("bkt", "a")
        try f.store.copy(from: ("bkt", "a"), to: ("bkt", "a2"), now: 1)
        try f.store.deleteBucket("bkt", force: true)
        #expect(try f.drops() == [blob])
    }
}

@Suite struct MetadataTests {
    @Test func setMetadataReplacesIt() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let blob = try f.put("bkt", "k", metadata: ["a": "1", "b": "2"], now: 7)
        try f.store.setMetadata(bucket: "bkt", key: "k", metadata: ["c": "3"])
        let info = try f.store.lookup(bucket: "bkt", key: "k")
        #expect(info.metadata == ["c": "3"])
        #expect(info.blob == blob)
        try f.store.setMetadata(bucket: "bkt", key: "k", metadata: [:])
        #expect(try f.store.lookup(bucket: "bkt", key: "k").metadata == [:])
        #expect(gedsError { try f.store.setMetadata(bucket: "bkt", key: "k", metadata: ["x": String(repeating: "v", count: 2048)]) }?.code == .metadataTooLarge)
        #expect(gedsError { try f.store.setMetadata(bucket: "bkt", key: "k", metadata: ["": "v"]) }?.code == .invalidArgument)
        #expect(gedsError { try f.store.setMetadata(bucket: "bkt", key: "nope", metadata: [:]) }?.code == .noSuchObject)
        #expect(gedsError { try f.store.setMetadata(bucket: "nope", key: "k", metadata: [:]) }?.code == .noSuchBucket)
        _ = try f.store.createObject(bucket: "bkt", key: "pending", node: f.n1)
        #expect(gedsError { try f.store.setMetadata(bucket: "bkt", key: "pending", metadata: [:]) }?.code == .noSuchObject)
        #expect(try f.store.lookup(bucket: "bkt", key: "k").metadata == [:])
    }

    @Test func copiesHaveTheirOwnMetadata() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        _ = try f.put("bkt", "k", metadata: ["v": "orig"])
        try f.store.copy(from: ("bkt", "k"), to: ("bkt", "copy"), now: 1)
        try f.store.setMetadata(bucket: "bkt", key: "copy", metadata: ["v": "copy"])
        #expect(try f.store.lookup(bucket: "bkt", key: "k").metadata == ["v": "orig"])
        #expect(try f.store.lookup(bucket: "bkt", key: "copy").metadata == ["v": "copy"])
        try f.store.rename(from: ("bkt", "copy"), to: ("bkt", "moved"), now: 2)
        #expect(try f.store.lookup(bucket: "bkt", key: "moved").metadata == ["v": "copy"])
    }
}

@Suite struct LocationTests {
    @Test func transportsOfferedReachNodesAndRegisteredCopies() throws {
        var f = Fixture()
        let rdma = Endpoint(host: "10.0.0.3", port: 6000)
        let n3 = f.store.register(NodeRegistration(name: "n3", hostID: "h3", role: .daemon,
                                                   tcp: Endpoint(host: "10.0.0.3", port: 6000), tier0Directory: "/t0",
                                                   rdma: rdma), now: 0)
        #expect(f.store.listNodes().map(\.rdma) == [nil, rdma])
        try f.store.createBucket("bkt")
        // An RDMA node's copy that is not registered (no rkey) is reachable over TCP only.
        let plain = try f.put("bkt", "plain", node: n3)
        #expect(try f.store.lookup(bucket: "bkt", key: "plain").locations.map(\.nodeCopy?.rdma) == [nil])
        #expect(try f.store.lookup(bucket: "bkt", key: "plain").locations.map(\.nodeCopy?.transportURLs) == [["tcp://10.0.0.3:6000"]])
        let registered = BlobPlacement(node: n3, tier: .tier0, rdmaAddress: 0x1000, rkey: 42)
        try f.store.addLocation(blob: plain, placement: registered)
        let location = try #require(try f.store.lookup(bucket: "bkt", key: "plain").locations.first?.nodeCopy)
        #expect(location.rdma == RDMAAccess(endpoint: rdma, address: 0x1000, rkey: 42))
        #expect(location.transportURLs == ["tcp://10.0.0.3:6000", "rdma://10.0.0.3:6000"])
        // An rkey from a node that offers no RDMA is not handed out.
        let other = try f.put("bkt", "other")
        try f.store.addLocation(blob: other, placement: BlobPlacement(node: f.n1, tier: .tier0, rdmaAddress: 1, rkey: 1))
        #expect(try f.store.lookup(bucket: "bkt", key: "other").locations.map(\.nodeCopy?.rdma) == [nil])
    }

    @Test func addAndRemoveLocations() throws {
        var f = Fixture()
        let n2 = f.store.register(NodeRegistration(name: "n2", hostID: "h2", role: .daemon,
                                                   tcp: Endpoint(host: "10.0.0.2", port: 5000), tier0Directory: "/mnt/t0"), now: 0)
        try f.store.createBucket("bkt")
        let blob = try f.put("bkt", "k")
        try f.store.addLocation(blob: blob, placement: BlobPlacement(node: n2, tier: .tier0))
        try f.store.addLocation(blob: blob, placement: BlobPlacement(node: n2, tier: .tier0))  // no duplicate
        var locations = try f.store.lookup(bucket: "bkt", key: "k").locations
        #expect(locations.map(\.holder).sorted() == ["n1", "n2"])
        let second = locations.first { $0.holder == "n2" }
        #expect(second == .node(NodeCopy(node: "n2", hostID: "h2", tier: .tier0, tcp: Endpoint(host: "10.0.0.2", port: 5000),
                                          rdma: nil, path: "/mnt/t0/" + blob.fileName)))

        f.store.removeLocation(blob: blob, node: f.n1)
        locations = try f.store.lookup(bucket: "bkt", key: "k").locations
        #expect(locations.map(\.holder) == ["n2"])
        f.store.removeLocation(blob: blob, node: f.n1)  // twice is harmless
        f.store.removeLocation(blob: 12345, node: f.n1)  // unknown blob too

        // Deleting the object tells the remaining holder to drop it, and only it.
        try f.store.delete(bucket: "bkt", key: "k", now: 0)
        #expect(try f.drops(n2) == [blob])
        #expect(try f.drops().isEmpty)
        #expect(gedsError { try f.store.addLocation(blob: blob, placement: BlobPlacement(node: n2, tier: .tier0)) }?.code == .noSuchBlob)
    }

    @Test func everyHolderIsToldToDrop() throws {
        var f = Fixture()
        let n2 = f.store.register(registration("n2"), now: 0)
        let n3 = f.store.register(registration("n3"), now: 0)
        try f.store.createBucket("bkt")
        let blob = try f.put("bkt", "k")
        try f.store.addLocation(blob: blob, placement: BlobPlacement(node: n2, tier: .tier0))
        try f.store.addLocation(blob: blob, placement: BlobPlacement(node: n3, tier: .tier1))
        #expect(try f.store.lookup(bucket: "bkt", key: "k").locations.map(\.tier).sorted { $0.rawValue < $1.rawValue }
            == [.tier0, .tier0, .tier1])
        try f.store.delete(bucket: "bkt", key: "k", now: 0)
        #expect(try f.drops() == [blob])
        #expect(try f.drops(n2) == [blob])
        #expect(try f.drops(n3) == [blob])
    }

    @Test func aTier1ChecksumIsKeptPerBlobAndOutlivesItsCopy() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let blob = try f.put("bkt", "k")
        let other = try f.put("bkt", "other")
        #expect(try f.store.lookup(bucket: "bkt", key: "k").locations.map(\.checksum) == [nil])
        // A spill: the tier-1 placement carries the CRC-32C, which every location of the blob then shows.
        try f.store.addLocation(blob: blob, placement: BlobPlacement(node: f.n1, tier: .tier1, checksum: 0xDEAD_BEEF))
        var locations = try f.store.lookup(bucket: "bkt", key: "k").locations
        #expect(locations.map(\.tier) == [.tier1] && locations.map(\.checksum) == [0xDEAD_BEEF])
        #expect(try f.store.lookup(bucket: "bkt", key: "other").locations.map(\.checksum) == [nil])
        // Promoted back to tier 0: the checksum stays with the bytes.
        try f.store.addLocation(blob: blob, placement: BlobPlacement(node: f.n1, tier: .tier0))
        locations = try f.store.lookup(bucket: "bkt", key: "k").locations
        #expect(locations.map(\.tier) == [.tier0] && locations.map(\.checksum) == [0xDEAD_BEEF])

        // The node dies and comes back: its copies were withdrawn, the checksum was not; a file with other bytes
        // is refused, one with the same is taken.
        let again = f.store.register(registration("n1"), now: 10)
        #expect(try f.store.lookup(bucket: "bkt", key: "k").locations.isEmpty)
        let refused = gedsError {
            try f.store.addLocation(blob: blob, placement: BlobPlacement(node: again, tier: .tier1, checksum: 0xDEAD_BEEE))
        }
        #expect(refused?.code == .checksumMismatch)
        #expect(refused?.message.contains("checksum mismatch") == true && refused?.message.contains(blob.fileName) == true)
        #expect(try f.store.lookup(bucket: "bkt", key: "k").locations.isEmpty)
        try f.store.addLocation(blob: blob, placement: BlobPlacement(node: again, tier: .tier1, checksum: 0xDEAD_BEEF))
        #expect(try f.store.lookup(bucket: "bkt", key: "k").locations.map(\.checksum) == [0xDEAD_BEEF])
        try f.store.addLocation(blob: other, placement: BlobPlacement(node: again, tier: .tier1, checksum: 7))
        #expect(try f.store.lookup(bucket: "bkt", key: "other").locations.map(\.checksum) == [7])

        // A deleted blob's checksum goes with it: its record number, when reused, starts without one.
        try f.store.delete(bucket: "bkt", key: "k", now: 0)
        let next = try f.put("bkt", "next", node: again)
        #expect(next != blob)
        #expect(try f.store.lookup(bucket: "bkt", key: "next").locations.map(\.checksum) == [nil])
    }

    @Test func addLocationNeedsALiveNode() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let blob = try f.put("bkt", "k")
        #expect(gedsError { try f.store.addLocation(blob: blob, placement: BlobPlacement(node: 4242, tier: .tier0)) }?.code == .noSuchNode)
        let n2 = f.store.register(registration("n2", role: .daemon), now: 0)
        f.store.leave(node: n2)
        #expect(gedsError { try f.store.addLocation(blob: blob, placement: BlobPlacement(node: n2, tier: .tier0)) }?.code == .noSuchNode)
        #expect(try f.store.lookup(bucket: "bkt", key: "k").locations.map(\.holder) == ["n1"])
    }
}

@Suite struct LeaseTests {
    @Test func heartbeatsKeepANodeAlive() throws {
        var f = Fixture(lease: 1000)
        let n2 = f.store.register(registration("n2"), now: 0)
        try f.store.createBucket("bkt")
        let one = try f.put("bkt", "one")
        let two = try f.put("bkt", "two", node: n2)
        for now in stride(from: UInt64(500), through: 5000, by: 500) {
            _ = try f.store.heartbeat(node: f.n1, blobs: 1, bytes: 10, now: now)
            if now <= 1000 { _ = try f.store.heartbeat(node: n2, blobs: 1, bytes: 10, now: now) }
            let expired = f.store.expireLeases(now: now + 1)
            // n2 stopped beating at 1000; its lease runs out after 2000.
            #expect(expired == (now == 2000 ? ["n2"] : []), "at \(now)")
        }
        #expect(try f.store.lookup(bucket: "bkt", key: "one").locations.map(\.holder) == ["n1"])
        // The object stays listed but has no copy left.
        let lost = try f.store.lookup(bucket: "bkt", key: "two")
        #expect(lost.blob == two && lost.locations.isEmpty)
        #expect(try f.keys("bkt") == ["one", "two"])
        #expect(gedsError { _ = try f.store.heartbeat(node: n2, blobs: 0, bytes: 0, now: 5000) }?.code == .noSuchNode)
        #expect(f.store.listNodes().map { "\($0.name):\($0.alive)" } == ["n1:true", "n2:false"])
        #expect(f.store.listNodes().first?.blobs == 1 && f.store.listNodes().first?.bytes == 10)
        #expect(try f.store.lookup(bucket: "bkt", key: "one").blob == one)
    }

    @Test func leaseBoundaryIsInclusive() throws {
        var f = Fixture(lease: 1000)
        _ = try f.store.heartbeat(node: f.n1, blobs: 0, bytes: 0, now: 100)
        #expect(f.store.expireLeases(now: 1100) == [])
        #expect(f.store.expireLeases(now: 1101) == ["n1"])
        #expect(f.store.expireLeases(now: 99_999) == [])  // already expired
    }

    @Test func expiryWithdrawsLocationsAndAbortsPendingObjects() throws {
        var f = Fixture(lease: 1000)
        let n2 = f.store.register(registration("n2"), now: 0)
        try f.store.createBucket("bkt")
        let blob = try f.put("bkt", "k")
        try f.store.addLocation(blob: blob, placement: BlobPlacement(node: n2, tier: .tier0))
        let pending = try f.store.createObject(bucket: "bkt", key: "p", node: f.n1)
        _ = try f.store.heartbeat(node: n2, blobs: 0, bytes: 0, now: 1500)
        #expect(f.store.expireLeases(now: 2000) == ["n1"])
        #expect(try f.store.lookup(bucket: "bkt", key: "k").locations.map(\.holder) == ["n2"])
        #expect(gedsError { _ = try f.store.lookup(bucket: "bkt", key: "p") }?.code == .noSuchObject)
        #expect(gedsError {
            try f.store.seal(blob: pending, size: 1, metadata: [:], placement: BlobPlacement(node: f.n1, tier: .tier0), now: 1)
        }?.code == .noSuchObject)
        #expect(gedsError { _ = try f.store.heartbeat(node: f.n1, blobs: 0, bytes: 0, now: 2001) }?.code == .noSuchNode)
        #expect(gedsError { _ = try f.store.createObject(bucket: "bkt", key: "x", node: f.n1) }?.code == .noSuchNode)
        // The node comes back under a new index; its old index stays dead.
        let again = f.store.register(registration("n1"), now: 2100)
        #expect(again != f.n1)
        _ = try f.store.heartbeat(node: again, blobs: 0, bytes: 0, now: 2200)
        try f.store.addLocation(blob: blob, placement: BlobPlacement(node: again, tier: .tier0))
        #expect(try f.store.lookup(bucket: "bkt", key: "k").locations.map(\.holder).sorted() == ["n1", "n2"])
        #expect(gedsError { _ = try f.store.heartbeat(node: f.n1, blobs: 0, bytes: 0, now: 2200) }?.code == .noSuchNode)
    }

    @Test func registeringTheSameNameAgainRetiresTheOldSession() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let blob = try f.put("bkt", "k")
        let again = f.store.register(registration("n1"), now: 10)
        #expect(gedsError { _ = try f.store.heartbeat(node: f.n1, blobs: 0, bytes: 0, now: 11) }?.code == .noSuchNode)
        #expect(try f.store.lookup(bucket: "bkt", key: "k").locations.isEmpty)
        #expect(try f.store.heartbeat(node: again, blobs: 0, bytes: 0, now: 11) == [])
        try f.store.addLocation(blob: blob, placement: BlobPlacement(node: again, tier: .tier0))
        #expect(try f.store.lookup(bucket: "bkt", key: "k").locations.count == 1)
    }

    /// A drain is asked of a live gedsd by name, shown in `listNodes`, told with every heartbeat, and cleared with
    /// the reason when the node gives up; a task's own node and unknown names are refused.
    @Test func drainIsAskedShownAndGivenUp() throws {
        var f = Fixture()
        let daemon = f.store.register(registration("d", role: .daemon), now: 0)
        #expect(gedsError { try f.store.drain(nodeNamed: "n1") }?.code == .invalidArgument)
        #expect(gedsError { try f.store.drain(nodeNamed: "nope") }?.code == .noSuchNode)
        #expect(!f.store.isDraining(node: daemon))
        try f.store.drain(nodeNamed: "d")
        #expect(f.store.isDraining(node: daemon))
        #expect(f.store.listNodes().first { $0.name == "d" }?.draining == true)
        try f.store.drainFailed(node: daemon, reason: "no room")
        let shown = f.store.listNodes().first { $0.name == "d" }
        #expect(shown?.draining == false && shown?.drainFailure == "no room")
        try f.store.drain(nodeNamed: "d")  // asked again: the old failure goes
        #expect(f.store.listNodes().first { $0.name == "d" }?.drainFailure == nil)
        f.store.leave(node: daemon)
        #expect(gedsError { try f.store.drain(nodeNamed: "d") }?.code == .noSuchNode)
    }

    @Test func leave() throws {
        var f = Fixture()
        let daemon = f.store.register(registration("d", role: .daemon), now: 0)
        try f.store.createBucket("bkt")
        let a = try f.put("bkt", "a")
        let d = try f.put("bkt", "d", node: daemon)
        #expect(f.store.listNodes().map(\.name) == ["d", "n1"])

        f.store.leave(node: f.n1)
        // An embedded node is forgotten, a daemon stays listed as dead.
        #expect(f.store.listNodes().map(\.name) == ["d"])
        #expect(try f.store.lookup(bucket: "bkt", key: "a").locations.isEmpty)
        #expect(try f.store.lookup(bucket: "bkt", key: "a").blob == a)
        #expect(gedsError { _ = try f.store.heartbeat(node: f.n1, blobs: 0, bytes: 0, now: 1) }?.code == .noSuchNode)

        f.store.leave(node: daemon)
        #expect(f.store.listNodes().map { "\($0.name):\($0.alive):\($0.role)" } == ["d:false:daemon"])
        #expect(try f.store.lookup(bucket: "bkt", key: "d").locations.isEmpty)
        #expect(try f.store.lookup(bucket: "bkt", key: "d").blob == d)
        f.store.leave(node: 9999)  // unknown: harmless
        #expect(f.store.expireLeases(now: 1_000_000) == [])
    }
}
