import CVerbs
import GedsCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What a peer needs for a one-sided READ of a registered buffer: the address the owner's device knows it
/// by, its rkey, and its length.
public struct RemoteBuffer: Hashable, Sendable, CustomStringConvertible {
    public var address: UInt64
    public var rkey: UInt32
    public var length: UInt64

    public init(address: UInt64, rkey: UInt32, length: UInt64) {
        self.address = address
        self.rkey = rkey
        self.length = length
    }

    public var description: String {
        "0x\(String(address, radix: 16)) rkey 0x\(String(rkey, radix: 16)) (\(length) bytes)"
    }
}

/// The owner's side of one-sided READs: accepts reader connections on an address of its device and
/// registers buffers (tier-0 mappings) for remote reading. Answering READs takes no CPU of this process:
/// the device serves them from the registered pages.
///
/// Registrations use their own I/O virtual addresses, drawn from a random 64-bit range and never reused in
/// this process, so a READ that names a deregistered buffer fails at the device (remote access error) even
/// if the same memory or the same rkey value is registered again later: a stale location never yields
/// another buffer's bytes.
public final class RDMAResponder: Sendable {
    public let engine: RDMAEngine
    /// Where readers connect (the port chosen when 0 was asked for).
    public let endpoint: Endpoint
    private let handle: Int
    private let registrations = Mutex<[UInt64: MemoryRegion]>([:])
    private let nextAddress: Atomic<UInt64>
    private static let page: UInt64 = 4096

    private init(engine: RDMAEngine, endpoint: Endpoint, handle: Int) {
        self.engine = engine
        self.endpoint = endpoint
        self.handle = handle
        // A random, page-aligned start in [2^44, 2^52): far from real addresses and from other processes'.
        nextAddress = Atomic(UInt64.random(in: (1 << 32)..<(1 << 40)) << 12)
    }

    /// Listens for reader connections on `endpoint` (an address of the engine's device; port 0: any).
    public static func listen(engine: RDMAEngine, on endpoint: Endpoint) async throws(RDMAError) -> RDMAResponder {
        let bound = try await engine.call { (loop, reply: Reply<RDMAMessageListener.Pair>) in
            do throws(RDMAError) {
                let listener = try loop.listen(on: endpoint, purpose: .reads, messageOptions: nil)
                reply(.success(.init(endpoint: listener.endpoint, handle: listener.handle)))
            } catch {
                reply(.failure(error))
            }
        }
        return RDMAResponder(engine: engine, endpoint: bound.endpoint, handle: bound.handle)
    }

    /// Registers all of `memory` for remote READs and returns what a reader needs. The registration keeps
    /// `memory` alive until `deregister`.
    public func register(_ memory: some RegistrableMemory) throws(RDMAError) -> RemoteBuffer {
        let length = UInt64(memory.registrableBytes.count)
        let span = (length + 2 * Self.page - 1) / Self.page * Self.page  // a guard page between registrations
        let address = nextAddress.wrappingAdd(span, ordering: .relaxed).oldValue
        let region = try MemoryRegion(engine.protectionDomain, memory: memory, access: [.remoteRead], ioVirtualAddress: address)
        registrations.withLock { $0[address] = region }
        return RemoteBuffer(address: address, rkey: region.rkey, length: length)
    }

    /// Ends the registration: READs naming it fail from now on. Returns false when it was not registered.
    /// Call it only after the location that published it was withdrawn (so that no new reader gets it).
    @discardableResult
    public func deregister(_ buffer: RemoteBuffer) -> Bool {
        let region = registrations.withLock { registrations -> MemoryRegion? in
            guard let region = registrations[buffer.address], region.rkey == buffer.rkey else { return nil }
            registrations[buffer.address] = nil
            return region
        }
        return region != nil  // the region is deregistered here, as its last reference goes
    }

    public var registrationCount: Int { registrations.withLock { $0.count } }

    /// Stops accepting and closes the reader connections. Registrations stay until deregistered.
    public func close() async {
        let handle = self.handle
        _ = try? await engine.call { (loop, reply: Reply<Void>) in
            if let listener = loop.listenerHandles[handle] {
                loop.closeListener(listener, error: RDMAError(.closed, "the RDMA responder is closed"))
            }
            reply(.success(()))
        }
    }

    deinit {
        let handle = self.handle
        engine.submit { loop in
            guard let listener = loop.listenerHandles[handle] else { return }
            loop.closeListener(listener, error: RDMAError(.closed, "the RDMA responder is closed"))
        }
    }
}

/// The reader's side of one-sided READs: one RC connection per peer (made on first use through rdmacm and
/// kept), large reads split into chunks with several READs in flight (up to the device's initiator depth),
/// completions handled by the engine's poll thread, and a registration cache for destinations.
public final class RDMAReader: Sendable {
    public struct Options: Sendable {
        /// Bytes per READ work request (cut to the port's largest message).
        public var chunkSize = 1 << 20
        /// READs kept in flight per connection (cut to the device's initiator depth).
        public var readsInFlight = 16
        public var connectTimeout: Duration = .seconds(10)
        public init(chunkSize: Int = 1 << 20, readsInFlight: Int = 16, connectTimeout: Duration = .seconds(10)) {
            self.chunkSize = chunkSize
            self.readsInFlight = readsInFlight
            self.connectTimeout = connectTimeout
        }
    }

    public let engine: RDMAEngine
    public let options: Options
    /// Registrations of destinations (caller buffers, tier-0 copies being received), reused across reads.
    public let registrations: RegistrationCache
    private let id: Int
    private let chunkSize: UInt64
    private let depth: UInt8
    private static let ids = Atomic<Int>(1)

