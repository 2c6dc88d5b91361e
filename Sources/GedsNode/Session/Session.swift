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

/// The node's session with the MDS: registration (and again after a lost lease), heartbeats, drops.
extension Node {
    // MARK: Session with the MDS

    /// `checkingTier1Files`: at start, where the tier-1 files were left by an earlier process (see
    /// `offerTier1Copies`).
    func register(checkingTier1Files: Bool = false) async throws(GedsError) {
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

    func startHeartbeats() {
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

    func beat() async {
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
}
