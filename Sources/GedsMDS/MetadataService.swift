import GedsCarrier
import GedsCore
import GedsMetadataRDMA
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
    private let subscriptions = SubscriptionHub()
    private let waiters: ObjectWaiters
    /// The journal of a durable MDS (`--state`); nil keeps everything in memory only.
    let journal: MetadataJournal?
    /// Events a subscription may have waiting while its peer does not read, before it is ended as too slow.
    let subscriberQueueLimit: Int
    /// When a node last offered a copy (`addLocation`, MDS milliseconds): after a restart, lost objects are dropped
    /// only once the offers have stopped.
    private let lastOffer = Atomic<UInt64>(0)

    init(store: MetadataStore, journal: MetadataJournal? = nil, logger: Logger,
         subscriberQueueLimit: Int = MetadataService.defaultSubscriberQueueLimit,
         timers: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()) {
        var store = store
        waiters = ObjectWaiters(timers: timers)
        store.journaling = journal != nil
        self.store = Mutex(store)
        self.journal = journal
        self.logger = logger
        self.subscriberQueueLimit = max(1, subscriberQueueLimit)
    }

    public static let defaultSubscriberQueueLimit = 10_000

    public var objectCount: Int { store.withLock { $0.objectCount } }
    public var levels: (buckets: Int, objects: Int, liveNodes: Int) { store.withLock { $0.levels } }
    public var subscriptionCount: Int { subscriptions.count }
    /// `waitForObject` calls held now.
    public var heldWaitCount: Int { waiters.count }
    var revision: UInt64 { store.withLock { $0.events.revision } }

    public func respond(to request: Request) -> Response {
        do {
            if case .subscribe(let scope, let after) = request { return .push(try subscribe(scope, after: after)) }
            if case .waitForObject(let bucket, let key, let milliseconds) = request {
                return try waitForObject(ObjectName(bucket: bucket, key: key), milliseconds: milliseconds)
            }
            let reply = try answer(request)
            guard let journal, journal.policy == .always, MetadataService.changesNamespace(request) else { return .reply(reply) }
            if case .created = reply { return .reply(reply) }  // `sealNewObject` only created it: nothing to make durable
            // Acknowledged once on disk; changes that arrive meanwhile share the fsync (group commit).
            let position = journal.appendedPosition
            return .promised { answer in journal.whenDurable(position) { failure in answer(failure.map { .failure($0) } ?? reply) } }
        } catch {
            return .reply(.failure(error))
        }
    }

    /// Runs `body` in the store's critical section, queues the journal records and events it recorded before leaving
    /// it (so they queue in revision order), and writes the records into the journal and hands the events to the
    /// subscribers after it. Waits held for the names it created are answered after it too.
    private func locked<Result: Sendable, Failure: Error>(_ body: (inout MetadataStore) throws(Failure) -> Result) throws(Failure) -> Result {
        var published = false
        var released: [(PendingAnswer, Reply)] = []
        defer {
            journal?.drain()  // before any answer: what is acknowledged is in the journal
            for (waiter, reply) in released { waiter.resolve(reply) }
            if published { subscriptions.drain() }
        }
        return try store.withLock { (store) throws(Failure) -> Result in
            let result = try body(&store)
            if let journal, !store.unjournaled.isEmpty {
                journal.enqueue(store.unjournaled) { store }  // a snapshot is a copy: its arrays are shared until the next change
                store.unjournaled.removeAll(keepingCapacity: true)  // no allocation per change
            }
            if !store.events.unpublished.isEmpty {
                released = waiters.release(createdBy: store.events.unpublished) { name in
                    do throws(GedsError) {
                        return .object(try store.lookup(bucket: name.bucket, key: name.key))
                    } catch {
                        return .failure(error)
                    }
                }
                subscriptions.enqueue(store.takeUnpublishedEvents())
                published = true
            }
            return result
        }
    }

    /// A subscription registered in the same critical section that reads the history, so that no event falls
    /// between its replay and its live part.
    private func subscribe(_ scope: EventScope, after: UInt64?) throws(GedsError) -> Subscriber {
        _ = try BucketName(scope.bucket)
        let subscriptions = self.subscriptions
        let limit = subscriberQueueLimit
        let onStop: @Sendable (Subscriber) -> Void = { subscriptions.remove($0) }
        return try locked { (store) throws(GedsError) -> Subscriber in
            let revision = store.events.revision
            guard let after else {
                let subscriber = Subscriber(scope: scope, first: .subscribed(revision: revision), replay: [], after: revision,
                                            revision: revision, limit: limit, onStop: onStop)
                subscriptions.add(subscriber)
                return subscriber
            }
            switch try store.events.events(after: after, in: scope) {
            case .compacted(let oldest):
                return Subscriber(scope: scope, first: nil, replay: [], after: after, revision: revision,
                                  end: .compacted(oldest: oldest), limit: limit, onStop: onStop)
            case .events(let replay):
                let subscriber = Subscriber(scope: scope, first: .subscribed(revision: revision), replay: replay, after: after,
                                            revision: revision, limit: limit, onStop: onStop)
                subscriptions.add(subscriber)
                return subscriber
            }
        }
    }

    private enum FoundOrHeld: Sendable {
        case found(ObjectInfo)
        case held(PendingAnswer)
    }

    /// `waitForObject`: the record at once when the object exists sealed, else a call held until it does (see
    /// `ObjectWaiters`).
    private func waitForObject(_ name: ObjectName, milliseconds: UInt32) throws(GedsError) -> Response {
        _ = try BucketName(name.bucket)
        _ = try ObjectKey(name.key)
        let waiters = self.waiters
        let found = try locked { (store) throws(GedsError) -> FoundOrHeld in
            do throws(GedsError) {
                return .found(try store.lookup(bucket: name.bucket, key: name.key))
            } catch where [.noSuchObject, .objectNotSealed, .noSuchBucket].contains(error.code) {
                return .held(try waiters.hold(name))
            }
        }
        switch found {
        case .found(let info):
            return .reply(.object(info))
        case .held(let pending):
            waiters.expire(pending, after: milliseconds)
            return .promised { answer in pending.attach(answer) }
        }
    }

    /// Tells idle subscriptions the current revision, so they can resume from it without a replay.
    func sendProgress() {
        store.withLock { store in subscriptions.enqueueProgress(store.events.revision) }
        subscriptions.drain()
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
            let (index, lease, inlineLimit) = locked { store in
                (store.register(registration, now: MetadataService.now()), store.leaseMilliseconds, store.inlineLimit)
            }
            logger.info("node \(registration.name) joined as \(index) (\(registration.tcp), host \(registration.hostID))")
            return .nodeRegistered(node: index, leaseMilliseconds: UInt32(lease), inlineLimit: inlineLimit)
        case .heartbeat(let node, let blobs, let bytes, let room):
            return try locked { (store) throws(GedsError) in
                let now = MetadataService.now()
                return .heartbeatAck(drop: try store.heartbeat(node: node, blobs: blobs, bytes: bytes, room: room, now: now),
                                     drain: store.isDraining(node: node), replicate: store.replicationOrders(for: node, now: now))
            }
        case .drainNode(let name):
            try locked { (store) throws(GedsError) in try store.drain(nodeNamed: name) }
            logger.info("node \(name) is asked to drain")
            return .ok
        case .drainFailed(let node, let reason):
            try locked { (store) throws(GedsError) in try store.drainFailed(node: node, reason: reason) }
            logger.warning("node \(node) stopped draining: \(reason)")
            return .ok
        case .leave(let node):
            locked { $0.leave(node: node) }
            return .ok
        case .listNodes:
            return .nodes(locked { $0.listNodes() })
        case .createBucket(let name):
            try locked { (store) throws(GedsError) in try store.createBucket(name) }
            return .ok
        case .deleteBucket(let name, let force):
            try locked { (store) throws(GedsError) in try store.deleteBucket(name, force: force) }
            return .ok
        case .listBuckets:
            return .buckets(locked { $0.listBuckets() })
        case .createObject(let bucket, let key, let node, let exclusive, let replicas, let reserved):
            return .created(blob: try locked { (store) throws(GedsError) in
                try store.createObject(bucket: bucket, key: key, node: node, exclusive: exclusive, replicas: replicas, reserved: reserved)
            })
        case .reserveBlobs(let node, let count):
            return .created(blob: try locked { (store) throws(GedsError) in try store.reserveBlobs(node: node, count: count) })
        case .sealNewObject(let blob, let bucket, let key, let size, let metadata, let placement, let contents):
            let now = MetadataService.wallClock()
            let outcome = try locked { (store) throws(GedsError) in
                try store.sealNewObject(blob: blob, bucket: bucket, key: key, size: size, metadata: metadata, placement: placement,
                                        contents: contents, now: now)
            }
            switch outcome {
            case .created: return .created(blob: blob)
            case .sealed(let assignment): return assignment.map { .s3Assignment($0) } ?? .ok
            }
        case .setBucketReplicas(let bucket, let replicas):
            let following = try locked { (store) throws(GedsError) in try store.setReplicas(bucket: bucket, replicas) }
            logger.info("bucket \(bucket): \(replicas) replica(s), for the \(following) object(s) in it without a factor of their own too")
            return .ok
        case .bucketReplicas(let bucket):
            return .count(UInt64(try locked { (store) throws(GedsError) in try store.replicas(bucket: bucket) }))
        case .placeCopies(let blob, let holder, let leaving):
            return .nodes(try locked { (store) throws(GedsError) in try store.placeCopies(blob: blob, holder: holder, leaving: leaving) })
        case .sealObject(let blob, let size, let metadata, let placement, let contents):
            let now = MetadataService.wallClock()
            let assignment = try locked { (store) throws(GedsError) in
                try store.seal(blob: blob, size: size, metadata: metadata, placement: placement, contents: contents, now: now)
            }
            return assignment.map { .s3Assignment($0) } ?? .ok
        case .abortObject(let blob):
            locked { $0.abort(blob: blob) }
            return .ok
        case .lookup(let bucket, let key):
            return .object(try locked { (store) throws(GedsError) in try store.lookup(bucket: bucket, key: key) })
        case .list(let bucket, let prefix, let delimiter, let startAfter, let maxKeys):
            return .page(try locked { (store) throws(GedsError) in
                try store.list(bucket: bucket, prefix: prefix, delimiter: delimiter, startAfter: startAfter, maxKeys: maxKeys)
            })
        case .deleteObject(let bucket, let key):
            let now = MetadataService.wallClock()
            let (inGEDS, s3Objects) = try locked { (store) throws(GedsError) in
                try store.delete(bucket: bucket, key: key, now: now)
            }
            guard let s3Objects else { return .ok }
            return .s3Deletions(deleted: inGEDS ? 1 : 0, objects: s3Objects)
        case .deletePrefix(let bucket, let prefix):
            return .count(try locked { (store) throws(GedsError) in try store.delete(bucket: bucket, prefix: prefix) })
        case .rename(let fromBucket, let fromKey, let toBucket, let toKey):
            let now = MetadataService.wallClock()
            let move = try locked { (store) throws(GedsError) in
                try store.rename(from: (fromBucket, fromKey), to: (toBucket, toKey), now: now)
            }
            guard let move else { return .ok }
            return .s3Move(blob: move.blob, from: move.from, to: move.to, deleteSource: move.deleteSource)
        case .copy(let fromBucket, let fromKey, let toBucket, let toKey):
            let now = MetadataService.wallClock()
            let move = try locked { (store) throws(GedsError) in
                try store.copy(from: (fromBucket, fromKey), to: (toBucket, toKey), now: now)
            }
            guard let move else { return .ok }
            return .s3Move(blob: move.blob, from: move.from, to: move.to, deleteSource: move.deleteSource)
        case .setMetadata(let bucket, let key, let metadata):
            try locked { (store) throws(GedsError) in try store.setMetadata(bucket: bucket, key: key, metadata: metadata) }
            return .ok
        case .addLocation(let blob, let placement):
            try locked { (store) throws(GedsError) in try store.addLocation(blob: blob, placement: placement) }
            lastOffer.store(MetadataService.now(), ordering: .relaxed)
            return .ok
        case .removeLocation(let blob, let node):
            locked { $0.removeLocation(blob: blob, node: node) }
            return .ok
        case .setBucketStorage(let bucket, let storage):
            try locked { (store) throws(GedsError) in try store.setStorage(bucket: bucket, storage) }
            logger.info("bucket \(bucket): \(storage.map { "\($0)" } ?? "no S3 store")")
            return .ok
        case .bucketStorage(let bucket):
            return .storage(try locked { (store) throws(GedsError) in try store.storage(bucket: bucket) })
        case .addS3Copy(let blob):
            try locked { (store) throws(GedsError) in try store.addS3Copy(blob: blob) }
            return .ok
        case .s3Assignment(let blob):
            let now = MetadataService.wallClock()
            return .s3Assignment(try locked { (store) throws(GedsError) in try store.s3Assignment(blob: blob, now: now) })
        case .claimS3Deletions(let bucket, let keys):
            let now = MetadataService.wallClock()
            return .s3Deletions(deleted: 0, objects: try locked { (store) throws(GedsError) in
                try store.claimS3Deletions(bucket: bucket, keys: keys, now: now)
            })
        case .abandonS3Upload(let object):
            let now = MetadataService.wallClock()
            return .s3Deletions(deleted: 0, objects: locked { $0.abandonS3Upload(object, now: now) })
        case .s3Deleted(let objects):
            locked { $0.s3Deleted(objects) }
            return .ok
        case .adoptS3Object(let bucket, let key, let size, let metadata):
            let now = MetadataService.wallClock()
            return .object(try locked { (store) throws(GedsError) in
                try store.adoptS3Object(bucket: bucket, key: key, size: size, metadata: metadata, now: now)
            })
        case .readBlob, .pullBlob, .persistBlob, .flush:
            throw GedsError(.invalidArgument, "the MDS holds no object bytes; ask a node")
        case .subscribe:
            throw GedsError(.invalidArgument, "a subscription needs a connection of its own")
        case .waitForObject:
            throw GedsError(.invalidArgument, "a wait is held, not answered at once")
        case .authenticate, .prove:
            throw GedsError(.protocolViolation, "the handshake is the carrier's, before any request")
        }
    }

    static func changesNamespace(_ request: Request) -> Bool {
        switch request {
        case .createBucket, .deleteBucket, .sealObject, .sealNewObject, .deleteObject, .deletePrefix, .rename, .copy, .setMetadata,
             .setBucketStorage, .addS3Copy, .adoptS3Object, .setBucketReplicas:
            return true
        default:
            return false
        }
    }

    func offersQuiet(for period: TimeAmount) -> Bool {
        MetadataService.now() >= lastOffer.load(ordering: .relaxed) + UInt64(period.nanoseconds / 1_000_000)
    }

    /// Drops the restored objects no node offered back (and with no S3 copy), once nodes had time to register.
    func dropLostObjects() {
        let now = MetadataService.wallClock()
        let lost = locked { $0.dropLostObjects(now: now) }
        if lost > 0 {
            logger.warning("\(lost) object(s) restored from the journal are lost: no node offered a copy back and none is in S3; dropped")
        } else {
            logger.info("every object restored from the journal has a copy again")
        }
    }

    /// Withdraws the copies of nodes whose lease ran out.
    func expireLeases() {
        let expired = store.withLock { $0.expireLeases(now: MetadataService.now()) }
        for name in expired { logger.warning("node \(name) missed its lease; its copies are withdrawn") }
    }
}

