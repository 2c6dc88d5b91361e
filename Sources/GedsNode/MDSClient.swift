import GedsCore
import GedsMetadataRDMA
import GedsTCP
import GedsWire
import Logging
import NIOCore
import Synchronization

/// Typed calls to the MDS: over RDMA send/receive when the node connected that way, else over one
/// multiplexed TCP connection, re-made when it breaks.
public struct MDSClient: Sendable {
    public let endpoint: Endpoint
    public let pool: ConnectionPool
    let timeout: TimeAmount
    let rdma: RDMASession?

    public init(endpoint: Endpoint, pool: ConnectionPool, timeout: TimeAmount) {
        self.init(endpoint: endpoint, pool: pool, timeout: timeout, rdma: nil)
    }

    init(endpoint: Endpoint, pool: ConnectionPool, timeout: TimeAmount, rdma: RDMASession?) {
        self.endpoint = endpoint
        self.pool = pool
        self.timeout = timeout
        self.rdma = rdma
    }

    /// The MDS over RDMA send/receive until that connection fails; then TCP (said once in the log), since
    /// the MDS serves both and a node must not lose its lease to a broken RDMA connection.
    final class RDMASession: Sendable {
        private let client = Mutex<RDMAMetadataClient?>(nil)
        private let logger: Logger

        init(_ client: RDMAMetadataClient, logger: Logger) {
            self.client.withLock { $0 = client }
            self.logger = logger
        }

        /// The reply, or nil when the call should go over TCP.
        func call(_ request: Request) async throws(GedsError) -> Reply? {
            guard let client = client.withLock({ $0 }) else { return nil }
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

        var active: Bool { client.withLock { $0 != nil } }

        func close() async {
            let current = client.withLock { current -> RDMAMetadataClient? in
                defer { current = nil }
                return current
            }
            await current?.close()
        }
    }

    public func call(_ request: Request) async throws(GedsError) -> Reply {
        if let rdma, let reply = try await rdma.call(request) {
            if case .failure(let error) = reply { throw error }
            return reply
        }
        let connection = try await pool.connection(to: endpoint, peerName: "MDS")
        let reply: Reply
        do {
            reply = try await connection.call(request, timeout: timeout)
        } catch where error.code == .peerUnreachable {
            throw GedsError(.mdsUnreachable, "MDS unreachable at \(endpoint): \(error.message)")
        }
        if case .failure(let error) = reply { throw error }
        return reply
    }

    public func expectOK(_ request: Request) async throws(GedsError) {
        let reply = try await call(request)
        guard case .ok = reply else { throw MDSClient.unexpected(reply) }
    }

    public func lookup(bucket: String, key: String) async throws(GedsError) -> ObjectInfo {
        let reply = try await call(.lookup(bucket: bucket, key: key))
        guard case .object(let info) = reply else { throw MDSClient.unexpected(reply) }
        return info
    }

    public func list(bucket: String, prefix: String, delimiter: String, startAfter: String,
                     maxKeys: UInt32) async throws(GedsError) -> ListPage {
        let reply = try await call(.list(bucket: bucket, prefix: prefix, delimiter: delimiter,
                                         startAfter: startAfter, maxKeys: maxKeys))
        guard case .page(let page) = reply else { throw MDSClient.unexpected(reply) }
        return page
    }

    public func buckets() async throws(GedsError) -> [String] {
        let reply = try await call(.listBuckets)
        guard case .buckets(let names) = reply else { throw MDSClient.unexpected(reply) }
        return names
    }

    public func nodes() async throws(GedsError) -> [NodeInfo] {
        let reply = try await call(.listNodes)
        guard case .nodes(let nodes) = reply else { throw MDSClient.unexpected(reply) }
        return nodes
    }

    public func count(_ request: Request) async throws(GedsError) -> UInt64 {
        let reply = try await call(request)
        guard case .count(let count) = reply else { throw MDSClient.unexpected(reply) }
        return count
    }

    static func unexpected(_ reply: Reply) -> GedsError {
        GedsError(.protocolViolation, "unexpected reply from the MDS: \(reply)")
    }
}
