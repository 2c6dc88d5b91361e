import GedsCore
import GedsWire
import GedsTestSupport


enum Samples {
    static let longString = String(repeating: "x", count: WireLimits.maximumString)
    static let unicode = "ключ/日本語/🎉/é"

    static let locationPlain = Location.node(NodeCopy(node: "node-a", hostID: "host-a", tier: .tier0,
                                                      tcp: Endpoint(host: "10.0.0.1", port: 4000), rdma: nil,
                                                      path: "/dev/shm/geds-a/00000000000000ff"))
    static let locationRDMA = Location.node(NodeCopy(node: "ñode-b", hostID: "", tier: .tier1,
                                                     tcp: Endpoint(host: "::1", port: 65535),
                                                     rdma: RDMAAccess(endpoint: Endpoint(host: "192.168.1.7", port: 0),
                                                                      address: .max, rkey: .max),
                                                     path: "", checksum: 0x1234_5678))
    static let locationPacked = Location.node(NodeCopy(node: "node-c", hostID: "host-c", tier: .tier0,
                                                       tcp: Endpoint(host: "10.0.0.3", port: 4000),
                                                       rdma: RDMAAccess(endpoint: Endpoint(host: "10.0.0.3", port: 4000),
                                                                        address: 0x7F00_0000_1010, rkey: 3),
                                                       path: "/dev/shm/geds-c/slab-00000001", offset: 0x1010))
    static let locationS3 = Location.s3(S3ObjectReference(endpoint: "http://h:1", bucket: "b", key: longString,
                                                          region: unicode))

