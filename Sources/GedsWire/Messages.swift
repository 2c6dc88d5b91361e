import GedsCore

/// What a node announces about itself when it joins.
public struct NodeRegistration: Sendable, Equatable {
    public var name: String
    public var hostID: String
    public var role: NodeRole
    public var tcp: Endpoint
    /// The node's tier-0 folder; a location's path is this folder plus the blob's file name.
    public var tier0Directory: String
    /// Where the node takes RDMA connections; nil when it offers TCP only (no device, or `--transport tcp`).
    public var rdma: Endpoint?

    public init(name: String, hostID: String, role: NodeRole, tcp: Endpoint, tier0Directory: String,
                rdma: Endpoint? = nil) {
        self.name = name
        self.hostID = hostID
        self.role = role
        self.tcp = tcp
        self.tier0Directory = tier0Directory
        self.rdma = rdma
    }
}

/// The compact part of a location that a node publishes; the MDS adds the node's endpoints and folder.
public struct BlobPlacement: Sendable, Equatable {
    public var node: UInt32
    public var tier: Tier
    public var rdmaAddress: UInt64
    /// 0 when the copy is not registered for RDMA.
    public var rkey: UInt32
    /// The CRC-32C of the blob's bytes, as the node computed it writing a tier-1 copy (nil for other copies):
    /// the MDS keeps it, so a tier-1 file can be checked against it after the node restarts.
    public var checksum: UInt32?
    /// Set for a tier-0 copy packed into a slab file: the MDS names that file and offset in the location.
    public var slot: SlabSlot?

    public init(node: UInt32, tier: Tier, rdmaAddress: UInt64 = 0, rkey: UInt32 = 0, checksum: UInt32? = nil,
                slot: SlabSlot? = nil) {
        self.node = node
        self.tier = tier
        self.rdmaAddress = rdmaAddress
        self.rkey = rkey
        self.checksum = checksum
        self.slot = slot
    }
}

/// A copy the MDS asks a node to make (re-replication): pull the blob from `source` and publish it.
public struct ReplicationOrder: Sendable, Equatable {
    public var blob: BlobID
    public var size: UInt64
    public var source: Location

    public init(blob: BlobID, size: UInt64, source: Location) {
        self.blob = blob
        self.size = size
        self.source = source
    }
}

