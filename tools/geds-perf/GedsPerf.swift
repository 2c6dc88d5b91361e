import ArgumentParser
import Foundation
import GEDS
import GedsCommandLine
import GedsCore
import GedsNode
import Logging

@main
struct GedsPerf: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "geds-perf",
        abstract: "Measures GEDS beside its references (iperf3, redis-benchmark) in one run and prints ratios.",
        discussion: """
            Starts an MDS and an owner gedsd on loopback (unless --mds names a running MDS); this process is \
            the reader, on a host of its own, so remote reads cross the network. Results go to a table on \
            stdout (and --json, --csv, --plot); progress goes to stderr.
            """,
        version: "geds-perf \(GedsVersion.release)")

    @Option(help: "Use a running MDS (HOST:PORT) instead of starting an MDS and an owner node here.")
    var mds: String?

    @Option(help: "With --mds: the gedsd that owns the objects read (default: any).")
    var owner: String?

    @Option(help: "Transports to measure: tcp, rdma or both. A transport this machine lacks is reported absent.")
    var transport: TransportChoice = .tcp

    @Option(name: .customLong("rdma-addresses"),
            help: "For rdma: OWNER,READER, addresses of two RDMA devices (two hosts); the owner gedsd serves on the first, this process reads from the second (default inside tools/rxe-vm --two-hosts: 10.10.1.2,10.10.1.1).")
    var rdmaAddresses: String?

    @Option(help: "Comma-separated workloads: \(Workload.allCases.map(\.rawValue).joined(separator: ", ")); tier1 is Tier1Store beside fio (see --tier1-dir); spill reads from a gedsd while it spills to tier 1 (see --spill-*); s3 is read-through from moto_server beside boto3; pubsub is seal-to-event (through the library, and of the MDS alone driven from one thread as the reference is) and wait latency beside redis pub/sub, events/s to 100 subscribers and lookups/s with them; attach measures a process attached to a gedsd's local socket beside redis-benchmark -s; soak is a mixed put/get/list/rename/delete load over two gedsd nodes (see --clients, --duration); tier0-memory is the tier-0 memory of --objects objects of 1 KiB beside redis used_memory; mds-state is create+seal of 4 KiB objects on an MDS with --state (fsync everysec, always; state in --spill-dir) beside the in-memory MDS and redis appendfsync always, and the restart time of an MDS holding --scale-objects objects; replicas is a 64 MiB seal with 2 copies on distinct hosts beside a single-copy seal plus one remote read; mds-scale, node-scale, tier0-memory, tier1, spill, s3, pubsub, soak, attach, mds-state and replicas run only when named.")
    var workloads: String = Workload.defaults.map(\.rawValue).joined(separator: ",")

    @Option(help: "Object sizes for read-bw and read-tier0, comma-separated; K, M, G mean KiB, MiB, GiB.")
    var sizes: String = "4K,16K,64K,256K,1M,4M,16M,64M,256M,1G"

    @Option(help: "Timed repetitions of each bandwidth figure (median reported, min and max as spread); at most 3 for objects of 256 MiB and more.")
    var repetitions: Int = 5

    @Option(name: .customLong("scale-objects"), help: "Objects for mds-scale (also run with 10,000 when larger) and for mds-state's restart.")
    var scaleObjects: Int = 1_000_000

    @Option(help: "Concurrent clients for mds-ops and soak.")
    var clients: Int = 16

    @Option(help: "Seconds the soak workload runs.")
    var duration: Int = 60

    @Option(name: .customLong("node-objects"), help: "Objects for node-scale (1 KiB each, on this process's node).")
    var nodeObjects: Int = 100_000

    @Option(help: "Objects for tier0-memory (1 KiB each, on this process's node, and as many values in a redis-server).")
    var objects: Int = 1_000_000

    @Option(name: .customLong("tier1-dir"),
            help: "Folder for the tier1 workload (and its fio reference); a subfolder geds-perf-tier1-PID is made there and removed afterwards (default: the --bin folder, else that of this executable, e.g. .build/release).")
    var tier1Dir: String?

    @Option(name: .customLong("tier1-size"), help: "Object size of the tier1 workload (K, M, G mean KiB, MiB, GiB).")
    var tier1Size: String = "1GiB"

    @Option(name: .customLong("spill-dir"),
            help: "Parent folder of the spill workload's tier 1 and of the mds-state workload's state (a subfolder geds-perf-spill-PID or geds-perf-state-PID, removed afterwards); on a disk, not tmpfs.")
    var spillDir: String = "/var/tmp"

    @Option(name: .customLong("spill-tier0"), help: "Tier-0 capacity of the spill workload's gedsd.")
    var spillTier0: String = "1GiB"

    @Option(name: .customLong("spill-write"), help: "Bytes the spill workload writes through that tier 0 while its reader reads.")
    var spillWrite: String = "4GiB"

    @Option(name: .customLong("spill-object"), help: "Object size of the spill workload (the hot set's and the writer's).")
    var spillObject: String = "64MiB"

    @Option(name: .customLong("spill-hot"), help: "Bytes of the hot set the spill workload's reader reads round and round.")
    var spillHot: String = "256MiB"

    @Option(name: .customLong("spill-baseline"), help: "Seconds the spill workload's reader reads alone before the writer starts.")
    var spillBaseline: Double = 5

    @Option(name: .customLong("s3-size"), help: "Object size of the s3 workload (K, M, G mean KiB, MiB, GiB).")
    var s3Size: String = "256MiB"

    @Option(help: "Folder of geds-mds and gedsd (default: next to this executable).")
    var bin: String?

    @Option(name: .customLong("tier0-pages"),
            help: "Tier-0 folders on /dev/shm as it is ('small' pages) or on a tmpfs mounted with huge pages ('huge', needs root).")
    var tier0Pages: String = "small"

    @Option(name: .customLong("inline-limit"),
            help: "The started MDS's --inline-limit (objects whose bytes come with their lookup; 0: none, so small reads take the data plane). Default: geds-mds's.")
    var inlineLimit: String?

    /// Also what the MDS and gedsds started here demand and use.
    @OptionGroup var security: SecurityOptions

    @Option(name: .customLong("attach-client"), help: .hidden)
    var attachClient: String?

    @Option(help: "Write the run (machine, units, measurements) as JSON to this file.")
    var json: String?

    @Option(help: "Write the measurements as CSV to this file.")
    var csv: String?

    @Option(help: "Draw bandwidth versus object size to this file: .svg, or .png where rsvg-convert or ImageMagick is installed.")
    var plot: String?

    func validate() throws {
        guard ["small", "huge"].contains(tier0Pages) else {
            throw ValidationError("--tier0-pages must be small or huge")
        }
        _ = try Workload.parse(workloads)
        _ = try parsedSizes()
        _ = try parsedTier1Size()
        _ = try parsedSpillSizes()
        _ = try parsedS3Size()
        func requireWritableFolder(_ path: String, _ option: String) throws {
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue,
                  FileManager.default.isWritableFile(atPath: path) else {
                throw ValidationError("\(option): \(path) is not a writable folder")
            }
        }
        if let tier1Dir { try requireWritableFolder(tier1Dir, "--tier1-dir") }
        if try Workload.parse(workloads).contains(.spill) {
            try requireWritableFolder(spillDir, "--spill-dir")
            if mds != nil { throw ValidationError("the spill workload starts its own MDS and gedsd: it cannot use --mds") }
        }
        if try Workload.parse(workloads).contains(.mdsState) {
            try requireWritableFolder(spillDir, "--spill-dir")
            if mds != nil { throw ValidationError("the mds-state workload starts its own MDS: it cannot use --mds") }
        }
        if try Workload.parse(workloads).contains(.attach), mds != nil {
            throw ValidationError("the attach workload starts its own MDS and gedsd: it cannot use --mds")
        }
        for (name, value) in [("--repetitions", repetitions), ("--clients", clients), ("--scale-objects", scaleObjects),
                              ("--node-objects", nodeObjects), ("--objects", objects), ("--duration", duration)] where value < 1 {
            throw ValidationError("\(name) must be at least 1")
        }
        if owner != nil, mds == nil { throw ValidationError("--owner needs --mds") }
        if let rdmaAddresses, rdmaAddresses.split(separator: ",").count != 2 {
            throw ValidationError("--rdma-addresses: expected OWNER,READER, got '\(rdmaAddresses)'")
        }
        if transport != .tcp, mds != nil { throw ValidationError("--transport \(transport.rawValue) needs the cluster geds-perf starts (no --mds)") }
        // Output files are written after minutes of measuring: a folder that is not there must fail now.
        for (name, path) in [("--json", json), ("--csv", csv), ("--plot", plot)] {
            guard let path else { continue }
            let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
            guard FileManager.default.isWritableFile(atPath: folder) else {
                throw ValidationError("\(name): cannot write into \(folder)")
            }
        }
        if let plot {
            guard Plot.Format(path: plot) != nil else { throw ValidationError("--plot must name a .svg or .png file") }
            guard try Workload.parse(workloads).contains(where: \.measuresBandwidth) else {
                throw ValidationError("--plot draws bandwidth: select at least one of "
                    + Workload.allCases.filter(\.measuresBandwidth).map(\.rawValue).joined(separator: ", "))
            }
        }
    }

    func parsedSizes() throws -> [Int] {
        try sizes.split(separator: ",", omittingEmptySubsequences: false).map { text in
            let bytes: UInt64
            do {
                bytes = try ByteCount.parse(String(text))
            } catch {
                throw ValidationError(GedsError.wrapping(error).message + " in --sizes")
            }
            guard bytes > 0 else {
                throw ValidationError("bad size '\(text)' in --sizes (expected a positive count of bytes, e.g. 4096, 64K, 16M, 1G)")
            }
            guard let size = Int(exactly: bytes) else { throw ValidationError("size '\(text)' is too large") }
            return size
        }.uniqued()
    }

    func parsedS3Size() throws -> Int {
        guard let bytes = try? ByteCount.parse(s3Size), bytes > 0, let size = Int(exactly: bytes) else {
            throw ValidationError("--s3-size: expected a positive size such as 256MiB, got '\(s3Size)'")
        }
        return size
    }

    func parsedTier1Size() throws -> Int {
        let bytes: UInt64
        do {
            bytes = try ByteCount.parse(tier1Size)
        } catch {
            throw ValidationError(GedsError.wrapping(error).message + " in --tier1-size")
        }
        guard bytes > 0 else { throw ValidationError("--tier1-size must be positive") }
        guard let size = Int(exactly: bytes) else {
            throw ValidationError("--tier1-size '\(tier1Size)' is too large")
        }
        return size
    }

    func parsedSpillSizes() throws -> SpillBench.Sizes {
        func size(_ text: String, _ option: String) throws -> Int {
            let bytes: UInt64
            do {
                bytes = try ByteCount.parse(text)
            } catch {
                throw ValidationError(GedsError.wrapping(error).message + " in \(option)")
            }
            guard bytes > 0, bytes <= UInt64(Int.max) else { throw ValidationError("\(option) must be positive") }
            return Int(bytes)
        }
        let sizes = SpillBench.Sizes(tier0: try size(spillTier0, "--spill-tier0"), written: try size(spillWrite, "--spill-write"),
                                     object: try size(spillObject, "--spill-object"), hot: try size(spillHot, "--spill-hot"),
                                     baselineSeconds: spillBaseline)
        guard sizes.hot + sizes.object <= sizes.tier0 else {
            throw ValidationError("--spill-hot plus one --spill-object must fit in --spill-tier0 (the hot set is to stay in tier 0)")
        }
        guard sizes.written > sizes.tier0 else { throw ValidationError("--spill-write must exceed --spill-tier0, or nothing spills") }
        guard spillBaseline > 0 else { throw ValidationError("--spill-baseline must be positive") }
        return sizes
    }

    func run() async throws {
        // One of the attach workload's client processes: SOCKET,put|get,SECONDS; prints its operations per second.
        if let tokenFile = security.tokenFile {
            _ = try DeploymentToken.load(path: tokenFile)  // a bad file is said now, not by each child
            // The children started here (geds-mds, gedsd, geds) and this process's own connections take it from there.
            setenv(DeploymentToken.environmentVariable, URL(fileURLWithPath: tokenFile).path, 1)
        }
        // The same for TLS: checked now, then handed to the children and this process's nodes as GEDS_TLS_*.
        if !security.tlsFiles.isEmpty { _ = try TransportSecurity(security.tlsFiles) }
        for (variable, path) in [(TransportSecurity.certificateVariable, security.tlsCert), (TransportSecurity.keyVariable, security.tlsKey),
                                 (TransportSecurity.authorityVariable, security.tlsCA)] {
            if let path { setenv(variable, URL(fileURLWithPath: path).path, 1) }
        }
        if let attachClient { return try await AttachBench.client(attachClient) }
        Cleanup.installSignalHandlers()
        let selected = try Workload.parse(workloads)
        // A PNG needs a converter: find out now rather than after minutes of measuring.
        if let plot, Plot.Format(path: plot) == .png { try Plot.checkPNGConverter() }
        let transports = try measurableTransports()
        let binaries = bin ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let machine = Machine.describe(
            device: mds.map { "TCP to the running cluster at \($0)" } ?? Machine.loopbackDevice(),
            tier0: tier0Pages == "huge" ? "tmpfs with transparent huge pages (huge=within_size)" : "/dev/shm, 4 KiB pages",
            transports: transport.transports, rdma: rdmaPair,
            references: References.tools(for: transport.transports, tier1: selected.contains(.tier1)))
        progress("machine: \(machine.summary)")
        for (tool, path) in machine.references.sorted(by: { $0.key < $1.key }) where path.hasPrefix("missing") {
            progress("reference \(tool): \(path); its figures are reported as missing")
        }

        var results: [Measurement] = []
        if selected.contains(.mdsScale) {
            // In-process and first, before the other workloads have grown and fragmented this process's heap.
            for count in Set([min(10_000, scaleObjects), scaleObjects]).sorted() {
                results += try await MetadataScale.measure(count: count)
            }
        }
        if selected.contains(.tier1) {
            let parent = tier1Dir ?? binaries
            results += try await Tier1Bench.measure(parent: parent, size: try parsedTier1Size(), repetitions: repetitions)
        }
        if selected.contains(.spill) {
            results += try await SpillBench.measure(binaries: binaries, parent: spillDir, sizes: try parsedSpillSizes())
        }
        if selected.contains(.attach) {
            results += try await AttachBench.measure(binaries: binaries, clients: clients)
        }
        if selected.contains(.s3) {
            results += try await S3Bench.measure(size: try parsedS3Size(), repetitions: repetitions)
        }
        if selected.contains(.mdsState) {
            results += try await MDSStateBench.measure(binaries: binaries, parent: spillDir, clients: clients, restartObjects: scaleObjects)
        }
        if selected.contains(.replicas) {
            results += try await ReplicaBench.measure(binaries: binaries)
        }
        if selected.contains(.soak) {
            results += try await SoakBench.measure(binaries: binaries, clients: clients, seconds: duration)
        }
        if selected.contains(where: \.needsCluster) {
            results += try await measureOnCluster(selected, transports: transports, binaries: binaries)
        }

        Report.table(results, machine: machine)
        if let json { try Report.writeJSON(results, machine: machine, to: json) }
        if let csv { try Report.writeCSV(results, to: csv) }
        if let plot { try Plot(results, machine: machine).write(to: plot) }
        progress("done in \(String(format: "%.0f", Progress.elapsed())) s")
    }

    /// The requested transports this build and machine can measure; the others are reported absent.
    func measurableTransports() throws -> [Transport] {
        var measurable: [Transport] = []
        for transport in self.transport.transports {
            if let absence = transport.absence(rdma: rdmaPair) {
                progress("\(transport.rawValue.uppercased()) absent: \(absence); not measured")
            } else {
                measurable.append(transport)
            }
        }
        guard !measurable.isEmpty else {
            throw ValidationError("no requested transport can be measured here (use --transport tcp or both)")
        }
        if measurable.count < self.transport.transports.count { progress("measuring \(measurable.map(\.rawValue).joined(separator: ", ")) only") }
        return measurable
    }

    /// The owner's and the reader's RDMA addresses: --rdma-addresses, else the VM's two simulated hosts.
    var rdmaPair: RDMAPair? {
        if let rdmaAddresses {
            let parts = rdmaAddresses.split(separator: ",").map(String.init)
            return parts.count == 2 ? RDMAPair(owner: parts[0], reader: parts[1]) : nil
        }
        let devices = Set(Machine.rdmaDevices())
        if ProcessInfo.processInfo.environment["GEDS_RXE_VM"] == "1", devices.isSuperset(of: ["rxe1", "rxe2"]) {
            return RDMAPair(owner: "10.10.1.2", reader: "10.10.1.1")
        }
        return nil
    }

    func measureOnCluster(_ selected: [Workload], transports: [Transport], binaries: String) async throws -> [Measurement] {
        let rdma = transports.contains(.rdma) ? rdmaPair : nil
        let cluster = try Cluster(existingMDS: mds, binaries: binaries, ownerName: owner, hugePages: tier0Pages == "huge",
                                  rdmaOwnerAddress: rdma?.owner, mdsArguments: inlineLimit.map { ["--inline-limit", $0] } ?? [])
        defer { cluster.stop() }
        var logger = Logger(label: "geds-perf")
        logger.logLevel = .warning
        // The reader is this process's own node on its own (simulated) host, so that every remote read
        // crosses the network from the owner instead of mapping the owner's file. Over TCP it runs without
        // RDMA; over RDMA a second reader node reads from the other device, its MDS calls over RDMA too.
        // Always a node of its own, never attached to a gedsd: the reader's node is what is measured.
        var readerConfiguration = NodeConfiguration(
            mds: cluster.mds, tier0Directory: cluster.scratch + "/reader", name: "perf-reader-\(getpid())",
            hostID: "perf-reader-host", publishCachedCopies: false, transport: .tcp)
        readerConfiguration.attach = .never
        let geds = try await GEDS.connect(readerConfiguration, logger: logger)
        var rdmaGeds: GEDS?
        if let rdma {
            var configuration = NodeConfiguration(
                mds: cluster.mds, listen: Endpoint(host: rdma.reader, port: 0), tier0Directory: cluster.scratch + "/reader-rdma",
                name: "perf-reader-rdma-\(getpid())", hostID: "perf-reader-host", publishCachedCopies: false, transport: .rdma)
            configuration.mdsRDMA = cluster.mdsRDMA
            configuration.attach = .never
            do {
                rdmaGeds = try await GEDS.connect(configuration, logger: logger)
            } catch {
                await geds.close()
                throw error
            }
        }
        var results: [Measurement] = []
        let parameters = Bench.Parameters(sizes: try parsedSizes(), clients: clients, nodeObjects: nodeObjects, objects: objects,
                                          tier0Folder: readerConfiguration.tier0Directory)
        do {
            let setup = try await Bench.Setup(geds: geds, rdmaGeds: rdmaGeds, rdma: rdma, ownerName: cluster.ownerName,
                                              ownerPID: cluster.ownerPID, repetitions: repetitions)
            // Transport-independent workloads run once; data-plane workloads once per transport.
            for transport in transports {
                let bench = Bench(setup, transport: transport)
                for workload in selected where workload.dataPlane {
                    results += try await bench.run(workload, parameters)
                }
            }
            let bench = Bench(setup, transport: .tcp)
            for workload in selected where workload.needsCluster && !workload.dataPlane {
                results += try await bench.run(workload, parameters)
            }
            try await setup.finish()
        } catch {
            await geds.close()
            await rdmaGeds?.close()
            throw error
        }
        await geds.close()
        await rdmaGeds?.close()
        return results
    }
}

