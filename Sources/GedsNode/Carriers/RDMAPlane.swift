import GedsCore
import GedsCarrier
import GedsTier0
import GedsVerbs
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A node's RDMA data plane: one engine on the device that owns the node's address, the responder peers
/// READ this node's tier 0 through, the reader for this node's own remote reads, the registrations of the
/// tier-0 copies it published, and the peers it found unreachable over RDMA (read over TCP from then on).
///
/// Life of a registration: a tier-0 copy is registered just before its placement (with address and rkey)
/// goes to the MDS, and deregistered only after the MDS has withdrawn that placement (delete, spill,
/// relocation, a lost lease); the responder never reuses a remote address, so a reader holding a withdrawn
/// location gets a failed READ (remote access error, which the read path answers with a fresh lookup).
///
/// Small copies packed into tier-0 slab slots are published as their slab's registration (made once per slab,
/// kept for the node's life) at their slot's address. A slot outlives the blob in it, so a reader READs the slot's
/// header with the bytes and fails with `noSuchBlob` when it no longer names the blob; a freed slot is reused only
/// after the node's timeout, when any READ of it has ended (see GedsTier0/Slabs.swift).
final class RDMADataPlane: Sendable {
    let engine: RDMAEngine
    let responder: RDMAResponder
    let reader: RDMAReader
    private let logger: Logger
    private let published = Mutex<[Registered: RemoteBuffer]>([:])
    private let peers = Mutex<[Endpoint: PeerState]>([:])
    private let registrationFailureLogged = Atomic<Bool>(false)
    /// Reads this node completed over RDMA (observability: which transport carried the bytes).
    let completedReads = Atomic<Int>(0)
    /// Registered bounce buffers for small reads into caller memory: registering a caller's buffer for one
    /// small READ would cost more than copying it, and caching registrations of memory we do not own is unsafe.
    private let staging = Mutex<[MemoryRegion]>([])

    /// Reads into caller memory up to this size go through a registered bounce buffer.
    static let stagingLimit = 256 << 10

    private enum PeerState: Equatable {
        case rdma
        /// Connecting failed; read over TCP until then, and try RDMA again afterwards.
        case tcpUntil(ContinuousClock.Instant)
    }

    /// How long a peer that could not be reached over RDMA is read over TCP before RDMA is tried again.
    static let retryRDMAAfter: Duration = .seconds(30)

    private init(engine: RDMAEngine, responder: RDMAResponder, logger: Logger) {
        self.engine = engine
        self.responder = responder
        reader = RDMAReader(engine: engine)
        self.logger = logger
    }

    /// Opens the device that owns `address` and listens for READ connections on it, on `port` when that is
    /// free in rdmacm's port space (the node's TCP port, so both are found at one number), else on any port.
    static func start(address: String, port: Int, logger: Logger) async throws(RDMAError) -> RDMADataPlane {
        let engine = try RDMAEngine(localAddress: address)
        let responder: RDMAResponder
        do throws(RDMAError) {
            responder = try await RDMAResponder.listen(engine: engine, on: Endpoint(host: address, port: port))
        } catch {
            do throws(RDMAError) {
                responder = try await RDMAResponder.listen(engine: engine, on: Endpoint(host: address, port: 0))
            } catch {
                engine.shutdown()
                throw error
            }
        }
        return RDMADataPlane(engine: engine, responder: responder, logger: logger)
    }

    func shutdown() async {
        await responder.close()
        engine.shutdown()
    }

    // MARK: The owner's side

    /// A registered tier-0 file: one blob's, or a slab of packed ones.
    private enum Registered: Hashable {
        case blob(BlobID)
        case slab(UInt32)
    }

    /// Registers a sealed tier-0 file for remote READs (once; later calls return the same registration).
    /// Nil when it cannot be registered (an empty object, or the device's limits reached): that copy is then
    /// read over TCP, and the first failure is logged.
    func register(_ blob: BlobID, path: String) -> RemoteBuffer? {
        register(.blob(blob)) { () throws(RDMAError) in
            // Mapped writable: kernels before 6.2 refuse to pin a read-only shared file mapping. Nothing writes
            // through it (the registration grants remote READ only).
            do throws(RDMAError) {
                return try responder.register(SharedMapping(path: path, writable: true))
            } catch {
                return try responder.register(SharedMapping(path: path, writable: false))
            }
        }
    }