public enum Request: Sendable, Equatable {
    // Nodes and leases (MDS).
    case registerNode(NodeRegistration)
    /// `room`: the bytes the node's tier 0 can still take (`UInt64.max`: unknown), where new copies go first.
    case heartbeat(node: UInt32, blobs: UInt64, bytes: UInt64, room: UInt64 = .max)
    /// A clean shutdown: the node's copies are withdrawn now instead of when its lease runs out.
    case leave(node: UInt32)
    case listNodes
    // Buckets (MDS).
    case createBucket(String)
    case deleteBucket(String, force: Bool)
    case listBuckets
    // Objects (MDS).
    /// `replicas`: the object's replication factor (0: its bucket's). `reserved`: a blob id the node reserved with
    /// `reserveBlobs` (0: the MDS picks one); answered `created`.
    case createObject(bucket: String, key: String, node: UInt32, exclusive: Bool = false, replicas: UInt8 = 0, reserved: BlobID = 0)
    /// Blob ids for objects the node creates on its own, without a round trip each (see `sealNewObject`): answered
    /// `created` with the first of `count` consecutive ids, this node's alone until the MDS restarts.
    case reserveBlobs(node: UInt32, count: UInt32)
    /// Creates and seals in one step an object the node created on its own under a reserved blob id (`placement`'s
    /// node): answered as `sealObject` is. When the object wants more copies than one (its bucket's factor), it is
    /// only created: answered `created`, for the node to have its copies placed (`placeCopies`) and seal it then.
    case sealNewObject(blob: BlobID, bucket: String, key: String, size: UInt64, metadata: [String: String],
                       placement: BlobPlacement, contents: [UInt8]? = nil)
    /// `contents`: the object's bytes for the MDS to keep inline (only when `size` is within the announced limit).
    case sealObject(blob: BlobID, size: UInt64, metadata: [String: String], placement: BlobPlacement, contents: [UInt8]? = nil)
    case abortObject(blob: BlobID)
    case lookup(bucket: String, key: String)
    case list(bucket: String, prefix: String, delimiter: String, startAfter: String, maxKeys: UInt32)
    case deleteObject(bucket: String, key: String)
    case deletePrefix(bucket: String, prefix: String)
    case rename(fromBucket: String, fromKey: String, toBucket: String, toKey: String)
    case copy(fromBucket: String, fromKey: String, toBucket: String, toKey: String)
    case setMetadata(bucket: String, key: String, metadata: [String: String])
    case addLocation(blob: BlobID, placement: BlobPlacement)
    case removeLocation(blob: BlobID, node: UInt32)
    // Object bytes (node to node).
    case readBlob(blob: BlobID, offset: UInt64, length: UInt64)
    /// Asks a node to fetch a blob from `source` and become its owner (relocation).
    case pullBlob(blob: BlobID, size: UInt64, source: Location)
    // S3 persistence.
    /// Sets (or with nil removes) a bucket's S3 store; creates the bucket when it does not exist (MDS).
    case setBucketStorage(bucket: String, storage: BucketStorage?)
    /// A bucket's S3 store (MDS); answered `storage`.
    case bucketStorage(bucket: String)
    /// The blob's S3 copy is in place: it becomes a location (MDS).
    case addS3Copy(blob: BlobID)
    /// Where the blob's S3 copy goes (MDS); answered `s3Assignment`, or `invalidArgument` when its bucket has no S3 store.
    case s3Assignment(blob: BlobID)
    /// Binds a key that exists only in the bucket's S3 store to a new blob whose one copy is that S3 object, with
    /// the S3 object's `x-amz-meta-*` as its metadata, unless the key exists meanwhile (MDS); answered `object`.
    case adoptS3Object(bucket: String, key: String, size: UInt64, metadata: [String: String])
    /// Asks the node holding a just-sealed blob to make it durable as `persistency` says (node): answered once
    /// done for `tier1` and `writeThrough`, once queued for `writeBack`.
    case persistBlob(blob: BlobID, persistency: Persistency, object: S3ObjectReference?)
    /// Answered once every write-back upload queued on the node is done, or `timedOut` after the time given (node).
    case flush(timeoutMilliseconds: UInt64)
    /// Orders the deletion of the S3 objects of these keys that only the bucket's S3 store has (MDS): answered
    /// `s3Deletions` with the objects the caller must delete, then confirm with `s3Deleted`.
    case claimS3Deletions(bucket: String, keys: [String])
    /// The caller put a blob's bytes in this S3 object, and then the blob turned out deleted (MDS): answered
    /// `s3Deletions` with the object when no newer blob holds it, for the caller to delete and confirm.
    case abandonS3Upload(S3ObjectReference)
    /// The caller deleted these S3 objects, as ordered by `s3Deletions`: uploads to them may go ahead (MDS).
    case s3Deleted([S3ObjectReference])
    // Events (MDS).
    /// Opens a subscription on this connection, which then carries only it: answered `subscribed` (the current
    /// revision), then `events` in revision order (those after `after` from the history first, when given, then
    /// live ones), `progress` when idle, until the connection closes or `subscriptionEnded`. All these replies
    /// carry the id of this request.
    case subscribe(scope: EventScope, after: UInt64?)
    /// Answered `object` once the key exists sealed (at once when it does; else when a change commits it: a seal,
    /// a rename or a copy to it), or `timedOut` after `timeoutMilliseconds`. A long poll on a multiplexed
    /// connection, which meanwhile carries other calls.
    case waitForObject(bucket: String, key: String, timeoutMilliseconds: UInt32)
    // Drain (MDS).
    /// Asks the live node `name` to move its copies to other nodes and leave; it learns so with its next
    /// heartbeat (`heartbeatAck`'s `drain`) and no new objects are sent to it meanwhile.
    case drainNode(name: String)
    /// The node's drain stopped short (no room elsewhere, no other node): it keeps serving, no longer draining.
    case drainFailed(node: UInt32, reason: String)
    // Replicas (MDS).
    /// Sets the replication factor of the objects sealed in a bucket from now on (1 to `Replicas.maximum`).
    case setBucketReplicas(bucket: String, replicas: UInt8)
    /// A bucket's replication factor; answered `count`.
    case bucketReplicas(bucket: String)
    /// The nodes that should take the copies a blob still lacks, each on a host that holds none, fewest bytes held
    /// first; answered `nodes` (exactly as many as lack), or `noSuchNode` when too few distinct hosts have a live gedsd.
    /// `holder`: a node that keeps a copy not published yet (the sealing node's own; 0: none); `leaving`: a node
    /// whose copy does not count (a drain moves it away; 0: none).
    case placeCopies(blob: BlobID, holder: UInt32, leaving: UInt32)
    // Authentication (every port of a deployment with a token; the carrier answers these, never the service).
    /// Opens the handshake with the client's fresh nonce (`HandshakeSizes.nonce` bytes): answered `challenge`.
    case authenticate(clientNonce: [UInt8])
    /// The client's HMAC-SHA-256 over both nonces with the token: answered `ok`, or a failure and the connection
    /// closed.
    case prove(proof: [UInt8])
}