/// What geds-perf can measure. Data-plane workloads move object bytes and are measured per transport.
enum Workload: String, CaseIterable {
    case readBandwidth = "read-bw", getBandwidth = "get-bw", readIntoTier0 = "read-tier0", readManyMiB = "read-1mib", latency
    case metadataOps = "mds-ops", local, write, mdsScale = "mds-scale", nodeScale = "node-scale", tier1, spill, s3, pubsub, soak, attach
    case tier0Memory = "tier0-memory", mdsState = "mds-state", replicas

    /// The scale workloads, tier1 and spill (gigabytes of disk I/O), s3 (needs moto_server) and pubsub are opt-in,
    /// to keep a default run short.
    static let defaults: [Workload] = [.readBandwidth, .readIntoTier0, .readManyMiB, .latency, .metadataOps, .local, .write]

    var dataPlane: Bool { [.readBandwidth, .getBandwidth, .readIntoTier0, .readManyMiB, .latency].contains(self) }
    /// Whether it runs on the shared cluster (spill starts its own, with a capped tier 0 and a tier 1).
    var needsCluster: Bool { ![.mdsScale, .tier1, .spill, .s3, .soak, .attach, .mdsState, .replicas].contains(self) }
    var measuresBandwidth: Bool { [.readBandwidth, .getBandwidth, .readIntoTier0, .readManyMiB, .write].contains(self) }