    /// Registers a tier-0 slab for remote READs of all its slots (once per slab; it stays registered for the
    /// node's life). Its own mapping is registered, the one the store writes slots through, which pins (and so
    /// backs) the whole slab. Nil as for `register(_:path:)`.
    func register(slab: UInt32, mapping: MappedBytes) -> RemoteBuffer? {
        register(.slab(slab)) { () throws(RDMAError) in try responder.register(SlabMemory(mapping: mapping)) }
    }

    private func register(_ file: Registered, _ registering: () throws(RDMAError) -> RemoteBuffer) -> RemoteBuffer? {
        if let existing = published.withLock({ $0[file] }) { return existing }
        let remote: RemoteBuffer
        do throws(RDMAError) {
            remote = try registering()
        } catch {
            if error.kind != .invalidArgument, !registrationFailureLogged.exchange(true, ordering: .relaxed) {
                logger.warning("cannot register tier-0 copies for RDMA (\(error.message)); such copies are read over tcp")
            }
            return nil
        }
        let kept = published.withLock { published -> RemoteBuffer in
            if let raced = published[file] { return raced }
            published[file] = remote
            return remote
        }
        if kept != remote { responder.deregister(remote) }
        return kept
    }

    /// Ends a copy's registration. Call only after the MDS withdrew the placement that published it.
    func withdrawn(_ blob: BlobID) {
        if let remote = published.withLock({ $0.removeValue(forKey: .blob(blob)) }) { responder.deregister(remote) }
    }

    /// Registrations of copies in files of their own (slabs not counted).
    var registeredCopies: Int { published.withLock { $0.keys.count { if case .blob = $0 { true } else { false } } } }

    // MARK: The reader's side

    /// Whether to try RDMA with `peer`: yes, unless connecting to it failed in the last `retryRDMAAfter`.
    func offersRDMA(_ peer: Endpoint) -> Bool {
        guard case .tcpUntil(let until) = peers.withLock({ $0[peer] }) else { return true }
        return ContinuousClock.now >= until
    }

    /// Reads `length` bytes at `offset` of a peer's registered copy into `sink`. Throws `.noRDMA` when no RDMA
    /// connection to the peer can be made (the caller reads over TCP; said once per peer in the log), else
    /// the read's error (a withdrawn copy is `noSuchBlob`). `packed`: the copy is a slab slot, which must still
    /// name that blob (its header is read with the bytes).
    func read(_ access: RDMAAccess, objectSize: UInt64, offset: UInt64, length: UInt64, into sink: any ReadSink,
              packed: BlobID?, peerName: String, timeout: Duration) async throws(PeerFailure) {
        let peer = access.endpoint
        // Connected before: the read itself reconnects if it must (no extra hop to the poll thread).
        let connected = peers.withLock { $0[peer] } == .rdma
        if !connected {
            do throws(RDMAError) {
                try await reader.connect(to: peer)
            } catch {
                fallBack(from: peer, peerName: peerName, error)
                throw .noRDMA
            }
            if peers.withLock({ $0.updateValue(.rdma, forKey: peer) }) != .rdma {
                logger.info("\(peerName): reading over rdma from \(peer)")
            }
        }
        let remote = RemoteBuffer(address: access.address, rkey: access.rkey, length: objectSize)
        let destination = sink.destination
        var slotHeldTheBlob = true
        do throws(RDMAError) {
            if let packed {
                slotHeldTheBlob = try await readSlot(of: packed, from: peer, remote, offset: offset, into: destination,
                                                     timeout: timeout)
            } else if destination.count <= Self.stagingLimit {
                try await readStaged(from: peer, remote, offset: offset, into: destination, timeout: timeout)
            } else {
                // A registration of the destination for this read only: it may be a caller's buffer, which
                // may be freed (and its addresses reused) as soon as we return.
                let region = try MemoryRegion(engine.protectionDomain, bytes: destination, access: [.localWrite],
                                              owner: SinkOwner(sink))
                try await reader.read(from: peer, remote, offset: offset, length: Int(length), into: region, timeout: timeout)
            }
        } catch {
            // The connection broke and could not be made again: this read goes over TCP (which fails as
            // fast if the peer itself is gone).
            if error.kind == .connection {
                fallBack(from: peer, peerName: peerName, error)
                throw .noRDMA
            }
            throw .failed(error.gedsError)
        }
        guard slotHeldTheBlob else {
            throw .failed(GedsError(.noSuchBlob, "\(peerName): the slot of blob \(packed?.fileName ?? "") no longer holds it"))
        }
        completedReads.add(1, ordering: .relaxed)
    }