/// The fixed sizes of the handshake's fields: nonces and HMAC-SHA-256 proofs alike are 32 bytes.
public enum HandshakeSizes {
    public static let nonce = 32
    public static let proof = 32
}

public enum Reply: Sendable, Equatable {
    case ok
    case failure(GedsError)
    /// `inlineLimit`: the largest object whose bytes the MDS takes with its seal (0: none).
    case nodeRegistered(node: UInt32, leaseMilliseconds: UInt32, inlineLimit: UInt32)
    /// Blobs the MDS no longer knows and the node must drop (after their locations were withdrawn).
    /// `replicate`: copies the node is to pull and publish (re-replication, rate-limited by the MDS).
    case heartbeatAck(drop: [BlobID], drain: Bool = false, replicate: [ReplicationOrder] = [])
    case buckets([String])
    case created(blob: BlobID)
    case object(ObjectInfo)
    case page(ListPage)
    case count(UInt64)
    case nodes([NodeInfo])
    /// `length` bytes follow in data frames with the same request id.
    case stream(length: UInt64)
    /// A seal into a bucket with an S3 store, or an `s3Assignment` request: where the blob's S3 copy goes.
    case s3Assignment(S3Assignment)
    case storage(BucketStorage?)
    /// `deleteObject` in a bucket with an S3 store (`deleted`: keys removed from GEDS), or `claimS3Deletions`: S3
    /// objects the caller must delete now and then confirm with `s3Deleted`.
    case s3Deletions(deleted: UInt64, objects: [S3ObjectReference])
    /// A `rename` or `copy` whose object is in S3 already: the caller copies `from` to `to` in S3, reports the copy
    /// (`addS3Copy`), deletes `from` when `deleteSource`, and then confirms both with `s3Deleted`.
    case s3Move(blob: BlobID, from: S3ObjectReference, to: S3ObjectReference, deleteSource: Bool)
    /// A subscription is open; `revision` is the namespace's revision when it began.
    case subscribed(revision: UInt64)
    /// Events of a subscription, in revision order (one frame may carry several).
    case events([NamespaceEvent])
    /// The subscription has seen every change up to `revision` (sent while it is idle), so it can resume from there.
    case progress(revision: UInt64)
    /// The MDS ended the subscription (the connection closes after this).
    case subscriptionEnded(SubscriptionEnd)
    /// The server's answer to `authenticate`: its fresh nonce and its own proof of the token over both nonces.
    case challenge(serverNonce: [UInt8], proof: [UInt8])
}
