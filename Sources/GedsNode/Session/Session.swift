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

/// What a registration with the MDS means for this node's copies (the session itself: `MDSSession`).
extension Node {
    /// Registers with the MDS (again after a lost lease) and offers it the copies held here. `checkingTier1Files`:
    /// at start, where the tier-1 files were left by an earlier process (see `offerTier1Copies`).
    func register(checkingTier1Files: Bool = false) async throws(GedsError) {
        var host = configuration.advertisedHost ?? server.localAddress.host
        if host == "0.0.0.0" || host == "::" { host = "127.0.0.1" }
        let advertised = Endpoint(host: host, port: server.localAddress.port)
        try await session.register(NodeRegistration(
            name: configuration.name, hostID: configuration.hostID, role: configuration.role,
            tcp: advertised, tier0Directory: configuration.tier0Directory, rdma: rdma?.responder.endpoint))
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
}
