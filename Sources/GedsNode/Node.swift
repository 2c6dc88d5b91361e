import GedsCore
import GedsMetadataRDMA
import GedsTCP
import GedsTier0
import GedsTier1
import GedsVerbs
import GedsWire
import Logging
import NIOCore
import NIOPosix

/// A node, as GEDS and the C ABI use it: a facade that starts its parts, wires them together, and forwards the API
/// to the part each call concerns. The parts, each owning its state:
/// - `MDSSession` (Session/): registration, lease, heartbeats and the drops they bring;
/// - `TierManager` (Tiers/): tier 0 and tier 1, their budget, spills and promotions, the copies published;
/// - `PersistenceAgent` (Persistence/): S3 clients, write-through and write-back, read-through, the S3 side of
///   renames and deletions;
/// - `ReadPath` (ReadPath/): lookups on the caller's thread, copy choice, carriers, retries when copies move;
/// - `WritePath` (Writing/): create, seal (with a hand-off), abandon, relocation; `Drain` (Writing/) hands every
///   copy to other nodes before the node leaves;
/// - `DataServer` (Server/): what peers ask of this node.
public final class Node: Sendable {
    public let configuration: NodeConfiguration
    public let mds: MDSClient
    public let logger: Logger
    /// The transports this node offers, chosen at start.
    public let transport: TransportSelection
    /// The RDMA data plane (nil: this node reads and serves over TCP only).
    let rdma: RDMADataPlane?
    let peers: ConnectionPool
    /// The event loop of all this node's client connections, as a task executor (see `onLoop`).
    let executor: EventLoopTaskExecutor
    /// Blocking bulk reads over plain TCP (nil under TLS).
    let bulk: BulkReader?
    let group: any EventLoopGroup
    let session: MDSSession
    let tiers: TierManager
    let persistence: PersistenceAgent
    let readPath: ReadPath
    let writePath: WritePath
    let drain: Drain
    let server: DataServer
    /// What this node registers as (again after a lost lease).
    private let registration: NodeRegistration

    public var tier0: Tier0Store { tiers.tier0 }
    /// Where tier 0 spills to (nil: no tier 1).
    public var tier1: Tier1Store? { tiers.tier1 }
    public var index: UInt32 { session.index }
    public var endpoint: Endpoint { session.advertised }

