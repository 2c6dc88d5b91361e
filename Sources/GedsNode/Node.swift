import GedsCarrier
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
import Synchronization

/// A node: its tier 0, the server that hands its blobs to peers, its MDS session (lease and heartbeats),
/// and the read path that finds a copy (own tier 0, a file on the same host, a peer over TCP).
public final class Node: Sendable {
    public let configuration: NodeConfiguration
    public let tier0: Tier0Store
    /// Where tier 0 spills to (nil: no tier 1).
    public let tier1: Tier1Store?
    /// Tier-0 budget, spill order and moves in progress (see Tiering.swift).
    let tiers: Mutex<TierState>
    public let mds: MDSClient
    public let logger: Logger
    /// The transports this node offers, chosen at start.
    public let transport: TransportSelection
    /// The RDMA data plane (nil: this node reads and serves over TCP only).
    let rdma: RDMADataPlane?
    let peers: ConnectionPool
    /// The event loop of all this node's client connections, as a task executor (see `onLoop`).
    let executor: EventLoopTaskExecutor
    let bulk: BulkReader
    let server: FrameServer
    let group: any EventLoopGroup
    /// This node's registration and heartbeats.
    let session: MDSSession
    /// S3 clients and the write-back queue (see Persistence.swift).
    let persistence: PersistenceState
    /// The carriers this node reads copies over.
    let carriers: CopyCarriers
    /// Lookups on callers' own threads (see `lookupOnCallerThread`).
    let direct: DirectCalls
    /// Set by `shutdown`: reads fail from then on, also of objects whose bytes a reader holds already.
    private let stopped = Atomic<Bool>(false)
    let drainState = DrainState()

    public var index: UInt32 { session.index }
    public var endpoint: Endpoint { session.advertised }
    var timeout: TimeAmount { .milliseconds(configuration.timeoutMilliseconds) }