    /// Reads `peer` over TCP for a while; said once until RDMA works with it again.
    private func fallBack(from peer: Endpoint, peerName: String, _ error: RDMAError) {
        let first = peers.withLock { peers in
            defer { peers[peer] = .tcpUntil(ContinuousClock.now + Self.retryRDMAAfter) }
            return peers[peer] == nil || peers[peer] == .rdma
        }
        if first { logger.notice("\(peerName): no RDMA connection to \(peer) (\(error.message)); reading over tcp") }
    }

    enum PeerFailure: Error {
        /// No RDMA connection could be made: read over TCP instead.
        case noRDMA
        case failed(GedsError)
    }

    private func readStaged(from peer: Endpoint, _ remote: RemoteBuffer, offset: UInt64,
                            into destination: UnsafeMutableRawBufferPointer, timeout: Duration) async throws(RDMAError) {
        try await withStaging { (region) throws(RDMAError) in
            try await reader.read(from: peer, remote, offset: offset, length: destination.count, into: region, timeout: timeout)
            destination.baseAddress?.copyMemory(from: region.base, byteCount: destination.count)
        }
    }

    /// One READ of a packed copy's slot header and its bytes up to the end of the range (a slot is at most
    /// GedsTier0's pack limit, well within a staging buffer). False, and nothing copied, when the header does not
    /// name `blob` of `remote.length` bytes.
    private func readSlot(of blob: BlobID, from peer: Endpoint, _ remote: RemoteBuffer, offset: UInt64,
                          into destination: UnsafeMutableRawBufferPointer, timeout: Duration) async throws(RDMAError) -> Bool {
        let length = SlotHeader.size + Int(offset) + destination.count
        guard length <= Self.stagingLimit else {
            throw RDMAError(.invalidArgument, "a packed copy of \(remote.length) bytes is larger than any slot")
        }
        let slot = RemoteBuffer(address: remote.address, rkey: remote.rkey, length: UInt64(SlotHeader.size) + remote.length)
        return try await withStaging { (region) throws(RDMAError) -> Bool in
            try await reader.read(from: peer, slot, offset: 0, length: length, into: region, timeout: timeout)
            guard SlotHeader.names(blob, size: remote.length, at: region.base) else { return false }
            destination.baseAddress?.copyMemory(from: region.base + SlotHeader.size + Int(offset), byteCount: destination.count)
            return true
        }
    }

    /// Runs `body` with a registered bounce buffer of `stagingLimit` bytes from the pool.
    private func withStaging<Result>(_ body: (MemoryRegion) async throws(RDMAError) -> Result) async throws(RDMAError) -> Result {
        let region: MemoryRegion
        if let pooled = staging.withLock({ $0.popLast() }) {
            region = pooled
        } else {
            region = try MemoryRegion(engine.protectionDomain, memory: AlignedBuffer(count: Self.stagingLimit), access: [.localWrite])
        }
        let result = try await body(region)
        // Only after a READ that completed: a failed one may still be flushing into the buffer.
        staging.withLock { if $0.count < 64 { $0.append(region) } }
        return result
    }
}

/// Keeps a read's sink (and so the memory it points at, when the sink owns it) alive while registered.
private final class SinkOwner: Sendable {
    let sink: any ReadSink
    init(_ sink: any ReadSink) { self.sink = sink }
}

/// A tier-0 slab's mapping as memory to register (the registration keeps it, and so the slab's pages, alive).
private final class SlabMemory: RegistrableMemory {
    let mapping: MappedBytes
    init(mapping: MappedBytes) { self.mapping = mapping }
    var registrableBytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: mapping.base, count: mapping.count) }
}