    static let requests: [Request] = [
        .registerNode(NodeRegistration(name: "node-a", hostID: "boot-id-1", role: .embedded,
                                       tcp: Endpoint(host: "127.0.0.1", port: 4381), tier0Directory: "/dev/shm/geds-a")),
        .registerNode(NodeRegistration(name: "", hostID: "", role: .daemon,
                                       tcp: Endpoint(host: "::", port: 0), tier0Directory: "")),
        .registerNode(NodeRegistration(name: unicode, hostID: longString, role: .daemon,
                                       tcp: Endpoint(host: "fe80::1%eth0", port: 65535), tier0Directory: "/tmp/ü")),
        // Nodes that offer RDMA too.
        .registerNode(NodeRegistration(name: "node-r", hostID: "boot-id-2", role: .daemon,
                                       tcp: Endpoint(host: "10.0.0.2", port: 4382), tier0Directory: "/dev/shm/geds-r",
                                       rdma: Endpoint(host: "10.0.0.2", port: 4382))),
        .registerNode(NodeRegistration(name: "", hostID: "", role: .embedded, tcp: Endpoint(host: "", port: 0),
                                       tier0Directory: "", rdma: Endpoint(host: longString, port: 65535))),
        .heartbeat(node: 1, blobs: 0, bytes: 0),
        .heartbeat(node: .max, blobs: .max, bytes: .max),
        .heartbeat(node: 2, blobs: 1, bytes: 4096, room: 1 << 30),
        .leave(node: 0),
        .leave(node: 77),
        .listNodes,
        .createBucket("my-bucket"),
        .createBucket(""),
        .deleteBucket("my-bucket", force: false),
        .deleteBucket("other.bucket", force: true),
        .listBuckets,
        .createObject(bucket: "b", key: "a/b/c", node: 3),
        .createObject(bucket: "b", key: "x", node: 3, exclusive: true),
        .createObject(bucket: "bucket", key: String(repeating: "k", count: 1024), node: .max),
        .createObject(bucket: "b", key: "r", node: 3, exclusive: false, replicas: 3),
        .createObject(bucket: "b", key: "r", node: 3, exclusive: true, replicas: .max),
        .createObject(bucket: "b", key: "r", node: 3, reserved: 0x0001_0000_0000_0401),
        .reserveBlobs(node: 3, count: 1024),
        .reserveBlobs(node: .max, count: .max),
        .sealNewObject(blob: 5, bucket: "b", key: "k", size: 0, metadata: [:], placement: BlobPlacement(node: 1, tier: .tier0)),
        .sealNewObject(blob: .max, bucket: "b", key: unicode, size: 3, metadata: ["m": unicode],
                       placement: BlobPlacement(node: 2, tier: .tier0, rdmaAddress: 0x1000, rkey: 7), contents: [1, 2, 3]),
        .sealObject(blob: 1, size: 0, metadata: [:], placement: BlobPlacement(node: 1, tier: .tier0)),
        .sealObject(blob: 2, size: 3, metadata: [:], placement: BlobPlacement(node: 1, tier: .tier0), contents: [1, 2, 3]),
        .sealObject(blob: .max, size: .max, metadata: ["content-type": "text/plain", "x": "", "ü": unicode],
                    placement: BlobPlacement(node: 9, tier: .tier1, rdmaAddress: .max, rkey: .max)),
        .sealObject(blob: 0x0001_0000_0000_0001, size: 4097, metadata: ["big": String(repeating: "v", count: 2000)],
                    placement: BlobPlacement(node: 0, tier: .s3, rdmaAddress: 0x7F00_0000_0000, rkey: 12)),
        .abortObject(blob: 0),
        .abortObject(blob: .max),
        .lookup(bucket: "bucket", key: "key"),
        .lookup(bucket: "", key: unicode),
        .list(bucket: "bucket", prefix: "", delimiter: "", startAfter: "", maxKeys: 0),
        .list(bucket: "bucket", prefix: "dir/", delimiter: "/", startAfter: "dir/a", maxKeys: 1000),
        .list(bucket: "b", prefix: unicode, delimiter: "::", startAfter: longString, maxKeys: .max),
        .deleteObject(bucket: "bucket", key: "k"),
        .deletePrefix(bucket: "bucket", prefix: ""),
        .deletePrefix(bucket: "bucket", prefix: "logs/2024/"),
        .rename(fromBucket: "a-bucket", fromKey: "old", toBucket: "b-bucket", toKey: "new"),
        .rename(fromBucket: "", fromKey: "", toBucket: "", toKey: ""),
        .copy(fromBucket: "a-bucket", fromKey: "src", toBucket: "a-bucket", toKey: unicode),
        .copy(fromBucket: "x", fromKey: longString, toBucket: "y", toKey: "z"),
        .setMetadata(bucket: "bucket", key: "key", metadata: [:]),
        .setMetadata(bucket: "bucket", key: "key", metadata: ["a": "1", "b": "2", "c": "3", "Z": "", "m.n_o-p": unicode]),
        .addLocation(blob: 5, placement: BlobPlacement(node: 2, tier: .tier0)),
        .addLocation(blob: .max, placement: BlobPlacement(node: .max, tier: .tier1, rdmaAddress: 1, rkey: 2)),
        .addLocation(blob: 9, placement: BlobPlacement(node: 3, tier: .tier1, checksum: 0)),
        .addLocation(blob: 9, placement: BlobPlacement(node: 3, tier: .tier1, rdmaAddress: 1, rkey: 2, checksum: .max)),
        .addLocation(blob: 10, placement: BlobPlacement(node: 3, tier: .tier0, rdmaAddress: 1, rkey: 2,
                                                        slot: SlabSlot(slab: 7, offset: .max))),
        .removeLocation(blob: 5, node: 2),
        .removeLocation(blob: 0, node: 0),
        .readBlob(blob: 5, offset: 0, length: 0),
        .readBlob(blob: .max, offset: .max, length: .max),
        .pullBlob(blob: 5, size: 100, source: locationPlain),
        .pullBlob(blob: .max, size: .max, source: locationRDMA),
        .pullBlob(blob: 3, size: 1024, source: locationPacked),
        .pullBlob(blob: 0, size: 0, source: locationS3),
        .setBucketStorage(bucket: "b", storage: storage),
        .setBucketStorage(bucket: unicode, storage: nil),
        .bucketStorage(bucket: "b"),
        .addS3Copy(blob: .max),
        .s3Assignment(blob: 0),
        .adoptS3Object(bucket: "b", key: unicode, size: .max, metadata: [:]),
        .adoptS3Object(bucket: unicode, key: "k", size: 0, metadata: ["color": "blue", "e": ""]),
        .persistBlob(blob: 7, persistency: .writeBack, object: s3Object),
        .persistBlob(blob: .max, persistency: .tier1, object: nil),
        .flush(timeoutMilliseconds: 0),
        .flush(timeoutMilliseconds: .max),
        .claimS3Deletions(bucket: "b", keys: []),
        .claimS3Deletions(bucket: unicode, keys: ["a", unicode, longString]),
        .s3Deleted([]),
        .s3Deleted([s3Object, s3Object]),
        .abandonS3Upload(s3Object),
        .subscribe(scope: .bucket("my-bucket"), after: nil),
        .subscribe(scope: .prefix(unicode, in: "b"), after: 0),
        .subscribe(scope: .key(longString, in: longString), after: .max),
        .waitForObject(bucket: "b", key: unicode, timeoutMilliseconds: 0),
        .waitForObject(bucket: longString, key: longString, timeoutMilliseconds: .max),
        .drainNode(name: "node-a"),
        .drainNode(name: unicode),
        .drainFailed(node: 3, reason: "no room: " + unicode),
        .authenticate(clientNonce: Array(0..<32)),
        .prove(proof: [UInt8](repeating: 0xFF, count: 32)),
        .setBucketReplicas(bucket: "b", replicas: 2),
        .setBucketReplicas(bucket: unicode, replicas: .max),
        .bucketReplicas(bucket: "b"),
        .placeCopies(blob: 7, holder: 0, leaving: 0),
        .placeCopies(blob: .max, holder: .max, leaving: 3),
    ]