/// How a durable MDS keeps its state (`geds-mds --state DIR --fsync POLICY`).
public struct StateOptions: Sendable {
    public var directory: String
    public var fsync: FsyncPolicy
    /// Journal bytes after which the MDS compacts them into a new snapshot.
    public var compactionBytes: UInt64
    /// How long after a restart nodes have to offer their copies back before objects without one are dropped
    /// (nil: three leases, at least 5 s).
    public var recoveryGrace: TimeAmount?
    /// The size of a (preallocated) journal file.
    var segmentBytes = MetadataJournal.defaultSegmentBytes

    public init(directory: String, fsync: FsyncPolicy = .everysec, compactionBytes: UInt64 = 64 << 20, recoveryGrace: TimeAmount? = nil) {
        self.directory = directory
        self.fsync = fsync
        self.compactionBytes = compactionBytes
        self.recoveryGrace = recoveryGrace
    }
}

/// A running MDS: the service behind a TCP listener and, optionally, an RDMA one (both at once, the same
/// service), and the lease clock.
public final class MetadataServer: Sendable {
    public let service: MetadataService
    public let server: FrameServer
    /// The RDMA send/receive listener, when `rdmaListen` was given.
    public let rdma: RDMAMetadataListener?
    private let timers: [RepeatedTask]

