import GedsCore
import GedsMDS
import GedsWire
import Testing
import GedsTestSupport


func registration(_ name: String, role: NodeRole = .embedded, port: Int = 4000) -> NodeRegistration {
    NodeRegistration(name: name, hostID: "host-of-\(name)", role: role, tcp: Endpoint(host: "10.0.0.1", port: port),
                     tier0Directory: "/dev/shm/geds-\(name)")
}

/// A store with one live node, `n1`, and helpers that write whole objects as a node would.
struct Fixture {
    var store: MetadataStore
    var n1: UInt32

    init(lease: UInt64 = 1000) {
        store = MetadataStore(leaseMilliseconds: lease, epoch: 3)
        n1 = store.register(registration("n1"), now: 0)
    }

    @discardableResult
    mutating func put(_ bucket: String, _ key: String, size: UInt64 = 10, metadata: [String: String] = [:],
                      node: UInt32? = nil, now: UInt64 = 1) throws -> BlobID {
        let owner = node ?? n1
        let blob = try store.createObject(bucket: bucket, key: key, node: owner)
        try store.seal(blob: blob, size: size, metadata: metadata, placement: BlobPlacement(node: owner, tier: .tier0), now: now)
        return blob
    }

    /// What the MDS tells a node to drop on its next heartbeat.
    mutating func drops(_ node: UInt32? = nil, now: UInt64 = 1) throws -> Set<BlobID> {
        Set(try store.heartbeat(node: node ?? n1, blobs: 0, bytes: 0, now: now))
    }

    func keys(_ bucket: String) throws -> [String] {
        var keys: [String] = []
        var after = ""
        while true {
            let page = try store.list(bucket: bucket, prefix: "", delimiter: "", startAfter: after, maxKeys: 1000)
            keys += page.objects.map(\.key)
            guard let next = page.nextStartAfter else { return keys }
            after = next
        }
    }
}
