import GedsCore
import GedsMDS
import GedsWire
import NIOCore
import Testing

@Suite struct HeartbeatDropTests {
    /// Deleting more objects than one heartbeat may carry: the drops come over several heartbeats, each
    /// within the bound, and together they name every deleted blob exactly once.
    @Test func dropsAreSpreadOverHeartbeats() throws {
        var f = Fixture()
        try f.store.createBucket("bkt")
        let count = MetadataStore.maximumDropsPerHeartbeat + 1000
        var blobs = Set<BlobID>()
        for index in 0..<count { blobs.insert(try f.put("bkt", "k\(index)")) }
        #expect(try f.drops().isEmpty)
        #expect(try f.store.delete(bucket: "bkt", prefix: "k") == UInt64(count))
        let first = try f.store.heartbeat(node: f.n1, blobs: 0, bytes: 0, now: 2)
        let second = try f.store.heartbeat(node: f.n1, blobs: 0, bytes: 0, now: 3)
        let third = try f.store.heartbeat(node: f.n1, blobs: 0, bytes: 0, now: 4)
        #expect(first.count == MetadataStore.maximumDropsPerHeartbeat)
        #expect(second.count == 1000)
        #expect(third.isEmpty)
        #expect(Set(first + second) == blobs)
        // The reply carrying the largest batch fits a frame.
        var payload = ByteBuffer()
        Reply.heartbeatAck(drop: first).encode(into: &payload)
        #expect(payload.readableBytes <= Int(WireLimits.maximumMessagePayload))
    }
}
