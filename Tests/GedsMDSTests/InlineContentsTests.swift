import GedsTestSupport
import GedsCore
import GedsMDS
import GedsWire
import Testing

/// Small objects' bytes kept by the MDS with their metadata: within the limit and the budget only, freed with
/// the blob, carried by copies, and never served for an object whose copies are all gone.
@Suite struct InlineContentsTests {
    private func seal(_ store: inout MetadataStore, _ node: UInt32, _ key: String, _ bytes: [UInt8]) throws -> BlobID {
        let blob = try store.createObject(bucket: "bkt", key: key, node: node)
        try store.seal(blob: blob, size: UInt64(bytes.count), metadata: [:], placement: BlobPlacement(node: node, tier: .tier0),
                       contents: bytes, now: 1)
        return blob
    }

    @Test func keptWithinLimitAndBudget() throws {
        var store = MetadataStore(leaseMilliseconds: 1000, epoch: 3, inlineLimit: 8, inlineBudget: 20)
        let node = store.register(registration("n1"), now: 0)
        try store.createBucket("bkt")
        let small = Array("12345678".utf8)
        _ = try seal(&store, node, "small", small)
        #expect(try store.lookup(bucket: "bkt", key: "small").contents == small)
        // Over the limit: the node's copy serves it.
        _ = try seal(&store, node, "large", Array("123456789".utf8))
        #expect(try store.lookup(bucket: "bkt", key: "large").contents == nil)
        // The budget (20 bytes) holds two 8-byte objects, not a third.
        _ = try seal(&store, node, "second", small)
        _ = try seal(&store, node, "third", small)
        #expect(try store.lookup(bucket: "bkt", key: "second").contents == small)
        #expect(try store.lookup(bucket: "bkt", key: "third").contents == nil)
        // Deleting gives the bytes back to the budget.
        _ = try store.delete(bucket: "bkt", key: "small", now: 2)
        _ = try seal(&store, node, "fourth", small)
        #expect(try store.lookup(bucket: "bkt", key: "fourth").contents == small)
    }

    @Test func contentsThatDisagreeWithTheSizeAreNotKept() throws {
        var store = MetadataStore(leaseMilliseconds: 1000, epoch: 3)
        let node = store.register(registration("n1"), now: 0)
        try store.createBucket("bkt")
        let blob = try store.createObject(bucket: "bkt", key: "k", node: node)
        try store.seal(blob: blob, size: 4, metadata: [:], placement: BlobPlacement(node: node, tier: .tier0),
                       contents: [1, 2, 3], now: 1)
        #expect(try store.lookup(bucket: "bkt", key: "k").contents == nil)
    }

    @Test func copiesAndRenamesKeepThemLostObjectsDoNot() throws {
        var store = MetadataStore(leaseMilliseconds: 1000, epoch: 3)
        let node = store.register(registration("n1"), now: 0)
        try store.createBucket("bkt")
        let bytes: [UInt8] = [9, 8, 7]
        _ = try seal(&store, node, "k", bytes)
        _ = try store.copy(from: ("bkt", "k"), to: ("bkt", "copy"), now: 2)
        _ = try store.rename(from: ("bkt", "k"), to: ("bkt", "moved"), now: 3)
        #expect(try store.lookup(bucket: "bkt", key: "copy").contents == bytes)
        #expect(try store.lookup(bucket: "bkt", key: "moved").contents == bytes)
        // The only node leaves: the object has no copy, and the MDS does not pretend to be one.
        store.leave(node: node)
        let lost = try store.lookup(bucket: "bkt", key: "moved")
        #expect(lost.locations.isEmpty && lost.contents == nil)
    }
}