    static let s3Object = S3ObjectReference(endpoint: "http://127.0.0.1:4569", bucket: "s3-bucket", key: "run/" + unicode,
                                            region: "eu-west-1")
    static let storage = BucketStorage(endpoint: "https://s3.example", bucket: "b", prefix: longString, region: "",
                                       persistency: .writeThrough)

    static let replies: [Reply] = {
        var replies: [Reply] = [
            .ok,
            .failure(GedsError(.internal, "")),
            .failure(GedsError(.noSuchObject, "no such object: b/\(unicode)")),
            .nodeRegistered(node: 1, leaseMilliseconds: 5000, inlineLimit: 0),
            .nodeRegistered(node: .max, leaseMilliseconds: .max, inlineLimit: .max),
            .heartbeatAck(drop: []),
            .heartbeatAck(drop: [1]),
            .heartbeatAck(drop: [2], drain: true),
            .heartbeatAck(drop: [], replicate: [ReplicationOrder(blob: 9, size: 1 << 28, source: locationPlain)]),
            .heartbeatAck(drop: [3], drain: true, replicate: [ReplicationOrder(blob: .max, size: .max, source: locationRDMA),
                                                              ReplicationOrder(blob: 0, size: 0, source: .s3(s3Object))]),
            .heartbeatAck(drop: Array(0..<2000).map { BlobID(UInt64($0) * 0x1_0000_0001) } + [.max]),
            .buckets([]),
            .buckets(["a-bucket", "b.bucket", "", unicode, longString]),
            .created(blob: 0),
            .created(blob: .max),
            .object(ObjectInfo(bucket: "b", key: "k", blob: 1, size: 0, sealed: false, modified: 0,
                               metadata: [:], locations: [])),
            .object(ObjectInfo(bucket: "b", key: "r", blob: 2, size: 10, sealed: true, modified: 0,
                               metadata: [:], locations: [locationPlain, locationRDMA], wantedCopies: 3)),
            .object(ObjectInfo(bucket: "bucket", key: unicode, blob: .max, size: .max, sealed: true,
                               modified: 1_700_000_000_000, metadata: ["content-type": "x/y", "e": ""],
                               locations: [locationPlain, locationRDMA, locationS3, locationPacked])),
            .object(ObjectInfo(bucket: "b", key: "small", blob: 7, size: 5, sealed: true, modified: 1,
                               metadata: [:], locations: [locationPlain], contents: [0, 1, 2, 3, 255])),
            .page(ListPage(objects: [], commonPrefixes: [], nextStartAfter: nil)),
            .page(ListPage(objects: [], commonPrefixes: [], nextStartAfter: "")),
            .page(ListPage(objects: [ListEntry(key: "a", size: 0, modified: 0),
                                     ListEntry(key: unicode, size: .max, modified: .max)],
                           commonPrefixes: ["dir/", "other/", ""], nextStartAfter: "other/")),
            .page(ListPage(objects: (0..<1000).map { ListEntry(key: "key-\($0)", size: UInt64($0), modified: UInt64($0) * 7) },
                           commonPrefixes: [], nextStartAfter: "key-999")),
            .count(0),
            .count(.max),
            .nodes([]),
            .nodes([NodeInfo(name: "a", hostID: "h1", role: .embedded, tcp: Endpoint(host: "127.0.0.1", port: 1),
                             alive: true, blobs: 0, bytes: 0),
                    NodeInfo(name: unicode, hostID: "", role: .daemon, tcp: Endpoint(host: "::1", port: 65535),
                             alive: false, blobs: .max, bytes: .max),
                    NodeInfo(name: "r", hostID: "h2", role: .daemon, tcp: Endpoint(host: "10.0.0.2", port: 4382),
                             rdma: Endpoint(host: "fe80::2", port: 0), alive: true, blobs: 3, bytes: 4096),
                    NodeInfo(name: "d", hostID: "h3", role: .daemon, tcp: Endpoint(host: "10.0.0.3", port: 1), alive: true,
                             blobs: 1, bytes: 1, draining: true),
                    NodeInfo(name: "f", hostID: "h3", role: .daemon, tcp: Endpoint(host: "10.0.0.3", port: 2), alive: true,
                             blobs: 1, bytes: 1, drainFailure: unicode)]),
            .nodes([NodeInfo(name: "", hostID: "", role: .embedded, tcp: Endpoint(host: "", port: 0),
                             rdma: Endpoint(host: "", port: 0), alive: false, blobs: 0, bytes: 0)]),
            .stream(length: 0),
            .stream(length: .max),
            .s3Assignment(S3Assignment(object: s3Object, persistency: .ephemeral)),
            .s3Assignment(S3Assignment(object: s3Object, persistency: .writeBack, metadata: ["content-type": "x/y"],
                                       stored: true)),
            .storage(nil),
            .storage(storage),
            .s3Deletions(deleted: 0, objects: []),
            .s3Deletions(deleted: .max, objects: [s3Object]),
            .s3Move(blob: .max, from: s3Object, to: s3Object, deleteSource: true),
            .s3Move(blob: 0, from: s3Object, to: s3Object, deleteSource: false),
            .subscribed(revision: 0),
            .subscribed(revision: .max),
            .events([]),
            .events(NamespaceEvent.Kind.allCases.map { kind in
                NamespaceEvent(revision: UInt64(kind.rawValue), kind: kind, bucket: "bucket", key: kind == .bucketCreated ? "" : unicode,
                               source: kind == .renamed || kind == .copied ? ObjectName(bucket: longString, key: "") : nil)
            }),
            .progress(revision: 42),
            .subscriptionEnded(.compacted(oldest: 1)),
            .subscriptionEnded(.tooSlow(lastDelivered: .max)),
            .challenge(serverNonce: Array(32..<64), proof: [UInt8](repeating: 0, count: 32)),
        ]
        // Every error code crosses the wire unchanged.
        var code: UInt16 = 1
        while let known = GedsError.Code(rawValue: code) {
            replies.append(.failure(GedsError(known, "error \(code)")))
            code += 1
        }
        return replies
    }()
}

