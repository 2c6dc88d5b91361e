import ArgumentParser
import Foundation
import GEDS
import GedsCommandLine
import GedsCore
import GedsMetrics
import GedsNode
import Logging
import Metrics
import NIOPosix
import Synchronization

@main
struct GedsDaemon: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gedsd", abstract: "A long-lived GEDS node: holds objects in its tier 0 and serves them to peers.",
        version: "gedsd \(GedsVersion.release)")

    @Option(help: "The MDS, HOST:PORT.")
    var mds: String

    @Option(help: "Address to serve peers on, HOST:PORT.")
    var listen: String = "127.0.0.1:0"

    @Option(help: "Tier-0 folder (on a memory file system).")
    var tier0: String

    @Option(name: .customLong("tier0-capacity"),
            help: "Bytes tier 0 may hold (e.g. 512MiB, 4GiB); with --tier1, objects spill there above 90% of it, down to 75%.")
    var tier0Capacity: String?

    @Option(help: "Tier-1 folder (local disk, written with O_DIRECT) that tier 0 spills to; needs --tier0-capacity and --tier1-capacity.")
    var tier1: String?

    @Option(name: .customLong("tier1-capacity"), help: "Bytes tier 1 may hold (e.g. 4GiB).")
    var tier1Capacity: String?

    @Option(help: "Node name (default: host, pid and a random number).")
    var name: String?

    @Option(name: .customLong("host-id"), help: "Nodes with the same host id map each other's files (default: GEDS_HOST_ID, else the boot id).")
    var hostID: String?

    @Option(help: "Host that peers connect to when --listen is a wildcard address.")
    var advertise: String?

    @Option(help: ArgumentHelp(NodeConfiguration.Transport.optionHelp))
    var transport: String = "auto"

    @Option(name: .customLong("rdma-address"),
            help: "Address of this machine's RDMA device to serve and read over (default: --advertise, else the --listen host).")
    var rdmaAddress: String?

    @Option(name: .customLong("mds-rdma"), help: "The MDS's RDMA listener, HOST:PORT (geds-mds --rdma-listen): MDS calls go over RDMA send/receive.")
    var mdsRDMA: String?

    @Flag(name: .customLong("huge-pages"),
          help: "Mount a tmpfs with transparent huge pages (huge=within_size) at --tier0 first (needs root): objects of 2 MiB and more then cost far less to allocate, map, send and free.")
    var hugePages = false

    @Option(help: "The local socket through which this host's processes attach (default: $XDG_RUNTIME_DIR/geds/NAME.sock, else /run/geds/NAME.sock).")
    var socket: String?

    @Option(name: .customLong("socket-mode"), help: "Permissions of the local socket, octal: 600 lets this user attach, 660 its group too, 666 everyone.")
    var socketMode: String = "600"

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String = "info"

    @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics.")
    var metrics: String?

    @OptionGroup var security: SecurityOptions

    func run() async throws {
        var logger = Logger(label: "gedsd")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let store: GEDS
        let scraped = Mutex<GEDS?>(nil)
        let local: LocalEndpoint
        do {
            guard let mode = UInt32(socketMode, radix: 8), mode <= 0o777 else {
                throw GedsError(.invalidArgument, "--socket-mode: expected octal permissions such as 600 or 660, got '\(socketMode)'")
            }
            if let metrics {
                let endpoint = try await MetricsEndpoint.start(listen: try Endpoint(parsing: metrics),
                                                               group: MultiThreadedEventLoopGroup.singleton) {
                    if let levels = scraped.withLock({ $0 })?.levels { TierGauges.shared.record(levels) }
                }
                printLine("gedsd metrics on http://\(endpoint.localAddress)/metrics")
            }
            if hugePages { try mountHugePageTier0(tier0) }
            var configuration = NodeConfiguration(
                mds: try Endpoint(parsing: mds), listen: try Endpoint(parsing: listen), advertisedHost: advertise,
                tier0Directory: tier0, removeTier0OnShutdown: false, name: name, hostID: hostID, role: .daemon,
                transport: try NodeConfiguration.Transport(parsing: transport))
            configuration.attach = .never
            configuration.token = try security.token()
            configuration.tls = try security.tls()
            configuration.rdmaAddress = rdmaAddress
            configuration.mdsRDMA = try mdsRDMA.map { (text) throws(GedsError) in try Endpoint(parsing: text) }
            configuration.tier0Capacity = try tier0Capacity.map { (text) throws(GedsError) in try ByteCount.parse(text) }
            if let tier1 {
                guard let tier1Capacity else { throw GedsError(.invalidArgument, "--tier1 needs --tier1-capacity SIZE") }
                guard configuration.tier0Capacity != nil else {
                    throw GedsError(.invalidArgument, "--tier1 needs --tier0-capacity SIZE (when to spill to tier 1)")
                }
                // Files left by an earlier gedsd are kept and offered back to the MDS, checked against the checksum it
                // kept; those of blobs it no longer knows are deleted (see Node.offerTier1Copies).
                configuration.tier1 = Tier1Configuration(directory: tier1, capacity: try ByteCount.parse(tier1Capacity),
                                                         leftovers: .adopt)
            } else if tier1Capacity != nil {
                throw GedsError(.invalidArgument, "--tier1-capacity needs --tier1 DIR")
            }
            store = try await GEDS.connect(configuration, logger: logger)
            scraped.withLock { $0 = store }
            do {
                local = try store.serveLocalSocket(at: socket, mode: mode, logger: logger)
            } catch {
                await store.close()
                throw error
            }
            let tiers = [configuration.tier0Capacity.map { "tier 0: \(tier0), \($0) bytes" } ?? "tier 0: \(tier0)",
                         configuration.tier1.map { "tier 1: \($0.directory), \($0.capacity) bytes" }].compactMap { $0 }
            printLine("gedsd \(configuration.name) listening on \(store.endpoint!), local socket \(local.path) (\(tiers.joined(separator: "; ")))")
            if configuration.token == nil { printLine("gedsd: \(DeploymentToken.openDeploymentNotice)") }
            if let tls = configuration.tls { printLine("gedsd: TCP over \(tls.serverDescription)") }
        } catch {
            printError("gedsd: \(GedsError.wrapping(error).message)")
            throw ExitCode(1)
        }
        // SIGTERM or SIGINT, or a finished drain (`geds drain`): a clean shutdown (write-back uploads finish, then the
        // node leaves the MDS).
        let reason = await withTaskGroup(of: String.self) { group in
            group.addTask { "signal \(await waitForTerminationSignal())" }
            group.addTask { [store] in
                await store.waitUntilDrained()
                return "drained"
            }
            defer { group.cancelAll() }
            return await group.next()!
        }
        printLine("gedsd \(store.nodeName): \(reason), flushing write-backs and leaving")
        local.close()
        await store.close()
    }
}

