import GedsCore
import GedsTCP
import GedsWire
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The MDS as a request service: every request is one short critical section over the store, answered on
/// the connection's own event loop (no hop to another thread).
public final class MetadataService: RequestService {
    private let store: Mutex<MetadataStore>
    private let logger: Logger

    public init(store: MetadataStore, logger: Logger) {
        self.store = Mutex(store)
        self.logger = logger
    }

    public var objectCount: Int { store.withLock { $0.objectCount } }
    public var levels: (buckets: Int, objects: Int, liveNodes: Int) { store.withLock { $0.levels } }

    public func respond(to request: Request, on eventLoop: any EventLoop) -> Response {
        do {
            return .reply(try answer(request))
        } catch {
            return .reply(.failure(error))
        }
    }

    static func now() -> UInt64 { UInt64(NIODeadline.now().uptimeNanoseconds / 1_000_000) }

    static func wallClock() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return UInt64(time.tv_sec) * 1000 + UInt64(time.tv_nsec) / 1_000_000
    }

    func answer(_ request: Request) throws(GedsError) -> Reply {
        switch request {
        case .registerNode(let registration):
            let (index, lease) = store.withLock { store in
                (store.register(registration, now: MetadataService.now()), store.leaseMilliseconds)
            }
            logger.info("node \(registration.name) joined as \(index) (\(registration.tcp), host \(registration.hostID))")
            return .nodeRegistered(node: index, leaseMilliseconds: UInt32(lease))
        case .heartbeat(let node, let blobs, let bytes):
            return .heartbeatAck(drop: try store.withLock { (store) throws(GedsError) in
                try store.heartbeat(node: node, blobs: blobs, bytes: bytes, now: MetadataService.now())
            })
        case .leave(let node):
            store.withLock { $0.leave(node: node) }
            return .ok
        case .listNodes:
            return .nodes(store.withLock { $0.listNodes() })
        case .createBucket(let name):
            try store.withLock { (store) throws(GedsError) in try store.createBucket(name) }
            return .ok
        case .deleteBucket(let name, let force):
            try store.withLock { (store) throws(GedsError) in try store.deleteBucket(name, force: force) }
            return .ok
        case .listBuckets:
            return .buckets(store.withLock { $0.listBuckets() })
        case .createObject(let bucket, let key, let node):
            return .created(blob: try store.withLock { (store) throws(GedsError) in
                try store.createObject(bucket: bucket, key: key, node: node)
            })
        case .sealObject(let blob, let size, let metadata, let placement):
            let now = MetadataService.wallClock()
            let assignment = try store.withLock { (store) throws(GedsError) in
                try store.seal(blob: blob, size: size, metadata: metadata, placement: placement, now: now)
            }
            return assignment.map { .s3Assignment($0) } ?? .ok
        case .abortObject(let blob):
            store.withLock { $0.abort(blob: blob) }
            return .ok
        case .lookup(let bucket, let key):
            return .object(try store.withLock { (store) throws(GedsError) in try store.lookup(bucket: bucket, key: key) })
        case .list(let bucket, let prefix, let delimiter, let startAfter, let maxKeys):
            return .page(try store.withLock { (store) throws(GedsError) in
                try store.list(bucket: bucket, prefix: prefix, delimiter: delimiter, startAfter: startAfter, maxKeys: maxKeys)
            })
        case .deleteObject(let bucket, let key):
            let now = MetadataService.wallClock()
            let (inGEDS, s3Objects) = try store.withLock { (store) throws(GedsError) in
                try store.delete(bucket: bucket, key: key, now: now)
            }
            guard let s3Objects else { return .ok }
            return .s3Deletions(deleted: inGEDS ? 1 : 0, objects: s3Objects)
        case .deletePrefix(let bucket, let prefix):
            return .count(try store.withLock { (store) throws(GedsError) in try store.delete(bucket: bucket, prefix: prefix) })
        case .rename(let fromBucket, let fromKey, let toBucket, let toKey):
            let now = MetadataService.wallClock()
            let move = try store.withLock { (store) throws(GedsError) in
                try store.rename(from: (fromBucket, fromKey), to: (toBucket, toKey), now: now)
            }
            guard let move else { return .ok }
            return .s3Move(blob: move.blob, from: move.from, to: move.to, deleteSource: move.deleteSource)
        case .copy(let fromBucket, let fromKey, let toBucket, let toKey):
            let now = MetadataService.wallClock()
            let move = try store.withLock { (store) throws(GedsError) in
                try store.copy(from: (fromBucket, fromKey), to: (toBucket, toKey), now: now)
            }
            guard let move else { return .ok }
            return .s3Move(blob: move.blob, from: move.from, to: move.to, deleteSource: move.deleteSource)
        case .setMetadata(let bucket, let key, let metadata):
            try store.withLock { (store) throws(GedsError) in try store.setMetadata(bucket: bucket, key: key, metadata: metadata) }
            return .ok
        case .addLocation(let blob, let placement):
            try store.withLock { (store) throws(GedsError) in try store.addLocation(blob: blob, placement: placement) }
            return .ok
        case .removeLocation(let blob, let node):
            store.withLock { $0.removeLocation(blob: blob, node: node) }
            return .ok
        case .setBucketStorage(let bucket, let storage):
            try store.withLock { (store) throws(GedsError) in try store.setStorage(bucket: bucket, storage) }
            logger.info("bucket \(bucket): \(storage.map { "\($0)" } ?? "no S3 store")")
            return .ok
        case .bucketStorage(let bucket):
            return .storage(try store.withLock { (store) throws(GedsError) in try store.storage(bucket: bucket) })
        case .addS3Copy(let blob):
            try store.withLock { (store) throws(GedsError) in try store.addS3Copy(blob: blob) }
            return .ok
        case .s3Assignment(let blob):
            let now = MetadataService.wallClock()
            return .s3Assignment(try store.withLock { (store) throws(GedsError) in try store.s3Assignment(blob: blob, now: now) })
        case .claimS3Deletions(let bucket, let keys):
            let now = MetadataService.wallClock()
            return .s3Deletions(deleted: 0, objects: try store.withLock { (store) throws(GedsError) in
                try store.claimS3Deletions(bucket: bucket, keys: keys, now: now)
            })
        case .abandonS3Upload(let object):
            let now = MetadataService.wallClock()
            return .s3Deletions(deleted: 0, objects: store.withLock { $0.abandonS3Upload(object, now: now) })
        case .s3Deleted(let objects):
            store.withLock { $0.s3Deleted(objects) }
            return .ok
        case .adoptS3Object(let bucket, let key, let size, let metadata):
            let now = MetadataService.wallClock()
            return .object(try store.withLock { (store) throws(GedsError) in
                try store.adoptS3Object(bucket: bucket, key: key, size: size, metadata: metadata, now: now)
            })
        case .readBlob, .pullBlob, .persistBlob, .flush:
            throw GedsError(.invalidArgument, "the MDS holds no object bytes; ask a node")
        }
    }

    /// Withdraws the copies of nodes whose lease ran out.
    func expireLeases() {
        let expired = store.withLock { $0.expireLeases(now: MetadataService.now()) }
        for name in expired { logger.warning("node \(name) missed its lease; its copies are withdrawn") }
    }
}