/// The case of a request, by name; the switch is exhaustive, so a new case must be added here (and then to
/// the samples, or `everyCaseIsSampled` fails).
func caseName(_ request: Request) -> String {
    switch request {
    case .registerNode: "registerNode"
    case .heartbeat: "heartbeat"
    case .leave: "leave"
    case .listNodes: "listNodes"
    case .createBucket: "createBucket"
    case .deleteBucket: "deleteBucket"
    case .listBuckets: "listBuckets"
    case .createObject: "createObject"
    case .sealObject: "sealObject"
    case .abortObject: "abortObject"
    case .lookup: "lookup"
    case .list: "list"
    case .deleteObject: "deleteObject"
    case .deletePrefix: "deletePrefix"
    case .rename: "rename"
    case .copy: "copy"
    case .setMetadata: "setMetadata"
    case .addLocation: "addLocation"
    case .removeLocation: "removeLocation"
    case .readBlob: "readBlob"
    case .pullBlob: "pullBlob"
    case .setBucketStorage: "setBucketStorage"
    case .bucketStorage: "bucketStorage"
    case .addS3Copy: "addS3Copy"
    case .s3Assignment: "s3Assignment"
    case .adoptS3Object: "adoptS3Object"
    case .persistBlob: "persistBlob"
    case .flush: "flush"
    case .claimS3Deletions: "claimS3Deletions"
    case .s3Deleted: "s3Deleted"
    case .abandonS3Upload: "abandonS3Upload"
    case .subscribe: "subscribe"
    case .drainNode: "drainNode"
    case .drainFailed: "drainFailed"
    case .authenticate: "authenticate"
    case .prove: "prove"
    case .setBucketReplicas: "setBucketReplicas"
    case .bucketReplicas: "bucketReplicas"
    case .placeCopies: "placeCopies"
    case .reserveBlobs: "reserveBlobs"
    case .sealNewObject: "sealNewObject"
    case .waitForObject: "waitForObject"
    }
}