/// Mounts a huge-page tmpfs at `path` unless one is already mounted there (a restarted gedsd).
func mountHugePageTier0(_ path: String) throws(GedsError) {
    let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
    if mounts.split(separator: "\n").contains(where: { $0.split(separator: " ").dropFirst().first.map(String.init) == path }) {
        return
    }
    mkdir(path, 0o755)
    guard mount("tmpfs", path, "tmpfs", 0, "huge=within_size,mode=0755") == 0 else {
        throw GedsError.io("cannot mount a huge-page tmpfs at \(path) (--huge-pages needs root)", errno: errno)
    }
}

/// The node's levels as Prometheus gauges, set at each scrape (made at the first, after the metrics backend is
/// in place).
final class TierGauges: Sendable {
    static let shared = TierGauges()
    let tier0Objects = Gauge(label: "geds_tier0_objects"), tier0Bytes = Gauge(label: "geds_tier0_bytes")
    let tier0Capacity = Gauge(label: "geds_tier0_capacity_bytes")
    let tier1Objects = Gauge(label: "geds_tier1_objects"), tier1Bytes = Gauge(label: "geds_tier1_bytes")
    let tier1Capacity = Gauge(label: "geds_tier1_capacity_bytes")
    let s3UploadsPending = Gauge(label: "geds_s3_uploads_pending")

    func record(_ levels: Node.Levels) {
        tier0Objects.record(levels.tier0Objects)
        tier0Bytes.record(levels.tier0Bytes)
        tier0Capacity.record(levels.tier0Capacity ?? 0)
        tier1Objects.record(levels.tier1Objects)
        tier1Bytes.record(levels.tier1Bytes)
        tier1Capacity.record(levels.tier1Capacity)
        s3UploadsPending.record(levels.s3UploadsPending)
    }
}