    public static func start(_ configuration: NodeConfiguration, logger: Logger,
                             group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws(GedsError) -> Node {
        // First, so that a node demanding RDMA on a machine without it fails before it touches anything.
        var transport = try TransportSelection(configuration.transport, rdmaUnavailableReason: RDMA.unavailableReason)
        // A freed slab slot waits out the node's timeout: reads of it that started before have ended by then.
        let tier0 = try Tier0Store(directory: configuration.tier0Directory,
                                   quarantine: .milliseconds(configuration.timeoutMilliseconds))
        var tier1: Tier1Store?
        if let tier1Configuration = configuration.tier1 {
            guard configuration.tier0Capacity != nil else {
                throw GedsError(.invalidArgument, "a tier 1 needs a tier-0 capacity (when to spill to it)")
            }
            tier1 = try Tier1Store(tier1Configuration)
        }
        let executor = EventLoopTaskExecutor(group.next())
        let pool = ConnectionPool(group: executor.eventLoop, token: configuration.token)
        let service = NodeService()
        let server: FrameServer
        do {
            server = try await FrameServer.start(listen: configuration.listen, service: service, group: group, logger: logger,
                                                 authentication: configuration.serverAuthentication(logger))
        } catch {
            throw GedsError.wrapping(error)
        }
        var rdma: RDMADataPlane?
        var mdsOverRDMA: RDMAMetadataClient?
        do throws(GedsError) {
            if transport.offersRDMA {
                rdma = try await startRDMA(configuration, transport: &transport, port: server.localAddress.port, logger: logger)
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
        let node = Node(configuration: configuration, tier0: tier0, tier1: tier1, pool: pool, executor: executor,
                        server: server, group: group, logger: logger, transport: transport, rdma: rdma,
                        mdsOverRDMA: mdsOverRDMA)
        service.node.withLock { $0 = node }
        do {
            try await node.register(checkingTier1Files: true)
        } catch {
            await node.shutdown()
            throw error
        }
        node.session.startHeartbeats(on: executor, usage: { [weak node] in node?.tier0.usage ?? (0, 0) },
                                     drop: { [weak node] blob in await node?.dropLocalCopies(of: blob) },
                                     drain: { [weak node] in node?.startDrain() },
                                     registerAgain: { [weak node] in try? await node?.register() })
        return node
    }

    private init(configuration: NodeConfiguration, tier0: Tier0Store, tier1: Tier1Store?, pool: ConnectionPool,
                 executor: EventLoopTaskExecutor, server: FrameServer, group: any EventLoopGroup, logger: Logger,
                 transport: TransportSelection, rdma: RDMADataPlane?, mdsOverRDMA: RDMAMetadataClient?) {
        self.configuration = configuration
        self.tier0 = tier0
        self.tier1 = tier1
        tiers = Mutex(TierState(policy: configuration.tier0Capacity.map {
            SpillPolicy(capacity: $0, highWater: configuration.spillHighWater, lowWater: configuration.spillLowWater)
        }))
        self.peers = pool
        self.executor = executor
        self.server = server
        self.group = group
        self.logger = logger
        self.transport = transport
        self.rdma = rdma
        let bulk = BulkReader(token: configuration.token)
        let persistence = PersistenceState(logger: logger)
        self.bulk = bulk
        self.persistence = persistence
        carriers = CopyCarriers(rdma: rdma, bulk: bulk, pool: pool, s3Clients: persistence.s3Clients,
                                timeoutMilliseconds: configuration.timeoutMilliseconds)
        direct = DirectCalls(endpoint: configuration.mds, timeoutMilliseconds: configuration.timeoutMilliseconds,
                             token: configuration.token)
        mds = MDSClient(endpoint: configuration.mds, pool: pool,
                        timeout: .milliseconds(configuration.timeoutMilliseconds), rdma: mdsOverRDMA, logger: logger)
        session = MDSSession(mds: mds, logger: logger)
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
        stopped.store(true, ordering: .releasing)
        await flushBeforeLeaving()  // still heartbeating: the copies being uploaded stay published meanwhile
        session.stopHeartbeats()
        await session.leave()
        await server.close()
        await mds.rdma?.close()
        await rdma?.shutdown()
        peers.closeAll()
        await bulk.shutdown()
        await tier1?.shutdown()
        await persistence.s3Clients.shutdown()
        if configuration.removeTier0OnShutdown {
            for blob in tier0.inventory.keys { discardTier0Copy(blob) }
            tier0.removeSlabFiles()
            rmdir(configuration.tier0Directory)
        }
    }

    // MARK: Writing

    public func create(bucket: String, key: String, exclusive: Bool = false) async throws(GedsError) -> WritableBlob {
        let reply = try await mds.call(.createObject(bucket: bucket, key: key, node: index, exclusive: exclusive))
        guard case .created(let blob) = reply else { throw MDSClient.unexpected(reply) }
        do {
            return try tier0.create(blob)
        } catch {
            try? await mds.expectOK(.abortObject(blob: blob))
            throw error
        }
    }

    /// Seals an object: it becomes immutable and visible everywhere in one step at the MDS. With a target,
    /// the target takes the bytes first and the object is published with the target as its only copy, so
    /// a failed hand-off leaves nothing half-made (an older object under the key stays as it was). Then the
    /// object is made as durable as `persistency` (else its bucket's) says; see Persistence.swift.
    public func seal(_ writable: WritableBlob, metadata: [String: String], handingOffTo target: NodeInfo? = nil,
                     persistency: Persistency? = nil) async throws(GedsError) {
        try UserMetadata.validate(metadata)
        let blob = writable.blob
        let contents = inlineContents(of: writable)
        let size = try writable.seal()
        NodeMetrics.writtenLocal.increment(by: Int64(size))
        pin(blob)  // not spilled while pending at the MDS
        defer { unpin(blob) }
        let sealReply: Reply
        do {
            let placement: BlobPlacement
            if let target {
                try await askToPull(blob, size: size, from: ownLocation(of: blob), to: target)
                placement = BlobPlacement(node: 0, tier: .tier0)
            } else {
                try await checkTier0Capacity(sealing: blob, size: size)
                placement = tier0Placement(of: blob)
            }
            sealReply = try await mds.call(.sealObject(blob: blob, size: size, metadata: metadata, placement: placement,
                                                       contents: contents?.count == Int(size) ? contents : nil))
        } catch {
            discardTier0Copy(blob)
            try? await mds.expectOK(.abortObject(blob: blob))
            throw error
        }
        if target != nil { discardTier0Copy(blob) } else { admitted(blob) }
        try await persistSealed(blob, sealReply: sealReply, requested: persistency, holder: target)
    }

    /// The bytes of an object about to be sealed, when it is small enough for the MDS to keep them inline.
    /// Nil when it cannot be read back (the seal then goes without: the node's copy serves reads).
    private func inlineContents(of writable: WritableBlob) -> [UInt8]? {
        let size = writable.size
        guard size > 0, size <= UInt64(session.inlineLimit) else { return nil }
        let bytes = [UInt8](unsafeUninitializedCapacity: Int(size)) { buffer, count in
            count = (try? writable.read(into: UnsafeMutableRawBufferPointer(buffer), at: 0)) ?? 0
        }
        return bytes.count == Int(size) ? bytes : nil
    }

    /// Looks an object up on the caller's thread (see `DirectCalls`): nil when this node reaches the MDS over RDMA, or
    /// when the object is not in GEDS (its bucket's S3 store may have it: the event loop's `lookup` adopts it).
    public func lookupOnCallerThread(bucket: String, key: String) throws(GedsError) -> ObjectInfo? {
        try checkRunning()
        guard mds.rdma?.active != true else { return nil }
        switch try direct.call(.lookup(bucket: bucket, key: key)) {
        case .object(let info): return info
        case .failure(let error) where error.code == .noSuchObject: return nil
        case .failure(let error): throw error
        case let reply: throw MDSClient.unexpected(reply)
        }
    }

    func checkRunning() throws(GedsError) {
        if stopped.load(ordering: .acquiring) {
            throw GedsError(.invalidArgument, "the GEDS handle of this node is closed")
        }
    }

    /// Our tier-0 copy as a location for a peer to pull from (over RDMA when registered).
    func ownLocation(of blob: BlobID) -> Location {
        let (path, slot) = tier0.place(of: blob)
        return Location(node: configuration.name, hostID: configuration.hostID, tier: .tier0, tcp: endpoint,
                        rdma: rdmaAccess(of: blob, path: path, slot: slot), path: path, offset: slot?.offset)
    }

    /// The placement that publishes our tier-0 copy: registered for one-sided READs first when this node
    /// runs over RDMA, so the MDS hands out its address and rkey.
    func tier0Placement(of blob: BlobID) -> BlobPlacement {
        let (path, slot) = tier0.place(of: blob)
        let access = rdmaAccess(of: blob, path: path, slot: slot)
        return BlobPlacement(node: index, tier: .tier0, rdmaAddress: access?.address ?? 0, rkey: access?.rkey ?? 0, slot: slot)
    }

    /// Our tier-0 copy registered for one-sided READs (once; later calls reuse the registration), nil when
    /// this node runs over TCP, the copy could not be registered, or it is packed into a slab slot: a packed
    /// copy publishes no rkey and is read over TCP (a process test once read a wrong slot header over RDMA,
    /// cause unknown; such small objects mostly come inline from the MDS anyway).
    private func rdmaAccess(of blob: BlobID, path: String, slot: SlabSlot?) -> RDMAAccess? {
        guard slot == nil, let rdma, let remote = rdma.register(blob, path: path) else { return nil }
        return RDMAAccess(endpoint: rdma.responder.endpoint, address: remote.address, rkey: remote.rkey)
    }

    /// Deletes our tier-0 copy once the MDS no longer hands it out (or never did), its RDMA registration first.
    func discardTier0Copy(_ blob: BlobID) {
        rdma?.withdrawn(blob)
        tier0.remove(blob)
    }

    // MARK: Relocation

    /// Hands a sealed object to another node, which becomes its owner; our copy goes afterwards.
    public func relocate(_ info: ObjectInfo, to target: NodeInfo) async throws(GedsError) {
        if holdsInTier1(info.blob) { try await promote(info.blob) }  // the target takes it from our tier 0
        let source = tier0.contains(info.blob) ? ownLocation(of: info.blob) : ordered(info.locations).first
        guard let source else { throw unreachable(info, []) }
        try await askToPull(info.blob, size: info.size, from: source, to: target)
        if tier0.contains(info.blob) {
            try? await mds.expectOK(.removeLocation(blob: info.blob, node: index))
            discardTier0Copy(info.blob)
        }
    }

    func askToPull(_ blob: BlobID, size: UInt64, from source: Location, to target: NodeInfo) async throws(GedsError) {
        let connection = try await peers.connection(to: target.tcp, peerName: "node \(target.name)")
        // The target copies the whole object before it answers: allow for that beyond the usual deadline.
        let reply = try await connection.call(.pullBlob(blob: blob, size: size, source: source),
                                              timeout: .milliseconds(configuration.timeoutMilliseconds + Int64(size >> 20) * 100))
        switch reply {
        case .ok: break
        case .failure(let error): throw error
        default: throw MDSClient.unexpected(reply)
        }
    }

    /// Serves `pullBlob`: take the blob from the source (a hard link on the same host, else a network copy)
    /// and publish ourselves as a location.
    func pull(_ blob: BlobID, size: UInt64, from source: Location) async throws(GedsError) {
        if !tier0.contains(blob) {
            try await withTier0Room(size, for: blob) { () throws(GedsError) in
                let linked = source.tier == .tier0 && source.hostID == configuration.hostID
                    && tier0.adopt(blob, linkingFrom: source.path)
                if !linked { _ = try await receive(blob, size: size, from: source) }
            }
        }
        do {
            try await mds.expectOK(.addLocation(blob: blob, placement: tier0Placement(of: blob)))
        } catch {
            discardTier0Copy(blob)
            throw error
        }
        admitted(blob)
    }
}