let allRequestCases: Set<String> = [
    "registerNode", "heartbeat", "leave", "listNodes", "createBucket", "deleteBucket", "listBuckets", "createObject",
    "sealObject", "abortObject", "lookup", "list", "deleteObject", "deletePrefix", "rename", "copy", "setMetadata",
    "addLocation", "removeLocation", "readBlob", "pullBlob",
    "setBucketStorage", "bucketStorage", "addS3Copy", "s3Assignment", "adoptS3Object", "persistBlob", "flush",
    "claimS3Deletions", "s3Deleted", "abandonS3Upload", "subscribe", "drainNode", "drainFailed", "authenticate",
    "prove", "setBucketReplicas", "bucketReplicas", "placeCopies", "reserveBlobs", "sealNewObject", "waitForObject",
]

func caseName(_ reply: Reply) -> String {
    switch reply {
    case .ok: "ok"
    case .failure: "failure"
    case .nodeRegistered: "nodeRegistered"
    case .heartbeatAck: "heartbeatAck"
    case .buckets: "buckets"
    case .created: "created"
    case .object: "object"
    case .page: "page"
    case .count: "count"
    case .nodes: "nodes"
    case .stream: "stream"
    case .s3Assignment: "s3Assignment"
    case .storage: "storage"
    case .s3Deletions: "s3Deletions"
    case .s3Move: "s3Move"
    case .subscribed: "subscribed"
    case .events: "events"
    case .progress: "progress"
    case .subscriptionEnded: "subscriptionEnded"
    case .challenge: "challenge"
    }
}

let allReplyCases: Set<String> = [
    "ok", "failure", "nodeRegistered", "heartbeatAck", "buckets", "created", "object", "page", "count", "nodes", "stream",
    "s3Assignment", "storage", "s3Deletions", "s3Move", "subscribed", "events", "progress", "subscriptionEnded",
    "challenge",
]

extension BlobID {
    /// The largest id, to check that all 64 bits travel.
    static let max = BlobID(UInt64.max)
}
