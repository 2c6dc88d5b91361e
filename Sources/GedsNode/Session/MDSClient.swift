import GedsCarrier
import GedsCore
import GedsMetadataRDMA
import GedsTCP
import GedsWire
import Logging
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Typed calls to the MDS over its carrier: RDMA send/receive when the node connected that way (TCP once that
/// breaks), else TCP.
public struct MDSClient: Sendable {
    public let endpoint: Endpoint
    public let pool: ConnectionPool
    let timeout: TimeAmount
    /// The RDMA carrier, when the node connected to the MDS over RDMA.
    let rdma: RDMAMetadataCarrier?
    private let carrier: any MetadataCarrier
    /// For calls the MDS holds (`waitForObject`): a multiplexed TCP connection carries other calls meanwhile, where
    /// an RDMA connection answers its calls in order.
    private let tcp: TCPMetadataCarrier
    /// Blocking calls for a task that runs on a thread of its own (see `blockingThread`); nil over TLS.
    let callerThread: DirectCalls?

    /// The thread that started the current task and blocks until it ends (a local endpoint connection's): while the
    /// task runs on it, its MDS calls go out on it (`DirectCalls`), sparing the hop to the event loop and the wake-up
    /// back. A task-local, so it is inherited by tasks the request starts, which run elsewhere and so never block.
    @TaskLocal static var blockingThread: pthread_t?

    /// Whether this call runs on the thread that waits for it anyway (see `blockingThread`).
    private static var onBlockingThread: Bool {
        guard let thread = blockingThread else { return false }
        return pthread_equal(thread, pthread_self()) != 0
    }

    public init(endpoint: Endpoint, pool: ConnectionPool, timeout: TimeAmount) {
        self.init(endpoint: endpoint, pool: pool, timeout: timeout, rdma: nil, callerThread: nil, logger: Logger(label: "geds-mds-client"))
    }

    init(endpoint: Endpoint, pool: ConnectionPool, timeout: TimeAmount, rdma client: RDMAMetadataClient?, callerThread: DirectCalls?,
         logger: Logger) {
        self.endpoint = endpoint
        self.callerThread = client == nil ? callerThread : nil
        self.pool = pool
        self.timeout = timeout
        let tcp = TCPMetadataCarrier(endpoint: endpoint, pool: pool, timeout: timeout)
        self.tcp = tcp
        rdma = client.map { RDMAMetadataCarrier($0, overTCP: tcp, logger: logger) }
        carrier = rdma ?? tcp
    }

    public func call(_ request: Request) async throws(GedsError) -> Reply {
        let reply = if let callerThread, MDSClient.onBlockingThread {
            try callerThread.call(request)
        } else {
            try await carrier.call(request)
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

    /// The object's record once it exists sealed; nil when `milliseconds` pass first. The MDS holds the call; a
    /// cancelled task stops waiting at once.
    public func waitForObject(bucket: String, key: String, milliseconds: UInt32) async throws(GedsError) -> ObjectInfo? {
        let reply = try await tcp.call(.waitForObject(bucket: bucket, key: key, timeoutMilliseconds: milliseconds),
                                       timeout: timeout + .milliseconds(Int64(milliseconds)), cancellable: true)
        switch reply {
        case .object(let info): return info
        case .failure(let error) where error.code == .timedOut: return nil
        case .failure(let error): throw error
        default: throw MDSClient.unexpected(reply)
        }
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

    /// The nodes the MDS lists (or names in answer to `request`, such as `placeCopies`).
    public func nodes(_ request: Request = .listNodes) async throws(GedsError) -> [NodeInfo] {
        let reply = try await call(request)
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
