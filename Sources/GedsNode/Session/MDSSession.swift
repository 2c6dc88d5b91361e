import GedsCore
import GedsWire
import Logging
import Synchronization

/// What the MDS session needs of the node's copies (the tier manager's): their count for heartbeats, offering them
/// back after a registration, and dropping those the MDS withdrew.
protocol HeldCopies: AnyObject, Sendable {
    var usage: (blobs: UInt64, bytes: UInt64) { get }
    /// The bytes tier 0 can still take (reported so the MDS places new copies where there is room).
    var room: UInt64 { get }
    /// Offers the MDS the copies held here after a (re)registration. `checkingFiles`: at start, where files were
    /// left by an earlier process.
    func offerBack(checkingFiles: Bool) async
    /// Deletes every local copy of a blob the MDS withdrew.
    func drop(_ blob: BlobID) async
    /// Gives back memory kept for reuse that went unused for a while (called with every beat).
    func releaseIdleMemory()
}

/// This node's session with the MDS: its registration (index, advertised address, lease, inline limit), the
/// heartbeats that keep the lease, the drops they bring, and registering again after a lost lease.
final class MDSSession: Sendable {
    struct Registration {
        var index: UInt32 = 0
        var advertised = Endpoint(host: "", port: 0)
        var leaseMilliseconds: UInt32 = 5000
        /// Objects up to this size bring their bytes with their seal, for the MDS to keep inline.
        var inlineLimit: UInt32 = 0
    }

    let mds: MDSClient
    private let logger: Logger
    private let registration = Mutex(Registration())
    private let heartbeat = Mutex<Task<Void, Never>?>(nil)

    init(mds: MDSClient, logger: Logger) {
        self.mds = mds
        self.logger = logger
    }

    var index: UInt32 { registration.withLock { $0.index } }
    var advertised: Endpoint { registration.withLock { $0.advertised } }
    var inlineLimit: UInt32 { registration.withLock { $0.inlineLimit } }

    /// Registers the node (again after a lost lease), keeps the index and lease the MDS gives it, and offers it the
    /// copies held here (after a lost lease the MDS withdrew them; it takes back those it still knows).
    func register(_ node: NodeRegistration, offering copies: any HeldCopies, checkingFiles: Bool = false) async throws(GedsError) {
        let reply = try await mds.call(.registerNode(node))
        guard case .nodeRegistered(let index, let lease, let inlineLimit) = reply else { throw MDSClient.unexpected(reply) }
        registration.withLock {
            $0 = Registration(index: index, advertised: node.tcp, leaseMilliseconds: lease, inlineLimit: inlineLimit)
        }
        logger.info("registered with the MDS at \(mds.endpoint) as node \(index) (lease \(lease) ms)")
        await copies.offerBack(checkingFiles: checkingFiles)
    }

    /// Beats four times per lease, so one lost heartbeat never costs the lease: each beat gives back idle memory
    /// (`releaseIdleMemory`), reports the copies' usage, drops those the MDS says to, calls `drain` while the MDS asks the node to drain (`geds drain`),
    /// hands `replicate` the copies the MDS asks it to make (re-replication), and
    /// registers `node` again when the MDS no longer knows it. On `executor`, not the cooperative pool: an
    /// application whose tasks keep the pool's threads busy (the soak workload once did) must not make the node
    /// miss its lease.
    func startHeartbeats(as node: NodeRegistration, offering copies: any HeldCopies, on executor: any TaskExecutor,
                         drain: @escaping @Sendable () -> Void,
                         replicate: @escaping @Sendable ([ReplicationOrder]) -> Void) {
        let task = Task(executorPreference: executor) { [weak self, weak copies] in
            while !Task.isCancelled {
                guard let lease = self?.registration.withLock({ $0.leaseMilliseconds }) else { return }
                try? await Task.sleep(for: .milliseconds(max(Int(lease) / 4, 50)))
                guard let self, let copies, !Task.isCancelled else { return }
                await self.beat(as: node, offering: copies, drain: drain, replicate: replicate)
            }
        }
        heartbeat.withLock { $0 = task }
    }

    private func beat(as node: NodeRegistration, offering copies: any HeldCopies, drain: @Sendable () -> Void,
                      replicate: @Sendable ([ReplicationOrder]) -> Void) async {
        copies.releaseIdleMemory()
        do {
            let usage = copies.usage
            let reply = try await mds.call(.heartbeat(node: index, blobs: usage.blobs, bytes: usage.bytes, room: copies.room))
            if case .heartbeatAck(let dropped, let draining, let orders) = reply {
                for blob in dropped { await copies.drop(blob) }
                if draining { drain() }
                if !orders.isEmpty { replicate(orders) }
            }
        } catch where error.code == .noSuchNode {
            logger.warning("the MDS no longer knows this node; registering again")
            try? await register(node, offering: copies)
        } catch {
            logger.warning("heartbeat failed: \(error.message)")
        }
    }

    func stopHeartbeats() {
        heartbeat.withLock { $0?.cancel() }
    }

    /// Leaves the MDS (which withdraws the node's copies at once rather than when its lease runs out).
    func leave() async {
        // Index 0: never registered (the MDS numbers nodes from 1), so nothing to withdraw, and no call that would
        // fail again the way the registration did (a refused token, an MDS away).
        guard index != 0 else { return }
        try? await mds.expectOK(.leave(node: index))
    }
}
