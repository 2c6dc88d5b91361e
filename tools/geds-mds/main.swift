import ArgumentParser
import GedsCarrier
import GedsCommandLine
import GedsCore
import GedsMDS
import GedsMetadataRDMA
import GedsMetrics
import GedsTCP
import Logging
import Metrics
import NIOPosix
import Synchronization

@main
struct GedsMDSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "geds-mds", abstract: "The GEDS metadata service: buckets, objects, locations and node leases.",
        version: "geds-mds \(GedsVersion.release)")

    @Option(help: "Address to listen on, HOST:PORT.")
    var listen: String = "127.0.0.1:4381"

    @Option(name: .customLong("rdma-listen"),
            help: "Also serve clients over RDMA send/receive on HOST:PORT (HOST: an address of an RDMA device).")
    var rdmaListen: String?

    @Option(name: .customLong("lease-ms"), help: "A node that sends no heartbeat for this long is declared dead.")
    var leaseMilliseconds: UInt64 = 5000

    @Option(name: .customLong("event-history"),
            help: "Events kept for subscriptions that resume from a revision (older ones answer 'compacted').")
    var eventHistory: Int = MetadataStore.defaultEventHistory

    @Option(name: .customLong("subscriber-queue"),
            help: "Events a subscription may have waiting unread before it is ended as too slow.")
    var subscriberQueue: Int = MetadataService.defaultSubscriberQueueLimit

    @Option(name: .customLong("progress-ms"), help: "How often idle subscriptions are told the current revision.")
    var progressMilliseconds: Int64 = 1000

    @Option(name: .customLong("inline-limit"),
            help: "Objects up to this size (K, M suffixes; 0: none) have their bytes kept here with their metadata, so one lookup answers a get.")
    var inlineLimit: String = "64K"

    @Option(name: .customLong("inline-budget"), help: "Memory for inline object bytes in all (K, M, G suffixes); larger sets keep the rest on their nodes only.")
    var inlineBudget: String = "1G"

    @Option(help: "Keep the namespace in this directory (a journal of every change and a snapshot), so a restarted MDS has it again. Without it, everything is in memory only.")
    var state: String?

    @Option(help: "With --state: when journal writes reach the disk: always (before each change is acknowledged), everysec (about once a second; the default) or never (when the kernel writes back).")
    var fsync: String?

    @Option(name: .customLong("event-loops"),
            help: "Threads serving the TCP connections (default: one per core). An event reaches a subscriber whose connection another thread serves one thread wake-up later.")
    var eventLoops: Int?

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String = "info"

    @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics.")
    var metrics: String?

    @OptionGroup var security: SecurityOptions

    func validate() throws {
        guard eventHistory >= 0 else { throw ValidationError("--event-history must be 0 or more") }
        guard subscriberQueue >= 1 else { throw ValidationError("--subscriber-queue must be 1 or more") }
        if let eventLoops, eventLoops < 1 { throw ValidationError("--event-loops must be 1 or more") }
        let limit = try parsedInlineLimit()
        guard limit <= UInt64(InlineContents.maximumLimit) else {
            throw ValidationError("--inline-limit must be at most \(InlineContents.maximumLimit) bytes")
        }
        _ = try parsedInlineBudget()
        if let fsync {
            guard state != nil else { throw ValidationError("--fsync needs --state DIR (without it nothing is written to disk)") }
            guard FsyncPolicy(rawValue: fsync) != nil else {
                throw ValidationError("--fsync must be one of \(FsyncPolicy.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
    }

    private func parsedInlineLimit() throws -> UInt64 {
        do { return try ByteCount.parse(inlineLimit) } catch { throw ValidationError("--inline-limit: \(error.message)") }
    }

    private func parsedInlineBudget() throws -> UInt64 {
        do { return try ByteCount.parse(inlineBudget) } catch { throw ValidationError("--inline-budget: \(error.message)") }
    }

    func run() async throws {
        var logger = Logger(label: "geds-mds")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        // Said before anything starts, so that a machine without RDMA gets one line naming the option.
        if rdmaListen != nil, let reason = RDMAMetadata.unavailableReason {
            printError("geds-mds: --rdma-listen: \(reason)")
            throw ExitCode(1)
        }
        let server: MetadataServer
        let levels = Mutex<MetadataService?>(nil)
        let group = eventLoops.map { MultiThreadedEventLoopGroup(numberOfThreads: $0) } ?? MultiThreadedEventLoopGroup.singleton
        do {
            let token = try security.token()
            let tls = try security.tls()
            if let metrics {
                let endpoint = try await MetricsEndpoint.start(listen: try Endpoint(parsing: metrics), group: group) {
                    if let service = levels.withLock({ $0 }) { NamespaceGauges.shared.record(service) }
                }
                printLine("geds-mds metrics on http://\(endpoint.localAddress)/metrics")
            }
            server = try await MetadataServer.start(listen: try Endpoint(parsing: listen),
                                                    rdmaListen: try rdmaListen.map { (text) throws(GedsError) in try Endpoint(parsing: text) },
                                                    leaseMilliseconds: leaseMilliseconds, eventHistory: eventHistory,
                                                    inlineLimit: UInt32(try parsedInlineLimit()), inlineBudget: try parsedInlineBudget(),
                                                    subscriberQueueLimit: subscriberQueue,
                                                    progressInterval: .milliseconds(max(progressMilliseconds, 10)),
                                                    state: state.map { StateOptions(directory: $0, fsync: fsync.flatMap(FsyncPolicy.init) ?? .everysec) },
                                                    token: token, tls: tls, logger: logger, group: group)
            levels.withLock { $0 = server.service }
            printLine("geds-mds listening on \(server.localAddress)")
            if let rdma = server.rdma { printLine("geds-mds listening for RDMA on \(rdma.endpoint)") }
            if token == nil { printLine("geds-mds: \(DeploymentToken.openDeploymentNotice)") }
            if let tls { printLine("geds-mds: TCP over \(tls.serverDescription)") }
        } catch {
            printError("geds-mds: \(GedsError.wrapping(error).message)")
            throw ExitCode(1)
        }
        // SIGTERM or SIGINT: a clean stop (the journal written and synced).
        let signal = await waitForTerminationSignal()
        printLine("geds-mds: signal \(signal), stopping")
        await server.close()
    }
}

/// The namespace's levels as Prometheus gauges, set at each scrape (made at the first, after the metrics
/// backend is in place).
final class NamespaceGauges: Sendable {
    static let shared = NamespaceGauges()
    let buckets = Gauge(label: "geds_buckets"), objects = Gauge(label: "geds_objects"), liveNodes = Gauge(label: "geds_live_nodes")
    let subscriptions = Gauge(label: "geds_subscriptions"), heldWaits = Gauge(label: "geds_held_waits")

    func record(_ service: MetadataService) {
        let levels = service.levels
        buckets.record(levels.buckets)
        objects.record(levels.objects)
        liveNodes.record(levels.liveNodes)
        subscriptions.record(service.subscriptionCount)
        heldWaits.record(service.heldWaitCount)
    }
}