    public init(engine: RDMAEngine, options: Options = Options()) {
        self.engine = engine
        self.options = options
        registrations = RegistrationCache(protectionDomain: engine.protectionDomain)
        id = Self.ids.wrappingAdd(1, ordering: .relaxed).oldValue
        chunkSize = UInt64(max(4096, min(options.chunkSize, Int(engine.device.port.maxMessageSize))))
        depth = UInt8(max(1, min(options.readsInFlight, engine.device.limits.maxReadsInitiated, 128)))
    }

    deinit {
        let id = self.id
        engine.submit { loop in
            let closed = RDMAError(.closed, "the RDMA reader is closed")
            for (key, link) in loop.readerLinks where key.reader == id { loop.fail(link, closed) }
        }
    }

    /// Connects to `peer` now (reads connect on first use anyway).
    public func connect(to peer: Endpoint) async throws(RDMAError) {
        let key = ReaderKey(reader: id, peer: peer)
        let deadline = Clock.deadline(after: options.connectTimeout)
        let depth = self.depth
        try await engine.call { (loop, reply: Reply<Void>) in
            do throws(RDMAError) {
                let link = try loop.readerLink(key, initiatorDepth: depth, deadline: deadline)
                if link.state == .established { reply(.success(())) } else { link.connectWaiters.append(reply) }
            } catch {
                reply(.failure(error))
            }
        }
    }

    /// Reads `length` bytes at `offset` of `remote` (registered at `peer`) into `destination` at
    /// `destinationOffset`. Fails if no chunk completes for `timeout` (a progress deadline, as for TCP
    /// reads), and then the connection is dropped; after any failure the destination's bytes are undefined.
    public func read(from peer: Endpoint, _ remote: RemoteBuffer, offset: UInt64 = 0, length: Int,
                     into destination: MemoryRegion, at destinationOffset: Int = 0,
                     timeout: Duration = .seconds(10)) async throws(RDMAError) {
        guard length >= 0, destinationOffset >= 0, length <= destination.length - min(destinationOffset, destination.length),
              destinationOffset <= destination.length else {
            throw RDMAError(.invalidArgument, "READ of \(length) bytes at \(destinationOffset) does not fit a destination of \(destination.length)")
        }
        guard offset <= remote.length, UInt64(length) <= remote.length - offset else {
            throw RDMAError(.invalidArgument, "READ of \(length) bytes at \(offset) is outside the remote buffer \(remote)")
        }
        guard destination.access.contains(.localWrite) else {
            throw RDMAError(.invalidArgument, "the READ destination is not registered for local write")
        }
        guard destination.protectionDomain === engine.protectionDomain else {
            throw RDMAError(.invalidArgument, "the READ destination is registered with another engine's protection domain")
        }
        if length == 0 { return }
        let key = ReaderKey(reader: id, peer: peer)
        let connectDeadline = Clock.deadline(after: options.connectTimeout)
        let progress = Clock.nanoseconds(timeout)
        let chunkSize = self.chunkSize
        let depth = self.depth
        try await engine.call { (loop, reply: Reply<Void>) in
            let link: Link
            do throws(RDMAError) {
                link = try loop.readerLink(key, initiatorDepth: depth, deadline: connectDeadline)
            } catch {
                return reply(.failure(error))
            }
            let operation = ReadOperation(remoteAddress: remote.address + offset, rkey: remote.rkey, length: UInt64(length),
                                          region: destination, localOffset: destinationOffset, chunkSize: chunkSize,
                                          progressTimeout: progress, reply: reply,
                                          what: "RDMA READ of \(length) bytes of \(remote) from \(peer)")
            link.readQueue.append(operation)
            link.activeReads[ObjectIdentifier(operation)] = operation
            loop.postReads(link)
        }
    }

    /// Reads into any memory of this process that `owner` keeps valid (a tier-0 mapping, a buffer),
    /// registering it through the cache.
    public func read(from peer: Endpoint, _ remote: RemoteBuffer, offset: UInt64 = 0,
                     into destination: UnsafeMutableRawBufferPointer, owner: some AnyObject & Sendable,
                     timeout: Duration = .seconds(10)) async throws(RDMAError) {
        guard destination.count > 0, let start = destination.baseAddress else { return }
        let region = try registrations.region(for: destination, owner: owner)
        let regionOffset = Int(bitPattern: UInt(bitPattern: start) - UInt(bitPattern: region.base))
        try await read(from: peer, remote, offset: offset, length: destination.count, into: region, at: regionOffset,
                       timeout: timeout)
    }

    /// Drops the connection to `peer` (the next read connects again).
    public func disconnect(from peer: Endpoint) async {
        let key = ReaderKey(reader: id, peer: peer)
        _ = try? await engine.call { (loop, reply: Reply<Void>) in
            if let link = loop.readerLinks[key] { loop.fail(link, RDMAError(.closed, "RDMA connection to \(peer) closed")) }
            reply(.success(()))
        }
    }

    /// Peers this reader has a live or pending connection to.
    public func connectedPeers() async -> [Endpoint] {
        let id = self.id
        return (try? await engine.call { (loop, reply: Reply<[Endpoint]>) in
            reply(.success(loop.readerLinks.keys.filter { $0.reader == id }.map(\.peer)))
        }) ?? []
    }
}

extension EngineLoop {
    /// The reader's connection to a peer: the cached one, or a new one being set up.
    func readerLink(_ key: ReaderKey, initiatorDepth: UInt8, deadline: UInt64) throws(RDMAError) -> Link {
        if let link = readerLinks[key], link.state != .failed { return link }
        let link = try startConnection(to: key.peer, role: .reader(key: key), hello: Hello(purpose: .reads),
                                       initiatorDepth: initiatorDepth, deadline: deadline)
        readerLinks[key] = link
        return link
    }
}