    static func parse(_ list: String) throws -> [Workload] {
        try list.split(separator: ",", omittingEmptySubsequences: false).map { name in
            guard let workload = Workload(rawValue: String(name)) else {
                throw ValidationError("unknown workload '\(name)' (known: \(allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return workload
        }.uniqued()
    }
}

extension Array where Element: Hashable {
    /// The elements in order, each once: a list given twice on the command line is measured once.
    func uniqued() -> [Element] {
        var seen = Set<Element>()
        return filter { seen.insert($0).inserted }
    }
}

/// The carriers of object bytes. `transport` is a field of every measurement, so an RDMA column
/// appears beside TCP as soon as the RDMA data plane can be measured.
enum Transport: String, CaseIterable {
    case tcp, rdma

    /// Why this transport cannot be measured here, or nil when it can.
    func absence(rdma pair: RDMAPair?) -> String? {
        switch self {
        case .tcp:
            return nil
        case .rdma:
            let devices = Machine.rdmaDevices()
            if devices.isEmpty { return "no RDMA device on this machine (/sys/class/infiniband is empty or missing)" }
            if pair == nil {
                return "RDMA device \(devices.joined(separator: ", ")) present, but no --rdma-addresses OWNER,READER (two device addresses) given"
            }
            return nil
        }
    }
}

/// The addresses of the owner's and the reader's RDMA devices (two hosts, or two devices of one).
struct RDMAPair {
    let owner: String
    let reader: String
}

enum TransportChoice: String, CaseIterable, ExpressibleByArgument {
    case tcp, rdma, both

    var transports: [Transport] { self == .both ? Transport.allCases : [Transport(rawValue: rawValue)!] }
}

/// Progress lines on stderr, each with the seconds since the run started.
enum Progress {
    /// Set by the first progress line (a lazy global), which `run` prints first.
    static let start = DispatchTime.now().uptimeNanoseconds

    static func elapsed() -> Double {
        let start = start  // read first: on the first call this sets it, and it must not be later than now
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
}

func progress(_ line: String) {
    printError("geds-perf [\(String(format: "%6.1f", Progress.elapsed())) s] \(line)")
}
