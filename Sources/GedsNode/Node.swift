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
    let bulk = BulkReader()
    let server: FrameServer
    let group: any EventLoopGroup
    private let session = Mutex<Session>(Session())
    private let heartbeat = Mutex<Task<Void, Never>?>(nil)
    /// S3 clients and the write-back queue (see Persistence.swift).
    let persistence = PersistenceState()

    struct Session {
        var index: UInt32 = 0
        var advertised = Endpoint(host: "", port: 0)
        var leaseMilliseconds: UInt32 = 5000
    }

    public var index: UInt32 { session.withLock { $0.index } }
    public var endpoint: Endpoint { session.withLock { $0.advertised } }
    var timeout: TimeAmount { .milliseconds(configuration.timeoutMilliseconds) }

    public static func start(_ configuration: NodeConfiguration, logger: Logger,
                             group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws(GedsError) -> Node {
        // First, so that a node demanding RDMA on a machine without it fails before it touches anything.
        var transport = try TransportSelection(configuration.transport, rdmaUnavailableReason: RDMA.unavailableReason)
        let tier0 = try Tier0Store(directory: configuration.tier0Directory)
        var tier1: Tier1Store?
        if let tier1Configuration = configuration.tier1 {
            guard configuration.tier0Capacity != nil else {
                throw GedsError(.invalidArgument, "a tier 1 needs a tier-0 capacity (when to spill to it)")
            }
            tier1 = try Tier1Store(tier1Configuration)
        }
        let executor = EventLoopTaskExecutor(group.next())
        let pool = ConnectionPool(group: executor.eventLoop)
        let service = NodeService()
        let server: FrameServer
        do {
            server = try await FrameServer.start(listen: configuration.listen, service: service, group: group, logger: logger)
        } catch {
            throw GedsError.wrapping(error)
        }
        var rdma: RDMADataPlane?
        var mdsOverRDMA: MDSClient.RDMASession?
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
        node.startHeartbeats()
        return node
    }

    private init(configuration: NodeConfiguration, tier0: Tier0Store, tier1: Tier1Store?, pool: ConnectionPool,
                 executor: EventLoopTaskExecutor, server: FrameServer, group: any EventLoopGroup, logger: Logger,
                 transport: TransportSelection, rdma: RDMADataPlane?, mdsOverRDMA: MDSClient.RDMASession?) {
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
        mds = MDSClient(endpoint: configuration.mds, pool: pool,
                        timeout: .milliseconds(configuration.timeoutMilliseconds), rdma: mdsOverRDMA)
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
                                           logger: Logger) async throws(GedsError) -> MDSClient.RDMASession? {
        do throws(GedsError) {
            let client = try await RDMAMetadataClient.connect(to: endpoint, engine: engine,
                                                              timeout: .milliseconds(configuration.timeoutMilliseconds))
            logger.info("MDS: over rdma at \(endpoint)")
            return MDSClient.RDMASession(client, logger: logger)
        } catch {
            if configuration.transport == .rdma { throw error }
            logger.notice("MDS: over tcp at \(configuration.mds) (\(error.message))")
            return nil
        }
    }

    // MARK: Session with the MDS

    /// `checkingTier1Files`: at start, where the tier-1 files were left by an earlier process (see
    /// `offerTier1Copies`).
    private func register(checkingTier1Files: Bool = false) async throws(GedsError) {
        var host = configuration.advertisedHost ?? server.localAddress.host
        if host == "0.0.0.0" || host == "::" { host = "127.0.0.1" }
        let advertised = Endpoint(host: host, port: server.localAddress.port)
        let reply = try await mds.call(.registerNode(NodeRegistration(
            name: configuration.name, hostID: configuration.hostID, role: configuration.role,
            tcp: advertised, tier0Directory: configuration.tier0Directory, rdma: rdma?.responder.endpoint)))
        guard case .nodeRegistered(let index, let lease) = reply else { throw MDSClient.unexpected(reply) }
        session.withLock { $0 = Session(index: index, advertised: advertised, leaseMilliseconds: lease) }
        logger.info("registered with the MDS at \(configuration.mds) as node \(index) (lease \(lease) ms)")
        // After a lost lease the MDS withdrew our copies; offer back those it still knows.
        for blob in tier0.inventory.keys {
            do {
                try await mds.expectOK(.addLocation(blob: blob, placement: tier0Placement(of: blob)))
            } catch {
                discardTier0Copy(blob)
            }
        }
        await offerTier1Copies(checkingFiles: checkingTier1Files)
    }

    private func startHeartbeats() {
        // On the node's event loop, not the cooperative pool: an application whose tasks keep the pool's threads
        // busy (the soak workload once did) must not make the node miss its lease.
        let task = Task(executorPreference: executor) { [weak self] in
            // Four beats per lease, so one lost heartbeat never costs the lease.
            while !Task.isCancelled {
                guard let lease = self?.session.withLock({ $0.leaseMilliseconds }) else { return }
                try? await Task.sleep(for: .milliseconds(max(Int(lease) / 4, 50)))
                guard let self, !Task.isCancelled else { return }
                await self.beat()
            }
        }
        heartbeat.withLock { $0 = task }
    }

    private func beat() async {
        let usage = tier0.usage
        do {
            let reply = try await mds.call(.heartbeat(node: index, blobs: usage.blobs, bytes: usage.bytes))
            if case .heartbeatAck(let drop) = reply {
                for blob in drop { await dropLocalCopies(of: blob) }
            }
        } catch where error.code == .noSuchNode {
            logger.warning("the MDS no longer knows this node; registering again")
            try? await register()
        } catch {
            logger.warning("heartbeat failed: \(error.message)")
        }
    }

    public func shutdown() async {
        await flushBeforeLeaving()  // still heartbeating: the copies being uploaded stay published meanwhile
        heartbeat.withLock { $0?.cancel() }
        try? await mds.expectOK(.leave(node: index))
        await server.close()
        await mds.rdma?.close()
        await rdma?.shutdown()
        peers.closeAll()
        await bulk.shutdown()
        await tier1?.shutdown()
        for client in persistence.clients.withLock({ Array($0.values) }) { await client.shutdown() }
        if configuration.removeTier0OnShutdown {
            for blob in tier0.inventory.keys { discardTier0Copy(blob) }
            rmdir(configuration.tier0Directory)
        }
    }

    // MARK: Writing

    public func create(bucket: String, key: String) async throws(GedsError) -> WritableBlob {
        let reply = try await mds.call(.createObject(bucket: bucket, key: key, node: index))
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
            sealReply = try await mds.call(.sealObject(blob: blob, size: size, metadata: metadata, placement: placement))
        } catch {
            discardTier0Copy(blob)
            try? await mds.expectOK(.abortObject(blob: blob))
            throw error
        }
        if target != nil { discardTier0Copy(blob) } else { admitted(blob) }
        try await persistSealed(blob, sealReply: sealReply, requested: persistency, holder: target)
    }

    /// Our tier-0 copy as a location for a peer to pull from (over RDMA when registered).
    func ownLocation(of blob: BlobID) -> Location {
        Location(node: configuration.name, hostID: configuration.hostID, tier: .tier0, tcp: endpoint,
                 rdma: rdmaAccess(of: blob), path: tier0.path(of: blob))
    }

    /// The placement that publishes our tier-0 copy: registered for one-sided READs first when this node
    /// runs over RDMA, so the MDS hands out its address and rkey.
    func tier0Placement(of blob: BlobID) -> BlobPlacement {
        let access = rdmaAccess(of: blob)
        return BlobPlacement(node: index, tier: .tier0, rdmaAddress: access?.address ?? 0, rkey: access?.rkey ?? 0)
    }

    /// Our tier-0 copy registered for one-sided READs (once; later calls reuse the registration), nil when
    /// this node runs over TCP or the copy could not be registered.
    private func rdmaAccess(of blob: BlobID) -> RDMAAccess? {
        guard let rdma, let remote = rdma.register(blob, path: tier0.path(of: blob)) else { return nil }
        return RDMAAccess(endpoint: rdma.responder.endpoint, address: remote.address, rkey: remote.rkey)
    }

    /// Deletes our tier-0 copy once the MDS no longer hands it out (or never did), its RDMA registration first.
    func discardTier0Copy(_ blob: BlobID) {
        rdma?.withdrawn(blob)
        tier0.remove(blob)
    }

    // MARK: Reading

    /// A zero-copy view of the whole object: our own copy (promoted from tier 1 when spilled), a same-host
    /// owner's tier-0 file, or a copy fetched from a peer into our tier 0 (and published as another location).
    public func view(of info: ObjectInfo) async throws(GedsError) -> MappedBytes {
        try await followingMoves(info) { (info) throws(GedsError) -> MappedBytes in
            var failures: [(node: String, error: GedsError)] = []
            do throws(GedsError) {
                if let own = try await ownCopy(info.blob) {
                    opened(info.blob, own)
                    return own
                }
            } catch {
                failures.append((configuration.name, error))
            }
            for location in ordered(info.locations) where isMappable(location) {
                do throws(GedsError) {
                    return try Tier0Store.map(path: location.path)
                } catch {
                    failures.append((location.node, error))
                }
            }
            for location in ordered(info.locations) where !isMappable(location) && location.node != configuration.name {
                do throws(GedsError) {
                    let copy = try await fetch(info.blob, size: info.size, from: location, publish: configuration.publishCachedCopies)
                    opened(info.blob, copy)
                    return copy
                } catch {
                    failures.append((location.node, error))
                }
            }
            throw unreachable(info, failures)
        }
    }

    /// Reads a range into caller memory (`buffer.count` bytes from `offset`, clipped to the object's size).
    public func read(_ info: ObjectInfo, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) async throws(GedsError) -> Int {
        guard offset < info.size, buffer.count > 0 else { return 0 }
        let length = min(UInt64(buffer.count), info.size - offset)
        let destination = CallerBufferSink(destination: UnsafeMutableRawBufferPointer(rebasing: buffer[..<Int(length)]))
        return try await followingMoves(info) { (info) throws(GedsError) -> Int in
            var failures: [(node: String, error: GedsError)] = []
            do throws(GedsError) {
                if let own = try await ownCopy(info.blob) { return try copy(from: own, at: offset, into: destination) }
            } catch {
                failures.append((configuration.name, error))
            }
            for location in ordered(info.locations) where location.node != configuration.name {
                do throws(GedsError) {
                    if isMappable(location) {
                        return try copy(from: try Tier0Store.map(path: location.path), at: offset, into: destination)
                    }
                    let got = try await transfer(info.blob, objectSize: info.size, offset: offset, length: length, from: location,
                                                 into: destination)
                    guard got == length else { throw GedsError(.protocolViolation, "node \(location.node) sent \(got) of \(length) bytes") }
                    return Int(length)
                } catch {
                    failures.append((location.node, error))
                }
            }
            throw unreachable(info, failures)
        }
    }

    private func copy(from mapping: MappedBytes, at offset: UInt64, into sink: CallerBufferSink) throws(GedsError) -> Int {
        let length = sink.destination.count
        guard mapping.count >= Int(offset) + length else { throw GedsError(.noSuchBlob, "copy is shorter than the object") }
        mapping.withBytes { bytes in
            sink.destination.baseAddress!.copyMemory(from: bytes.baseAddress!.advanced(by: Int(offset)), byteCount: length)
        }
        NodeMetrics.readLocal.increment(by: Int64(length))
        return length
    }

    /// Our own copy, mapped: tier 0 as it is, tier 1 promoted into tier 0 first; nil when we hold none.
    func ownCopy(_ blob: BlobID) async throws(GedsError) -> MappedBytes? {
        if tier0.contains(blob), let mapping = try? tier0.map(blob) {
            touched(blob)
            return mapping
        }
        guard holdsInTier1(blob) else { return nil }
        do {
            try await promote(blob)
        } catch where error.code == .outOfSpace {
            // Both tiers full: map the tier-1 file where it is (through the page cache) rather than fail.
            guard let tier1 else { throw error }
            return try Tier0Store.map(path: tier1.path(of: blob))
        }
        return try tier0.map(blob)
    }

    /// Whether a location's file can be mapped from here: a tier-0 copy on this host. Tier-1 files are
    /// read through their owner, which promotes them (and keeps the move order: MDS first, then the file).
    func isMappable(_ location: Location) -> Bool {
        location.tier == .tier0 && location.hostID == configuration.hostID
    }

    /// Runs a read against `info`, and once more against the MDS's current locations when it failed because
    /// the copies moved meanwhile (spilled, promoted, relocated): a reader never sees a move.
    private func followingMoves<Result>(_ info: ObjectInfo,
                                        _ attempt: (ObjectInfo) async throws(GedsError) -> Result) async throws(GedsError) -> Result {
        var current = info
        var retries = 2
        while true {
            do {
                return try await attempt(current)
            } catch where retries > 0 && error.code == .noSuchBlob {
                retries -= 1
                guard let fresh = try? await mds.lookup(bucket: info.bucket, key: info.key),
                      fresh.blob == info.blob, fresh.locations != current.locations else { throw error }
                current = fresh
            }
        }
    }

    /// Copies a blob from a peer into our tier 0 (once there is room), straight into its mapping.
    func fetch(_ blob: BlobID, size: UInt64, from location: Location, publish: Bool) async throws(GedsError) -> MappedBytes {
        let mapping = try await withTier0Room(size, for: blob) { () throws(GedsError) -> MappedBytes in
            try await receive(blob, size: size, from: location)
        }
        if publish {
            do {
                try await mds.expectOK(.addLocation(blob: blob, placement: tier0Placement(of: blob)))
            } catch where error.code == .noSuchBlob {
                discardTier0Copy(blob)  // deleted while we copied; the mapping stays valid for this reader
            } catch {
                logger.debug("could not publish cached copy of \(blob.fileName): \(error.message)")
            }
        }
        if tier0.contains(blob) { admitted(blob) }
        return mapping
    }

    /// Receives a blob from a peer into tier 0 (room for it already reserved).
    private func receive(_ blob: BlobID, size: UInt64, from location: Location) async throws(GedsError) -> MappedBytes {
        let receiving = try tier0.receive(blob, size: size)
        if size > 0 {
            let got = try await transfer(blob, objectSize: size, offset: 0, length: size, from: location,
                                         into: MappingSink(mapping: receiving.mapping))
            guard got == size else {
                throw GedsError(.protocolViolation, "node \(location.node) sent \(got) of \(size) bytes")
            }
        }
        try receiving.seal()
        return receiving.mapping
    }

    /// Reads from a peer: one-sided RDMA READs of its registered copy when both ends run over RDMA (and
    /// connecting works; else TCP from then on), otherwise large reads over a bulk TCP connection straight
    /// into the destination and small ones over the peer's multiplexed connection (one round trip, no
    /// thread hand-off).
    func transfer(_ blob: BlobID, objectSize: UInt64, offset: UInt64, length: UInt64, from location: Location,
                  into sink: any ReadSink) async throws(GedsError) -> UInt64 {
        if let object = location.s3Object {
            let got = try await readFromS3(object, offset: offset, length: length, into: sink)
            NodeMetrics.readS3.increment(by: Int64(got))
            return got
        }
        if let rdma, let access = location.rdma, rdma.offersRDMA(access.endpoint) {
            do throws(RDMADataPlane.PeerFailure) {
                try await rdma.read(access, objectSize: objectSize, offset: offset, length: length, into: sink,
                                    peerName: "node \(location.node)", timeout: .milliseconds(configuration.timeoutMilliseconds))
                NodeMetrics.readRDMA.increment(by: Int64(length))
                return length
            } catch .failed(let failure) {
                throw failure
            } catch {
                // No RDMA connection to this peer: the read goes over TCP below.
            }
        }
        let got: UInt64
        if length >= Node.bulkThreshold {
            got = try await bulk.read(blob: blob, offset: offset, length: length, from: location.tcp,
                                      peerName: "node \(location.node)", into: sink,
                                      timeoutMilliseconds: configuration.timeoutMilliseconds)
        } else {
            let connection = try await peers.connection(to: location.tcp, peerName: "node \(location.node)")
            got = try await connection.read(blob: blob, offset: offset, length: length, into: sink, timeout: timeout)
        }
        NodeMetrics.readTCP.increment(by: Int64(got))
        return got
    }

    static let bulkThreshold: UInt64 = 256 << 10

    /// Local copies first, then same-host ones, then the rest.
    private func ordered(_ locations: [Location]) -> [Location] {
        let me = configuration.name
        let host = configuration.hostID
        return locations.sorted { lhs, rhs in
            func rank(_ location: Location) -> Int {
                location.tier == .s3 ? 3 : location.node == me ? 0 : location.hostID == host ? 1 : 2
            }
            return rank(lhs) < rank(rhs)
        }
    }

    /// The error of a read that found no copy. When every copy tried was simply gone (moved between tiers or
    /// nodes since the lookup) it is `noSuchBlob`, which `followingMoves` answers with a fresh lookup.
    private func unreachable(_ info: ObjectInfo, _ failures: [(node: String, error: GedsError)]) -> GedsError {
        if info.locations.isEmpty {
            return GedsError(.objectLost, "object \(info.bucket)/\(info.key) has no copy left (its nodes are gone)")
        }
        let moved = !failures.isEmpty && failures.allSatisfy { $0.error.code == .noSuchBlob }
        return GedsError(moved ? .noSuchBlob : .peerUnreachable, "no copy of \(info.bucket)/\(info.key) could be read: "
                         + failures.map { "\($0.node): \($0.error.message)" }.joined(separator: "; "))
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

    private func askToPull(_ blob: BlobID, size: UInt64, from source: Location, to target: NodeInfo) async throws(GedsError) {
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

/// Serves peers: blob bytes (sendfile from the tier-0 file) and relocation requests.
final class NodeService: RequestService {
    let node = Mutex<Node?>(nil)

    func respond(to request: Request) -> Response {
        guard let node = node.withLock({ $0 }) else {
            return .reply(.failure(GedsError(.internal, "node is starting")))
        }
        switch request {
        case .readBlob(let blob, let offset, let length):
            guard node.holdsInTier1(blob) else { return serve(blob, offset: offset, length: length, from: node) }
            // Spilled: promoted back into tier 0 first (off the event loop), then sent from there.
            return .later { [self] () async -> Response in
                do throws(GedsError) {
                    try await node.promote(blob)
                    return serve(blob, offset: offset, length: length, from: node)
                } catch where error.code == .outOfSpace {
                    // Both tiers full: send from the tier-1 file where it is rather than fail the read.
                    return serve(blob, offset: offset, length: length, from: node, tier1: true)
                } catch {
                    return .reply(.failure(error))
                }
            }
        case .pullBlob(let blob, let size, let source):
            return .deferred { () async -> Reply in
                do throws(GedsError) {
                    try await node.pull(blob, size: size, from: source)
                    return .ok
                } catch {
                    return .failure(error)
                }
            }
        case .persistBlob, .flush:
            return node.respondToPersistence(request)
        default:
            return .reply(.failure(GedsError(.invalidArgument, "a node serves only object bytes; ask the MDS")))
        }
    }

    /// Sends a range of a tier-0 (or, when it cannot be promoted, tier-1) blob with sendfile.
    private func serve(_ blob: BlobID, offset: UInt64, length: UInt64, from node: Node, tier1: Bool = false) -> Response {
        do {
            let (descriptor, size) = tier1 ? try node.openTier1ForReading(blob) : try node.tier0.openForReading(blob)
            guard offset <= size, length <= size - offset else {
                close(descriptor)
                return .reply(.failure(GedsError(.invalidArgument, "range \(offset)+\(length) is outside blob \(blob.fileName) of \(size) bytes")))
            }
            node.touched(blob)
            return .file(FileStream(descriptor: descriptor, offset: offset, length: length))
        } catch {
            return .reply(.failure(error))
        }
    }
}

/// A copy arriving into tier 0: the mapping is kept alive by the sink until the read returns.
struct MappingSink: ReadSink {
    let mapping: MappedBytes

    var destination: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: mapping.base, count: mapping.count)
    }
}

// @unchecked: the caller's buffer outlives the awaited read, and only the transport writes it meanwhile.
struct CallerBufferSink: ReadSink, @unchecked Sendable {
    let destination: UnsafeMutableRawBufferPointer
}
