import GedsCore
import GedsWire
import Logging
import Synchronization

/// This node's session with the MDS: its registration (index, advertised address, lease) and the heartbeats that
/// keep the lease. What a (re)registration and a heartbeat's drops mean for the node's copies is the node's
/// (`Node.register`, `Node.dropLocalCopies`).
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

    /// Registers the node (again after a lost lease) and keeps the index and lease the MDS gives it.
    func register(_ node: NodeRegistration) async throws(GedsError) {
        let reply = try await mds.call(.registerNode(node))
        guard case .nodeRegistered(let index, let lease, let inlineLimit) = reply else { throw MDSClient.unexpected(reply) }
        registration.withLock {
            $0 = Registration(index: index, advertised: node.tcp, leaseMilliseconds: lease, inlineLimit: inlineLimit)
        }
        logger.info("registered with the MDS at \(mds.endpoint) as node \(index) (lease \(lease) ms)")
    }

    /// Beats four times per lease, so one lost heartbeat never costs the lease: each beat reports `usage()`, hands
    /// the copies the MDS says to drop to `drop`, calls `drain` while the MDS asks the node to drain, and calls
    /// `registerAgain` when the MDS no longer knows the node.
    /// On `executor`, not the cooperative pool: an application whose tasks keep the pool's threads busy (the soak
    /// workload once did) must not make the node miss its lease.
    func startHeartbeats(on executor: any TaskExecutor, usage: @escaping @Sendable () -> (blobs: UInt64, bytes: UInt64),
                         drop: @escaping @Sendable (BlobID) async -> Void,
                         drain: @escaping @Sendable () -> Void,
                         registerAgain: @escaping @Sendable () async -> Void) {
        let task = Task(executorPreference: executor) { [weak self] in
            while !Task.isCancelled {
                guard let lease = self?.registration.withLock({ $0.leaseMilliseconds }) else { return }
                try? await Task.sleep(for: .milliseconds(max(Int(lease) / 4, 50)))
                guard let self, !Task.isCancelled else { return }
                await self.beat(usage: usage(), drop: drop, drain: drain, registerAgain: registerAgain)
            }
        }
        heartbeat.withLock { $0 = task }
    }

    private func beat(usage: (blobs: UInt64, bytes: UInt64), drop: @Sendable (BlobID) async -> Void,
                      drain: @Sendable () -> Void, registerAgain: @Sendable () async -> Void) async {
        do {
            let reply = try await mds.call(.heartbeat(node: index, blobs: usage.blobs, bytes: usage.bytes))
            if case .heartbeatAck(let dropped, let draining) = reply {
                for blob in dropped { await drop(blob) }
                if draining { drain() }
            }
        } catch where error.code == .noSuchNode {
            logger.warning("the MDS no longer knows this node; registering again")
            await registerAgain()
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
