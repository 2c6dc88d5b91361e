import GedsCarrier
import GedsCore
import GedsWire
import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Calls to a TCP frame server (the MDS) made on the caller's own thread, over blocking connections. For callers
/// that block anyway (the C ABI, Python), a call then costs its round trip and one wake-up, the caller's, where
/// the event loop's path adds a hand-off to the loop and one back (measured in docs/PERFORMANCE.md). A connection
/// serves one call at a time; idle ones wait in a pool, so concurrent callers each get their own. A process forked
/// from the one that opened them never uses them (the two would read each other's replies): it opens its own.
public final class DirectCalls: Sendable {
    public let endpoint: Endpoint
    private let timeoutMilliseconds: Int64
    /// Idle connections kept beyond its 64 slots are closed.
    private let idle = IdleConnections(slotBits: 6)
    private let nextID = Atomic<UInt64>(1)
    private let token: DeploymentToken?
    /// A call's buffer at first: a lookup with up to about 8 KiB of inline bytes needs no more.
    private static let bufferCapacity = 8 << 10

    /// `token`: the deployment's, proved on each new connection (none: an open deployment).
    public init(endpoint: Endpoint, timeoutMilliseconds: Int64, token: DeploymentToken? = nil) {
        self.endpoint = endpoint
        self.timeoutMilliseconds = timeoutMilliseconds
        self.token = token
    }

    deinit {
        idle.closeAll()
    }

    /// Sends `request` and waits on this thread for its reply (failures answered by the server come back as
    /// `.failure`, as from the other transports). A pooled connection the server closed meanwhile (a restart)
    /// fails at once, and the call is made once more on a new one; one that times out is not tried again (the
    /// server may be working on it). A connection that fails is closed, never reused.
    public func call(_ request: Request) throws(GedsError) -> Reply {
        let process = getpid()
        if let pooled = idle.take(in: process).map(BlockingFrameSocket.init(descriptor:)) {
            do throws(GedsError) {
                return try exchange(request, on: pooled, of: process)
            } catch where error.code == .timedOut {
                throw error
            } catch {}
        }
        return try exchange(request, on: try connect(), of: process)
    }

    /// A new connection, authenticated when the deployment has a token.
    private func connect() throws(GedsError) -> BlockingFrameSocket {
        let socket = try BlockingFrameSocket.connect(tcp: endpoint, timeoutMilliseconds: timeoutMilliseconds)
        guard let token else { return socket }
        do throws(GedsError) {
            try ClientHandshake.run(token: token, peer: "MDS \(endpoint)") { (request) throws(GedsError) in
                try roundTrip(request, on: socket)
            }
        } catch {
            socket.close()
            throw error
        }
        return socket
    }

    /// One request and its reply; a failed one leaves the connection unusable (the caller closes it).
    private func roundTrip(_ request: Request, on socket: BlockingFrameSocket) throws(GedsError) -> Reply {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        do throws(GedsError) {
            // One buffer carries the request out and the reply in: a small object's whole lookup fits its first size.
            var buffer = ByteBufferAllocator().buffer(capacity: DirectCalls.bufferCapacity)
            FrameEncoder.append(request, id: id, to: &buffer)
            try socket.send(tcp: buffer)
            guard let header = try socket.receiveFrame(tcp: &buffer) else {
                throw GedsError(.mdsUnreachable, "\(endpoint) closed the connection")
            }
            guard header.kind == .reply, header.requestID == id else {
                throw GedsError(.protocolViolation, "\(endpoint) answered request \(id) with a \(header.kind) frame for \(header.requestID)")
            }
            return try Reply.decode(from: &buffer)
        } catch {
            throw error.code == .io ? GedsError(.mdsUnreachable, "\(endpoint): \(error.message)") : error
        }
    }

    /// `process`: this process's id, as the call found it (the pool keeps only its own connections).
    private func exchange(_ request: Request, on socket: BlockingFrameSocket, of process: pid_t) throws(GedsError) -> Reply {
        let reply: Reply
        do throws(GedsError) {
            reply = try roundTrip(request, on: socket)
        } catch {
            socket.close()
            throw error
        }
        if !idle.give(socket.descriptor, in: process) { socket.close() }
        return reply
    }
}

/// The idle connections (descriptors) of one process, in slots each taken and given back with one atomic operation:
/// threads calling at once never wait on each other (with one lock around a list, 16 callers on 2 cores spent more
/// time spinning on it than in their calls). A thread looks first at the slot its id hashes to, so it mostly finds
/// the connection it gave back. After a fork, the parent's are closed (the child's copies of the descriptors).
final class IdleConnections: Sendable {
    private final class Slot: Sendable {
        let descriptor = Atomic<Int32>(-1)
    }

    private let slots: [Slot]
    private let slotBits: Int
    /// The process the descriptors in the slots belong to.
    private let owner = Atomic<pid_t>(getpid())

    init(slotBits: Int) {
        self.slotBits = slotBits
        slots = (0..<(1 << slotBits)).map { _ in Slot() }
    }

    /// An idle descriptor, or nil when none is left.
    func take(in process: pid_t) -> Int32? {
        if owner.load(ordering: .acquiring) != process {
            closeAll()
            owner.store(process, ordering: .releasing)
        }
        let home = homeSlot()
        for step in 0..<slots.count {
            let slot = slots[(home + step) & (slots.count - 1)]
            if slot.descriptor.load(ordering: .relaxed) >= 0 {
                let descriptor = slot.descriptor.exchange(-1, ordering: .acquiring)
                if descriptor >= 0 { return descriptor }
            }
        }
        return nil
    }

    /// Keeps `descriptor` for a later call; false when every slot is full or the process is not the slots' (the
    /// caller then closes it).
    func give(_ descriptor: Int32, in process: pid_t) -> Bool {
        guard owner.load(ordering: .acquiring) == process else { return false }
        let home = homeSlot()
        for step in 0..<slots.count {
            let slot = slots[(home + step) & (slots.count - 1)]
            if slot.descriptor.compareExchange(expected: -1, desired: descriptor, ordering: .releasing).exchanged { return true }
        }
        return false
    }

    func closeAll() {
        for slot in slots {
            let descriptor = slot.descriptor.exchange(-1, ordering: .acquiring)
            if descriptor >= 0 { Glibc.close(descriptor) }
        }
    }

    /// The calling thread's first slot: its id, mixed (Fibonacci hashing) so that neighbouring ids spread.
    private func homeSlot() -> Int {
        Int(truncatingIfNeeded: (UInt64(pthread_self()) &* 0x9E37_79B9_7F4A_7C15) >> (64 - slotBits))
    }
}