    public static func start(_ configuration: NodeConfiguration, logger: Logger,
                             group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws(GedsError) -> Node {
        // First, so that a node demanding RDMA on a machine without it fails before it touches anything.
        var transport = try TransportSelection(configuration.transport, rdmaUnavailableReason: RDMA.unavailableReason)
        // A freed slab slot waits out the node's timeout: reads of it that started before have ended by then.
        let tier0 = try Tier0Store(directory: configuration.tier0Directory,
                                   quarantine: .milliseconds(configuration.timeoutMilliseconds),
                                   recycleBudget: configuration.recycleBudget)
        var tier1: Tier1Store?
        if let tier1Configuration = configuration.tier1 {
            guard configuration.tier0Capacity != nil else {
                throw GedsError(.invalidArgument, "a tier 1 needs a tier-0 capacity (when to spill to it)")
            }
            tier1 = try Tier1Store(tier1Configuration)
        }
        let server = try await DataServer.start(listen: configuration.listen, group: group, logger: logger,
                                                authentication: configuration.serverAuthentication(logger), tls: configuration.tls)
        var rdma: RDMADataPlane?
        var mdsOverRDMA: RDMAMetadataClient?
        do throws(GedsError) {
            if transport.offersRDMA {
                rdma = try await startRDMA(configuration, transport: &transport, port: server.localAddress.port, logger: logger)
            }
            if let tls = configuration.tls {
                // NIO's TLS handler is the only TLS here: the blocking fast paths are left out.
                transport.explanation += "; tcp over \(tls.serverDescription): bulk reads and caller-thread MDS lookups "
                    + "go through the event loop"
            }
            logger.info("\(transport.explanation)")
            if let rdma, let mdsRDMA = configuration.mdsRDMA {
                mdsOverRDMA = try await connectMDSOverRDMA(mdsRDMA, configuration, engine: rdma.engine, logger: logger)
            }
        } catch {
            await rdma?.shutdown()
            await server.close()
            throw error
        }
        let node = Node(configuration: configuration, tier0: tier0, tier1: tier1, server: server, group: group,
                        logger: logger, transport: transport, rdma: rdma, mdsOverRDMA: mdsOverRDMA)
        do {
            try await node.session.register(node.registration, offering: node.tiers, checkingFiles: true)
        } catch {
            await node.shutdown()
            throw error
        }
        node.session.startHeartbeats(as: node.registration, offering: node.tiers, on: node.executor,
                                     drain: { [weak node] in node?.drain.start() },
                                     replicate: { [weak node] orders in node?.replicate(orders) })
        return node
    }

    private init(configuration: NodeConfiguration, tier0: Tier0Store, tier1: Tier1Store?, server: DataServer,
                 group: any EventLoopGroup, logger: Logger, transport: TransportSelection, rdma: RDMADataPlane?,
                 mdsOverRDMA: RDMAMetadataClient?) {
        self.configuration = configuration
        self.server = server
        self.group = group
        self.logger = logger
        self.transport = transport
        self.rdma = rdma
        let executor = EventLoopTaskExecutor(group.next())
        let peers = ConnectionPool(group: executor.eventLoop, token: configuration.token, tls: configuration.tls)
        self.executor = executor
        self.peers = peers
        let bulk = configuration.tls == nil ? BulkReader(token: configuration.token) : nil
        self.bulk = bulk
        var host = configuration.advertisedHost ?? server.localAddress.host
        if host == "0.0.0.0" || host == "::" { host = "127.0.0.1" }
        registration = NodeRegistration(name: configuration.name, hostID: configuration.hostID, role: configuration.role,
                                        tcp: Endpoint(host: host, port: server.localAddress.port),
                                        tier0Directory: configuration.tier0Directory, rdma: rdma?.responder.endpoint)
        let callerThread = configuration.tls == nil
            ? DirectCalls(endpoint: configuration.mds, timeoutMilliseconds: configuration.timeoutMilliseconds, token: configuration.token)
            : nil
        mds = MDSClient(endpoint: configuration.mds, pool: peers, timeout: .milliseconds(configuration.timeoutMilliseconds),
                        rdma: mdsOverRDMA, callerThread: callerThread, logger: logger)
        session = MDSSession(mds: mds, logger: logger)
        tiers = TierManager(tier0: tier0, tier1: tier1, policy: configuration.tier0Capacity.map {
            SpillPolicy(capacity: $0, highWater: configuration.spillHighWater, lowWater: configuration.spillLowWater)
        }, rdma: rdma, mds: mds, session: session, nodeName: configuration.name, hostID: configuration.hostID, logger: logger)
        persistence = PersistenceAgent(tiers: tiers, mds: mds, session: session, peers: peers, nodeName: configuration.name,
                                       logger: logger)
        tiers.overflow(to: persistence)
        let carriers = CopyCarriers(rdma: rdma, bulk: bulk, pool: peers, s3Clients: persistence.s3Clients,
                                    timeoutMilliseconds: configuration.timeoutMilliseconds)
        readPath = ReadPath(tiers: tiers, carriers: carriers, mds: mds,
                            direct: callerThread,
                            configuration: configuration, logger: logger)
        writePath = WritePath(tiers: tiers, persistence: persistence, readPath: readPath, mds: mds, session: session,
                              peers: peers, timeoutMilliseconds: configuration.timeoutMilliseconds)
        drain = Drain(tiers: tiers, writePath: writePath, mds: mds, session: session, nodeName: configuration.name,
                      logger: logger)
        server.serve(tiers: tiers, readPath: readPath, persistence: persistence)
    }

    /// Runs `body` on the event loop of this node's connections: its round trips then cost no thread
    /// hand-offs on this side (one hop in and one out for the whole body). A node that talks to the MDS
    /// over RDMA runs `body` where it is: its round trips end on the RDMA poll thread, and the event loop
    /// would only add hops (measured: about 600 µs per lookup + read under emulation).
    public func onLoop<Result: Sendable>(_ body: @Sendable () async throws(GedsError) -> Result) async throws(GedsError) -> Result {
        if mds.rdma?.active == true { return try await body() }
        do {
            return try await withTaskExecutorPreference(executor) { try await body() }
        } catch {
            throw GedsError.wrapping(error)
        }
    }

    /// Where `onLoop` runs bodies (nil over RDMA, see there), for callers that start their own task there: the C
    /// ABI's blocking reads then end on the loop, which wakes the waiting C thread without a pass through the pool.
    public var loopExecutor: (any TaskExecutor)? { mds.rdma?.active == true ? nil : executor }

    // MARK: Transports

    /// Starts the RDMA data plane on the device that owns the node's address. Under `auto` a node whose
    /// address has no usable device runs over TCP (and `transport` says why); under `rdma` it refuses to start.
    private static func startRDMA(_ configuration: NodeConfiguration, transport: inout TransportSelection, port: Int,
                                  logger: Logger) async throws(GedsError) -> RDMADataPlane? {
        let address = configuration.rdmaAddress ?? configuration.advertisedHost ?? configuration.listen.host
        do throws(RDMAError) {
            let plane = try await RDMADataPlane.start(address: address, port: port, logger: logger)
            transport.explanation += "; reads and serves over rdma at \(plane.responder.endpoint) (\(plane.engine.device.name))"
            return plane
        } catch {
            let reason = "no usable RDMA device at \(address): \(error.message)"
            if configuration.transport == .rdma { throw GedsError(.invalidArgument, "--transport rdma: \(reason)") }
            transport = TransportSelection(offersRDMA: false, explanation: "transport: tcp (auto: \(reason))")
            return nil
        }
    }

    /// Connects to the MDS's RDMA listener; under `auto` a failure leaves the node on TCP (logged).
    private static func connectMDSOverRDMA(_ endpoint: Endpoint, _ configuration: NodeConfiguration, engine: RDMAEngine,
                                           logger: Logger) async throws(GedsError) -> RDMAMetadataClient? {
        do throws(GedsError) {
            let client = try await RDMAMetadataClient.connect(to: endpoint, engine: engine,
                                                              timeout: .milliseconds(configuration.timeoutMilliseconds),
                                                              token: configuration.token)
            logger.info("MDS: over rdma at \(endpoint)")
            return client
        } catch {
            if configuration.transport == .rdma { throw error }
            logger.notice("MDS: over tcp at \(configuration.mds) (\(error.message))")
            return nil
        }
    }

    public func shutdown() async {
        readPath.stop()
        await persistence.flushBeforeLeaving()  // still heartbeating: the copies being uploaded stay published meanwhile
        session.stopHeartbeats()
        await session.leave()
        await server.close()
        await mds.rdma?.close()
        await rdma?.shutdown()
        peers.closeAll()
        await bulk?.shutdown()
        await tier1?.shutdown()
        await persistence.shutdown()
        tier0.stopRecycling()
        if configuration.removeTier0OnShutdown {
            tiers.discardTier0()
            rmdir(configuration.tier0Directory)
        }
    }

    // MARK: Writing and relocation (see WritePath)

    /// `replicas`: the object's replication factor (nil: its bucket's).
    public func create(bucket: String, key: String, exclusive: Bool = false, replicas: Int? = nil) async throws(GedsError) -> WritableBlob {
        try await writePath.create(bucket: bucket, key: key, exclusive: exclusive, replicas: replicas)
    }

    /// A whole object written and sealed in one step, as `create` + write + `seal` (without a hand-off or replicas
    /// of its own); a small one goes straight into a slab slot.
    public func put(bucket: String, key: String, bytes: [UInt8], metadata: [String: String], persistency: Persistency? = nil,
                    exclusive: Bool = false) async throws(GedsError) {
        try await checkPersistency(persistency, bucket: bucket)
        try await writePath.put(bucket: bucket, key: key, bytes: bytes, metadata: metadata, persistency: persistency, exclusive: exclusive)
    }

    /// Returns once a drain (`geds drain`) moved everything this node held away (or the waiting task is cancelled).
    public func waitUntilDrained() async {
        await drain.waitUntilDone()
    }

    /// Seals an object: it becomes immutable and visible everywhere in one step at the MDS (after a hand-off to
    /// `target`, when given), then as durable as `persistency` (else its bucket's) says. A replicated object is
    /// published with all its copies, or with the first only unless `waitForReplicas`.
    public func seal(_ writable: WritableBlob, metadata: [String: String], handingOffTo target: NodeInfo? = nil,
                     persistency: Persistency? = nil, waitForReplicas: Bool = true) async throws(GedsError) {
        try await writePath.seal(writable, metadata: metadata, handingOffTo: target, persistency: persistency,
                                 waitForReplicas: waitForReplicas)
    }

    /// Gives up an object being written: its file goes when the last reference to `writable` does, and the
    /// MDS forgets the blob.
    public func abandon(_ writable: WritableBlob) {
        writePath.abandon(writable)
    }

    /// As `abandon`, returning once the MDS forgot the blob.
    public func abort(_ writable: WritableBlob) async throws(GedsError) {
        try await writePath.abort(writable)
    }

    /// Makes the copies the MDS asked for (re-replication): each pulled from its source and published.
    private func replicate(_ orders: [ReplicationOrder]) {
        for order in orders {
            Task { [readPath, logger] in
                do throws(GedsError) {
                    try await readPath.pull(order.blob, size: order.size, from: order.source)
                    logger.info("re-replicated \(order.blob.fileName) from \(order.source.holder)")
                } catch {
                    logger.warning("could not re-replicate \(order.blob.fileName) from \(order.source.holder): \(error.message)")
                }
            }
        }
    }

    /// Hands a sealed object to another node, which becomes its owner; our copy goes afterwards.
    public func relocate(_ info: ObjectInfo, to target: NodeInfo) async throws(GedsError) {
        try await writePath.relocate(info, to: target)
    }

    /// The live node named `name`, as the MDS lists it.
    func liveNode(named name: String) async throws(GedsError) -> NodeInfo {
        guard let named = try await mds.nodes().first(where: { $0.alive && $0.name == name }) else {
            throw GedsError(.noSuchNode, "no live node named '\(name)'")
        }
        return named
    }

    /// This node as `listNodes` describes it (the local endpoint's answer to hello).
    public var ownInfo: NodeInfo {
        let usage = tier0.usage
        return NodeInfo(name: configuration.name, hostID: configuration.hostID, role: configuration.role, tcp: endpoint,
                        rdma: rdma?.responder.endpoint, alive: true, blobs: usage.blobs, bytes: usage.bytes)
    }

    // MARK: Reading (see ReadPath)

    /// A zero-copy view of the whole object: our own copy (promoted from tier 1 when spilled), a same-host
    /// owner's tier-0 file, or a copy fetched from a peer into our tier 0 (and published as another location).
    public func view(of info: ObjectInfo) async throws(GedsError) -> MappedBytes {
        try await readPath.view(of: info)
    }

    /// Drops our tier-0 copy of `blob` as a delete does (its RDMA registration first, its file recycled when it
    /// can be) but without telling the MDS: for benchmarks that read one object into tier 0 again and again.
    public func discardTier0Copy(_ blob: BlobID) {
        tiers.discardTier0Copy(blob)
    }

    /// The copies in the order this node's reads try them (see `ReadPath.ordered`).
    public func ordered(_ locations: [Location]) -> [Location] {
        readPath.ordered(locations)
    }

    /// Reads a range into caller memory (`buffer.count` bytes from `offset`, clipped to the object's size).
    public func read(_ info: ObjectInfo, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) async throws(GedsError) -> Int {
        try await readPath.read(info, at: offset, into: buffer)
    }

    /// Looks an object up on the caller's thread: nil when this node reaches the MDS over RDMA, or when the
    /// object is not in GEDS (its bucket's S3 store may have it: `lookup` adopts it).
    public func lookupOnCallerThread(bucket: String, key: String) throws(GedsError) -> ObjectInfo? {
        try readPath.lookupOnCallerThread(bucket: bucket, key: key)
    }

    // MARK: Namespace with S3 stores (see PersistenceAgent)

    /// The object under a key, read through from the bucket's S3 store when GEDS does not have it.
    public func lookup(bucket: String, key: String) async throws(GedsError) -> ObjectInfo {
        try await persistence.lookup(bucket: bucket, key: key)
    }

    /// The object's record once it exists sealed in GEDS (held at the MDS, answered from the commit that creates
    /// it); nil when `milliseconds` pass first.
    public func waitForObject(bucket: String, key: String, milliseconds: UInt32) async throws(GedsError) -> ObjectInfo? {
        try await mds.waitForObject(bucket: bucket, key: key, milliseconds: milliseconds)
    }

    /// One page of a bucket's keys: GEDS's merged with its S3 store's.
    public func list(bucket: String, prefix: String, delimiter: String, startAfter: String,
                     maxKeys: UInt32) async throws(GedsError) -> ListPage {
        try await persistence.list(bucket: bucket, prefix: prefix, delimiter: delimiter, startAfter: startAfter,
                                   maxKeys: maxKeys)
    }

    public func bucketStorage(_ bucket: String) async throws(GedsError) -> BucketStorage? {
        try await persistence.bucketStorage(bucket)
    }

    /// Refuses a persistency that needs an S3 store in a bucket without one, before anything is written.
    public func checkPersistency(_ persistency: Persistency?, bucket: String) async throws(GedsError) {
        try await persistence.checkPersistency(persistency, bucket: bucket)
    }

    /// Deletes a key, in GEDS and in its bucket's S3 store.
    public func delete(bucket: String, key: String) async throws(GedsError) {
        try await persistence.delete(bucket: bucket, key: key)
    }

    /// Deletes every key under `prefix`, in GEDS and in its bucket's S3 store; returns how many keys GEDS had.
    public func delete(bucket: String, prefix: String) async throws(GedsError) -> UInt64 {
        try await persistence.delete(bucket: bucket, prefix: prefix)
    }

    /// Deletes an empty bucket, or with `force` every object in it first.
    public func deleteBucket(_ bucket: String, force: Bool) async throws(GedsError) {
        writePath.bucketDeleted(bucket)
        try await persistence.deleteBucket(bucket, force: force)
    }

    /// Renames in GEDS; in a bucket with an S3 store the S3 object follows.
    public func rename(bucket: String, key: String, toBucket: String, toKey: String) async throws(GedsError) {
        try await persistence.rename(bucket: bucket, key: key, toBucket: toBucket, toKey: toKey)
    }

    /// Copies in GEDS; into a bucket with an S3 store, an object in S3 already is copied there server-side.
    public func copy(bucket: String, key: String, toBucket: String, toKey: String) async throws(GedsError) {
        try await persistence.copy(bucket: bucket, key: key, toBucket: toBucket, toKey: toKey)
    }

    /// Replaces an object's user metadata, in S3 too when the object is there already.
    public func setMetadata(bucket: String, key: String, _ metadata: [String: String]) async throws(GedsError) {
        try await persistence.setMetadata(bucket: bucket, key: key, metadata)
    }

    /// `flush` here and then on every other live node.
    public func flushEverywhere(timeoutMilliseconds: UInt64) async throws(GedsError) {
        try await persistence.flushEverywhere(timeoutMilliseconds: timeoutMilliseconds)
    }
}
