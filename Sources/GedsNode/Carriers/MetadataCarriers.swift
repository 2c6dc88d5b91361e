import GedsCarrier
import GedsCore
import GedsMetadataRDMA
import GedsTCP
import GedsWire
import Logging
import NIOCore
import Synchronization

/// The MDS over one multiplexed TCP connection, re-made when it breaks.
struct TCPMetadataCarrier: MetadataCarrier {
    let endpoint: Endpoint
    let pool: ConnectionPool
    let timeout: TimeAmount

    func call(_ request: Request) async throws(GedsError) -> Reply {
        try await call(request, timeout: timeout)
    }

    /// `cancellable`: a cancelled task stops waiting for the reply (for calls that change nothing).
    func call(_ request: Request, timeout: TimeAmount, cancellable: Bool = false) async throws(GedsError) -> Reply {
        let connection = try await pool.connection(to: endpoint, peerName: "MDS")
        do {
            return try await connection.call(request, timeout: timeout, cancellable: cancellable)
        } catch where error.code == .peerUnreachable {
            throw GedsError(.mdsUnreachable, "MDS unreachable at \(endpoint): \(error.message)")
        }
    }
}

/// The MDS over RDMA send/receive until that connection fails; then TCP (said once in the log), since the MDS serves
/// both and a node must not lose its lease to a broken RDMA connection.
final class RDMAMetadataCarrier: MetadataCarrier {
    private let client: Mutex<RDMAMetadataClient?>
    private let overTCP: TCPMetadataCarrier
    private let logger: Logger

    init(_ client: RDMAMetadataClient, overTCP: TCPMetadataCarrier, logger: Logger) {
        self.client = Mutex(client)
        self.overTCP = overTCP
        self.logger = logger
    }

    func call(_ request: Request) async throws(GedsError) -> Reply {
        guard let client = client.withLock({ $0 }) else { return try await overTCP.call(request) }
        do {
            return try await client.call(request)
        } catch where error.code == .mdsUnreachable || error.code == .protocolViolation || error.code == .timedOut {
            let dropped = self.client.withLock { current -> Bool in
                guard current === client else { return false }
                current = nil
                return true
            }
            if dropped {
                logger.warning("MDS over rdma failed (\(error.message)); using tcp from now on")
                await client.close()
            }
            throw error
        }
    }

    /// Whether calls still go over RDMA.
    var active: Bool { client.withLock { $0 != nil } }

    func close() async {
        let current = client.withLock { current -> RDMAMetadataClient? in
            defer { current = nil }
            return current
        }
        await current?.close()
    }
}
