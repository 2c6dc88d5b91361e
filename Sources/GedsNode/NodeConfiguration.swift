import GedsCarrier
import GedsCore
import GedsTCP
import GedsTier1
import Logging
#if canImport(Glibc)
import Glibc
#endif

public struct NodeConfiguration: Sendable {
    /// The MDS's TCP endpoint.
    public var mds: Endpoint
    /// Where this node serves its tier 0 to peers (port 0: any free port).
    public var listen: Endpoint
    /// The host peers should connect to, when `listen` is a wildcard address.
    public var advertisedHost: String?
    public var tier0Directory: String
    /// Remove the tier-0 folder itself when the node shuts down (for temporary folders).
    public var removeTier0OnShutdown: Bool
    public var name: String
    /// Nodes with the same host id map each other's tier-0 files instead of using the network.
    public var hostID: String
    public var role: NodeRole
    /// How long a request may wait for an answer, or a transfer for progress.
    public var timeoutMilliseconds: Int64
    /// Publish copies made by whole-object reads as extra locations.
    public var publishCachedCopies: Bool
    /// Bytes tier 0 may hold (sealed objects and copies being received); nil: as much as its folder takes.
    public var tier0Capacity: UInt64?
    /// Tier 1 (a local folder, written with O_DIRECT) that tier 0 spills to; needs `tier0Capacity`.
    public var tier1: Tier1Configuration?
    /// Fractions of `tier0Capacity`: above `spillHighWater` the node spills to tier 1 until under `spillLowWater`.
    public var spillHighWater: Double = 0.9
    public var spillLowWater: Double = 0.75
    /// The most bytes tier 0 keeps in files of dropped blobs for later copies to be received into (their pages
    /// exist, so a copy skips the kernel's allocating and zeroing of new ones); nil: a quarter of `tier0Capacity`,
    /// or 1 GiB without one.
    public var tier0RecycleBudget: UInt64?
    /// The data plane to offer: `.auto` (RDMA when this machine has a device, else TCP), `.rdma` (refuse to
    /// start without a device) or `.tcp`.
    public var transport: Transport = .auto
    /// The address of this machine's RDMA device to read and serve from (default: the advertised host, else
    /// the listen host). A loopback or wildcard address has no device: the node then offers TCP only.
    public var rdmaAddress: String?
    /// The MDS's RDMA send/receive listener (`geds-mds --rdma-listen`); when set and this node runs over
    /// RDMA, its MDS calls go there instead of TCP.
    public var mdsRDMA: Endpoint?
    /// Whether `GEDS.connect` attaches to this host's `gedsd` instead of starting a node in this process.
    public var attach: Attach = .auto
    /// The deployment's secret (`--token-file`, `GEDS_TOKEN_FILE`: `DeploymentToken.resolve`): proved on every
    /// connection this node makes and demanded on every one it accepts. Nil: an open deployment.
    public var token: DeploymentToken?
    /// TLS for every TCP connection this node makes and accepts (`--tls-cert`, `--tls-key`, `--tls-ca`, `GEDS_TLS_*`:
    /// `TransportSecurity.resolve`). Its bulk reads and caller-thread MDS lookups then go through the event loop (see
    /// `Node.start`); the host-local socket and RDMA are unchanged. Nil: plain TCP.
    public var tls: TransportSecurity?

    /// How a process finds the `gedsd` of its host to attach to (see `GEDS.connect`).
    public enum Attach: Sendable, Equatable {
        /// `GEDS_NODE=PATH` when set (it must answer), else a socket in `LocalEndpoint.defaultDirectory` whose
        /// gedsd serves the same MDS; with none, this process runs its own node.
        case auto
        /// The gedsd listening at this socket path, or fail.
        case path(String)
        /// Always run a node in this process (`gedsd` itself, benchmarks that measure a node).
        case never
    }

    /// `--transport` of `gedsd` and `geds`.
    public enum Transport: String, Sendable, CaseIterable {
        case auto, rdma, tcp

        /// The option's help, the same in every tool that takes it.
        public static let optionHelp =
            "Data plane: auto (RDMA when this machine has a device, else TCP), rdma (fail without a device) or tcp."

        /// Parses the option's value, with the one-line error the tools print.
        public init(parsing text: String) throws(GedsError) {
            guard let transport = Transport(rawValue: text) else {
                throw GedsError(.invalidArgument, "--transport: expected auto, rdma or tcp, got '\(text)'")
            }
            self = transport
        }
    }

    public init(mds: Endpoint, listen: Endpoint = Endpoint(host: "127.0.0.1", port: 0), advertisedHost: String? = nil,
                tier0Directory: String? = nil, removeTier0OnShutdown: Bool? = nil, name: String? = nil,
                hostID: String? = nil, role: NodeRole = .embedded, timeoutMilliseconds: Int64 = 10_000,
                publishCachedCopies: Bool = true, tier0Capacity: UInt64? = nil, tier1: Tier1Configuration? = nil,
                transport: Transport = .auto, token: DeploymentToken? = nil) {
        let generatedName = NodeConfiguration.defaultName()
        self.mds = mds
        self.listen = listen
        self.advertisedHost = advertisedHost
        self.tier0Directory = tier0Directory ?? "/dev/shm/geds-\(generatedName)"
        self.removeTier0OnShutdown = removeTier0OnShutdown ?? (tier0Directory == nil)
        self.name = name ?? generatedName
        self.hostID = hostID ?? NodeConfiguration.defaultHostID()
        self.role = role
        self.timeoutMilliseconds = timeoutMilliseconds
        self.publishCachedCopies = publishCachedCopies
        self.tier0Capacity = tier0Capacity
        self.tier1 = tier1
        self.transport = transport
        self.token = token
    }

    var recycleBudget: UInt64 { tier0RecycleBudget ?? tier0Capacity.map { $0 / 4 } ?? 1 << 30 }

    /// How this node's servers (its data port, a gedsd's local socket) check their connections.
    func serverAuthentication(_ logger: Logger) -> ServerAuthentication {
        ServerAuthentication(token: token, role: role == .daemon ? "gedsd \(name)" : "node \(name)", logger: logger)
    }

    static func defaultName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count - 1)
        let host = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(host)-\(getpid())-\(UInt16.random(in: 0...UInt16.max))"
    }

    /// `GEDS_HOST_ID` if set, else this machine's boot id: processes on one booted host share it.
    static func defaultHostID() -> String {
        if let value = getenv("GEDS_HOST_ID") { return String(cString: value) }
        if let file = fopen("/proc/sys/kernel/random/boot_id", "r") {
            defer { fclose(file) }
            var buffer = [CChar](repeating: 0, count: 64)
            if fgets(&buffer, 64, file) != nil {
                return String(decoding: buffer.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            }
        }
        return NodeConfiguration.defaultName()
    }
}
