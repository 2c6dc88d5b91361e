import GedsCore
import GedsTCP
import GedsWire
import NIOCore

/// Typed calls to the MDS over one multiplexed connection, re-made when it breaks.
public struct MDSClient: Sendable {
    public let endpoint: Endpoint
    public let pool: ConnectionPool
    let timeout: TimeAmount

    public init(endpoint: Endpoint, pool: ConnectionPool, timeout: TimeAmount) {
        self.endpoint = endpoint
        self.pool = pool
        self.timeout = timeout
    }

    public func call(_ request: Request) async throws(GedsError) -> Reply {
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