    public static func start(listen: Endpoint, rdmaListen: Endpoint? = nil, leaseMilliseconds: UInt64 = 5000,
                             eventHistory: Int = MetadataStore.defaultEventHistory,
                             inlineLimit: UInt32 = InlineContents.defaultLimit, inlineBudget: UInt64 = InlineContents.defaultBudget,
                             subscriberQueueLimit: Int = MetadataService.defaultSubscriberQueueLimit,
                             progressInterval: TimeAmount = .seconds(1), state: StateOptions? = nil,
                             token: DeploymentToken? = nil, tls: TransportSecurity? = nil, logger: Logger,
                             group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> MetadataServer {
        let authentication = ServerAuthentication(token: token, role: "MDS", logger: logger)
        var store = MetadataStore(leaseMilliseconds: leaseMilliseconds, eventHistory: eventHistory, inlineLimit: inlineLimit,
                                  inlineBudget: inlineBudget)
        let journal = try state.map { (state) throws(GedsError) in try restore(&store, from: state, logger: logger) }
        let service = MetadataService(store: store, journal: journal, logger: logger, subscriberQueueLimit: subscriberQueueLimit,
                                      timers: group.next())
        let server: FrameServer
        do {
            server = try await FrameServer.start(listen: listen, service: service, group: group, logger: logger,
                                                 authentication: authentication, tls: tls)
        } catch {
            await journal?.close()
            throw error
        }
        var rdma: RDMAMetadataListener?
        if let rdmaListen {
            do {
                rdma = try await RDMAMetadataListener.start(listen: rdmaListen, service: service, logger: logger,
                                                            authentication: authentication)
            } catch {
                await server.close()
                await journal?.close()
                throw error
            }
        }
        let period = TimeAmount.milliseconds(Int64(max(leaseMilliseconds / 4, 50)))
        let timer = group.next().scheduleRepeatedTask(initialDelay: period, delay: period) { _ in service.expireLeases() }
        let progress = group.next().scheduleRepeatedTask(initialDelay: progressInterval, delay: progressInterval) { _ in
            service.sendProgress()
        }
        var timers = [timer, progress]
        if let journal, journal.policy == .everysec {
            timers.append(group.next().scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in journal.syncSoon() })
        }
        // Nodes notice the restart at their next heartbeat, register again and offer their copies back; while offers
        // keep coming (a node with many copies takes a while) they get another grace period.
        if let state, service.objectCount > 0 {
            let grace = state.recoveryGrace ?? .milliseconds(Int64(max(3 * leaseMilliseconds, 5000)))
            timers.append(group.next().scheduleRepeatedTask(initialDelay: grace, delay: grace) { task in
                guard service.offersQuiet(for: grace) else { return }
                task.cancel()
                service.dropLostObjects()
            })
        }
        return MetadataServer(service: service, server: server, rdma: rdma, timers: timers)
    }