/// A running MDS: the service behind a TCP listener and, optionally, an RDMA one (both at once, the same
/// service), and the lease clock.
public final class MetadataServer: Sendable {
    public let service: MetadataService
    public let server: FrameServer
    /// The RDMA send/receive listener, when `rdmaListen` was given.
    public let rdma: RDMAMetadataListener?
    private let leaseTimer: RepeatedTask

    public static func start(listen: Endpoint, rdmaListen: Endpoint? = nil, leaseMilliseconds: UInt64 = 5000, logger: Logger,
                             group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> MetadataServer {
        let service = MetadataService(store: MetadataStore(leaseMilliseconds: leaseMilliseconds), logger: logger)
        let server = try await FrameServer.start(listen: listen, service: service, group: group, logger: logger)
        var rdma: RDMAMetadataListener?
        if let rdmaListen {
            do {
                rdma = try await RDMAMetadataListener.start(listen: rdmaListen, service: service, eventLoop: group.next(),
                                                            logger: logger)
            } catch {
                await server.close()
                throw error
            }
        }
        let period = TimeAmount.milliseconds(Int64(max(leaseMilliseconds / 4, 50)))
        let timer = group.next().scheduleRepeatedTask(initialDelay: period, delay: period) { _ in service.expireLeases() }
        return MetadataServer(service: service, server: server, rdma: rdma, leaseTimer: timer)
    }

    private init(service: MetadataService, server: FrameServer, rdma: RDMAMetadataListener?, leaseTimer: RepeatedTask) {
        self.service = service
        self.server = server
        self.rdma = rdma
        self.leaseTimer = leaseTimer
    }

    public var localAddress: Endpoint { server.localAddress }

    public func close() async {
        leaseTimer.cancel()
        await rdma?.close()
        await server.close()
    }
}