    /// Rebuilds the store from the state directory's snapshot and journals, and opens this run's journal.
    private static func restore(_ store: inout MetadataStore, from state: StateOptions, logger: Logger) throws(GedsError) -> MetadataJournal {
        let directory = try StateDirectory(path: state.directory)
        do {
            return try restore(&store, from: directory, state: state, logger: logger)
        } catch {
            try? directory.lock.close()  // a damaged snapshot, a full disk: the directory is free again
            throw error
        }
    }

    private static func restore(_ store: inout MetadataStore, from directory: StateDirectory, state: StateOptions,
                                logger: Logger) throws(GedsError) -> MetadataJournal {
        let started = NIODeadline.now()
        let contents = try directory.read()
        if let snapshot = contents.snapshot {
            do {
                try store.restore(snapshot: snapshot.bytes, revision: snapshot.header.revision)
            } catch {
                throw GedsError(error.code, "\(directory.snapshotPath): \(error.message)")
            }
        }
        var replayed = 0
        var droppedBytes = contents.droppedBytes
        for journal in contents.journals {
            let valid = JournalFormat.forEachRecord(in: journal.bytes) { record in
                do throws(GedsError) {
                    try store.replay(record)
                    replayed += 1
                } catch {
                    logger.error("\(directory.journalPath(journal.generation)): a change could not be made again (\(error.message)); skipped")
                }
            }
            droppedBytes += JournalFormat.tornBytes(in: journal.bytes, after: valid)
        }
        _ = store.takeUnpublishedEvents()
        let epoch = contents.lastEpoch % 0xFFFFF + 1
        store.beginRun(epoch: epoch, now: MetadataService.wallClock())
        let journal = try MetadataJournal(directory: directory, generation: contents.lastGeneration + 1, epoch: epoch,
                                          policy: state.fsync, compactionBytes: state.compactionBytes, segmentBytes: state.segmentBytes,
                                          logger: logger)
        let milliseconds = (NIODeadline.now() - started).nanoseconds / 1_000_000
        logger.info("state \(state.directory): \(store.objectCount) object(s) in \(store.listBuckets().count) bucket(s) at revision \(store.events.revision) restored in \(milliseconds) ms (\(contents.snapshot == nil ? "no snapshot" : "snapshot"), \(replayed) journal records)\(droppedBytes > 0 ? "; dropped \(droppedBytes) torn byte(s) at the end of the journal" : ""); fsync \(state.fsync.rawValue)")
        if replayed > 0 {
            journal.compact(store)
        } else {
            for old in contents.journals { unlink(directory.journalPath(old.generation)) }  // headers only
        }
        return journal
    }

    private init(service: MetadataService, server: FrameServer, rdma: RDMAMetadataListener?, timers: [RepeatedTask]) {
        self.service = service
        self.server = server
        self.rdma = rdma
        self.timers = timers
    }

    public var localAddress: Endpoint { server.localAddress }

    public func close() async {
        for timer in timers { timer.cancel() }
        await rdma?.close()
        await server.close()
        await service.journal?.close()
    }
}
