import Foundation
#if canImport(Glibc)
import Glibc
#endif
@_spi(Benchmarks) import GEDS
import GedsCore
import GedsMDS
import GedsNode
import GedsTCP
import GedsWire
import NIOCore
import NIOPosix
import Synchronization

/// The workloads over one transport. Every remote read crosses that transport from the owner `gedsd`,
/// as a read from another machine would.
struct Bench {
    /// What every transport's workloads share: the client, the bucket, the objects placed on the owner,
    /// and the reference figures (measured once per run).
    final class Setup {
        let geds: GEDS
        /// The reader over RDMA (its own node, on the other device), when RDMA is measured.
        let rdmaGeds: GEDS?
        let rdma: RDMAPair?
        /// The owner gedsd's process, when this run started it (for its CPU time).
        let ownerPID: pid_t?
        let repetitions: Int
        let bucket = "perf-\(getpid())"
        let owner: NodeInfo
        /// Objects already placed on the owner, by size: read-bw and read-tier0 read the same ones.
        private var remote: [Int: ObjectInfo] = [:]
        private var iperf: Reference?
        private var ibReadBW: Reference?
        /// 1 MiB of random bytes, repeated to fill objects.
        private let pattern: UnsafeMutableRawBufferPointer = {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
            for index in 0..<buffer.count { buffer[index] = UInt8.random(in: 0...255) }
            return buffer
        }()

        init(geds: GEDS, rdmaGeds: GEDS? = nil, rdma: RDMAPair? = nil, ownerName: String, ownerPID: pid_t? = nil,
             repetitions: Int) async throws {
            self.geds = geds
            self.rdmaGeds = rdmaGeds
            self.rdma = rdma
            self.ownerPID = ownerPID
            self.repetitions = repetitions
            // The owner first: with --mds, a wrong --owner must not leave a bucket behind in that cluster.
            owner = try await geds.relocationTarget(named: ownerName.isEmpty ? nil : ownerName)
            try await geds.createBucket(bucket)
        }

        deinit {
            pattern.deallocate()
        }

        func finish() async throws {
            try await geds.deleteBucket(bucket, force: true)
        }

        /// Timed repetitions of one bandwidth figure: fewer for the largest objects, which take seconds each.
        func repetitions(for size: Int) -> Int { size >= 256 << 20 ? min(repetitions, 3) : repetitions }

        /// Writes an object here and, unless `relocate` is false, hands it to the owner, so that reading it
        /// is a remote read.
        func place(_ key: String, size: Int, relocate: Bool = true) async throws -> ObjectInfo {
            let writer = try await geds.create(bucket: bucket, key: key)
            var offset = 0
            while offset < size {
                let count = min(pattern.count, size - offset)
                try writer.write(UnsafeRawBufferPointer(rebasing: pattern[..<count]), at: UInt64(offset))
                offset += count
            }
            try await writer.seal()
            if relocate { try await geds.relocate(bucket: bucket, key: key, to: owner) }
            return try await geds.stat(bucket: bucket, key: key)
        }

        /// Whether `bytes` are what `place` writes: the pattern, repeated.
        func holdsPattern(_ bytes: UnsafeRawBufferPointer) -> Bool {
            var offset = 0
            while offset < bytes.count {
                let count = min(pattern.count, bytes.count - offset)
                guard memcmp(bytes.baseAddress! + offset, pattern.baseAddress!, count) == 0 else { return false }
                offset += count
            }
            return true
        }

        func remoteObject(size: Int) async throws -> ObjectInfo {
            if let info = remote[size] { return info }
            progress("placing a \(Report.formatSize(size)) object on \(owner.name)")
            let info = try await place("bw-\(size)", size: size)
            remote[size] = info
            return info
        }

        func iperfReference() -> Reference {
            if let iperf { return iperf }
            let reference = Reference("iperf3 single stream, loopback", References.iperf3(seconds: 3, repetitions: 3))
            iperf = reference
            return reference
        }

        /// ib_read_bw between the same two devices, with READs of the size our reads are split into.
        func ibReadBWReference() -> Reference {
            if let ibReadBW { return ibReadBW }
            let chunk = 1 << 20
            let reference = Reference("ib_read_bw, 1 MiB READs, same devices",
                                      rdma.map { References.ibRead(.bandwidth, size: chunk, owner: $0.owner, reader: $0.reader) }
                                          ?? .failure(.init(reason: "no RDMA addresses")))
            ibReadBW = reference
            return reference
        }

        /// The owner's CPU seconds so far (user + system), nil when it is not a child of this run.
        func ownerCPUSeconds() -> Double? { ownerPID.flatMap(Cluster.cpuSeconds) }
    }

    let setup: Setup
    let transport: Transport
    /// The reader of this transport: over RDMA its own node on the other device, else the TCP-only one.
    var geds: GEDS { transport == .rdma ? setup.rdmaGeds ?? setup.geds : setup.geds }
    var bucket: String { setup.bucket }

    init(_ setup: Setup, transport: Transport) {
        self.setup = setup
        self.transport = transport
    }

    /// The command-line settings the workloads use.
    struct Parameters {
        let sizes: [Int]
        let clients: Int
        let nodeObjects: Int
        /// For tier0-memory: how many objects, and the tier-0 folder of this process's node (`geds`).
        let objects: Int
        let tier0Folder: String
    }

    func run(_ workload: Workload, _ parameters: Parameters) async throws -> [Measurement] {
        switch workload {
        case .readBandwidth: try await readBandwidth(sizes: parameters.sizes)
        case .getBandwidth: try await getBandwidth(sizes: parameters.sizes)
        case .readIntoTier0: try await readIntoTier0(sizes: parameters.sizes)
        case .readManyMiB: try await readManyMiB()
        case .latency: try await latency()
        case .metadataOps: try await metadataOps(clients: parameters.clients)
        case .local: try await localRead()
        case .write: try await write()
        case .nodeScale: try await NodeScale.measure(geds: geds, bucket: bucket, count: parameters.nodeObjects)
        case .tier0Memory: try await Tier0Memory.measure(geds: geds, bucket: bucket, folder: parameters.tier0Folder,
                                                         count: parameters.objects)
        case .pubsub: try await pubsub(clients: parameters.clients)
        case .mdsScale, .tier1, .spill, .s3, .soak, .attach, .mdsState, .replicas: []  // run on their own: MetadataScale, Tier1Bench, SpillBench, S3Bench, SoakBench, AttachBench, MDSStateBench, ReplicaBench
        }
    }

    /// Runs `body` `warmups` times untimed (connections, page cache, buffers), then `samples` times timed;
    /// returns the seconds of each timed run.
    static func timed(warmups: Int = 1, samples: Int, _ body: () async throws -> Void) async rethrows -> [Double] {
        for _ in 0..<warmups { try await body() }
        var seconds: [Double] = []
        seconds.reserveCapacity(samples)
        for _ in 0..<samples {
            let start = DispatchTime.now().uptimeNanoseconds
            try await body()
            seconds.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return seconds
    }

    /// `timed` for synchronous bodies on a thread of their own (not one of the cooperative pool's), as C callers
    /// run: the body never suspends, so the whole loop stays on that thread.
    static func timedOnThread(warmups: Int, samples: Int, _ body: @Sendable () throws -> Void) async throws -> [Double] {
        let thread = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { thread.shutdownGracefully { _ in } }
        return try await withTaskExecutorPreference(EventLoopTaskExecutor(thread.next())) {
            try await timed(warmups: warmups, samples: samples) { try body() }
        }
    }

    /// An MDS client on a connection of its own, as a separate task of a job would have (close its pool after use).
    static func ownMDSClient(_ endpoint: Endpoint) -> MDSClient {
        MDSClient(endpoint: endpoint, pool: ConnectionPool(group: MultiThreadedEventLoopGroup.singleton,
                                                           token: try? DeploymentToken.resolve(tokenFile: nil),
                                                           tls: try? TransportSecurity.resolve()),
                  timeout: .seconds(10))
    }

    /// Gbit/s of moving `bytes` in each of `seconds`.
    static func rates(bytes: Int, _ seconds: [Double]) -> [Double] { seconds.map { Double(bytes) * 8 / $0 / 1e9 } }

    // MARK: References of each transport

    /// What a bandwidth over this transport is compared with: iperf3 for TCP, perftest's ib_read_bw for RDMA.
    func bandwidthReference() -> Reference {
        switch transport {
        case .tcp: setup.iperfReference()
        case .rdma: setup.ibReadBWReference()
        }
    }

    /// What a small-object latency over this transport is compared with: redis GET for TCP, ib_read_lat for RDMA.
    func latencyReference(size: Int) -> Reference {
        switch transport {
        case .tcp: Reference("redis-benchmark GET p50, 1 client",
                             References.redisGet(size: size, clients: 1, requests: 20000).map(\.p50Microseconds))
        case .rdma: Reference("ib_read_lat t_typical, same devices",
                              setup.rdma.map { References.ibRead(.latency, size: size, owner: $0.owner, reader: $0.reader) }
                                  ?? .failure(.init(reason: "no RDMA addresses")))
        }
    }

    // MARK: Remote reads

    func readBandwidth(sizes: [Int]) async throws -> [Measurement] {
        let reference = bandwidthReference()
        var results: [Measurement] = []
        for size in sizes {
            let info = try await setup.remoteObject(size: size)
            let reader = try await geds.open(bucket: bucket, key: info.key)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            // Each timed sample moves at least 64 MiB, so that small objects are timed over many reads.
            let perSample = max(1, (64 << 20) / size)
            let samples = setup.repetitions(for: size)
            progress("read-bw \(transport.rawValue) \(Report.formatSize(size)): \(samples) × \(perSample) reads")
            var ownerCPU = 0.0
            let seconds = try await Bench.timed(samples: samples) {
                let before = setup.ownerCPUSeconds()
                for _ in 0..<perSample { _ = try await reader.read(at: 0, into: buffer) }
                if let before, let after = setup.ownerCPUSeconds() { ownerCPU += after - before }
            }
            var result = Measurement.bandwidth(.readBandwidth, transport: transport, size: size,
                                               rates: Bench.rates(bytes: size * perSample, seconds), reference: reference,
                                               note: "remote read into a caller buffer (open once, \(perSample) reads per sample)")
            if size >= 256 << 20, setup.ownerPID != nil {
                // Warm-up included in the CPU time but not in the bytes: count them too.
                let served = Double(size * perSample * (samples + 1)) / Double(1 << 30)
                result.owner_cpu_ms_per_gib = ownerCPU * 1000 / served
                result.note! += String(format: "; owner CPU %.0f ms per GiB served", ownerCPU * 1000 / served)
            }
            results.append(result)
        }
        return results
    }

    /// Whole-object gets, each into a new array (`GEDS.get`, lookup included): what a caller without a buffer of its
    /// own sees, the new array's pages included (Python's `get` is the same into a new `bytes`).
    func getBandwidth(sizes: [Int]) async throws -> [Measurement] {
        let reference = bandwidthReference()
        var results: [Measurement] = []
        for size in sizes {
            let info = try await setup.remoteObject(size: size)
            let perSample = max(1, (64 << 20) / size)
            let samples = setup.repetitions(for: size)
            progress("get-bw \(transport.rawValue) \(Report.formatSize(size)): \(samples) × \(perSample) gets")
            var seconds: [Double] = []
            for sample in 0...samples {  // the first is a warm-up
                var nanoseconds: UInt64 = 0
                for _ in 0..<perSample {
                    let start = DispatchTime.now().uptimeNanoseconds
                    let bytes = try await geds.get(bucket: bucket, key: info.key)
                    nanoseconds += DispatchTime.now().uptimeNanoseconds - start
                    // Freed here, untimed, as Python's bench times its `get` alone.
                    precondition(bytes.count == size)
                }
                if sample > 0 { seconds.append(Double(nanoseconds) / 1e9) }
            }
            results.append(.bandwidth(.getBandwidth, transport: transport, size: size,
                                      rates: Bench.rates(bytes: size * perSample, seconds), reference: reference,
                                      note: "remote get into a new array each (GEDS.get: lookup + read)"))
        }
        return results
    }

    /// Whole-object reads instantiated in the reader's tier 0 (the path of `view()` on a remote object).
    func readIntoTier0(sizes: [Int]) async throws -> [Measurement] {
        let reference = bandwidthReference()
        var results: [Measurement] = []
        // Below 1 MiB the figure is the cost of creating a tier-0 file, not of moving bytes.
        for size in sizes where size >= 1 << 20 {
            let info = try await setup.remoteObject(size: size)
            let reader = try await geds.open(bucket: bucket, key: info.key)
            let perSample = max(1, (64 << 20) / size)
            let samples = setup.repetitions(for: size)
            progress("read-tier0 \(transport.rawValue) \(Report.formatSize(size)): \(samples) × \(perSample) views")
            let seconds = try await Bench.timed(samples: samples) {
                for _ in 0..<perSample {
                    // As a consumer does: the view ends, then its object goes (so the next view is a fetch again,
                    // into the file this one leaves, recycled, as a later fetch after a delete would be).
                    do {
                        let view = try await reader.view()
                        precondition(view.count == size)
                    }
                    geds.dropTier0Copy(of: info.blob)
                }
            }
            results.append(.bandwidth(.readIntoTier0, transport: transport, size: size,
                                      rates: Bench.rates(bytes: size * perSample, seconds), reference: reference,
                                      note: "whole-object read into the reader's tier 0 (view()), each after the last one's copy was dropped"))
        }
        return results
    }

    func readManyMiB() async throws -> [Measurement] {
        let count = 128
        progress("read-1mib \(transport.rawValue): placing \(count) objects of 1 MiB")
        for index in 0..<count { _ = try await setup.place("mib/\(index)", size: 1 << 20) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        progress("read-1mib \(transport.rawValue): \(setup.repetitions) × \(count) objects")
        let seconds = try await Bench.timed(samples: setup.repetitions) {
            for index in 0..<count { _ = try await geds.read(bucket: bucket, key: "mib/\(index)", into: buffer) }
        }
        _ = try await geds.delete(bucket: bucket, prefix: "mib/")
        return [.bandwidth(.readManyMiB, transport: transport, size: 1 << 20, rates: Bench.rates(bytes: count << 20, seconds),
                           reference: bandwidthReference(),
                           note: "\(count) distinct 1 MiB objects back to back, each open (MDS lookup) + remote read")]
    }

    // MARK: Small-object latency

    func latency() async throws -> [Measurement] {
        var results: [Measurement] = []
        for size in [64, 4096, 65536] {
            let info = try await setup.place("lat-\(size)", size: size)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
            defer { buffer.deallocate() }
            progress("latency \(transport.rawValue) \(Report.formatSize(size)): 3000 gets after 300 warm-up")
            let seconds = try await Bench.timed(warmups: 300, samples: 3000) {
                // One call: the lookup and the read run on the node's event loop.
                let got = try await geds.read(bucket: bucket, key: info.key, into: buffer)
                precondition(got == size)
            }
            let reference = latencyReference(size: size)
            results.append(.latency(
                .latency, transport: transport, size: size, microseconds: seconds.map { $0 * 1e6 },
                reference: try await withLookup(reference, key: info.key),
                note: "open (MDS lookup) + remote read, one client; ratio = reference p50 / GEDS p50"))
            let inline = info.contents != nil
            // Not under TLS (nor with the MDS over RDMA): lookups then always go through the event loop.
            if inline, try geds.openOnCallerThread(bucket: bucket, key: info.key) != nil {
                // As the C ABI and Python get it: the lookup on the caller's own thread, the bytes with it.
                let key = info.key
                // Used by the measuring thread only, while this task waits for it.
                nonisolated(unsafe) let buffer = buffer
                let onThread = try await Bench.timedOnThread(warmups: 300, samples: 3000) { [geds, bucket] in
                    guard let reader = try geds.openOnCallerThread(bucket: bucket, key: key),
                          reader.info.copyContents(at: 0, into: buffer) == size else { preconditionFailure("not inline") }
                }
                results.append(.latency(
                    .latency, transport: transport, size: size, microseconds: onThread.map { $0 * 1e6 }, reference: reference,
                    note: "get on a thread of its own (lookup on the caller's thread, bytes inline: the C ABI's and Python's path); ratio = reference p50 / GEDS p50"))
            }
            // The location looked up once: what remains is the data plane's round trip (or none, for bytes inline).
            let reader = try await geds.open(bucket: bucket, key: info.key)
            let cached = try await Bench.timed(warmups: 300, samples: 3000) {
                let got = try await reader.read(at: 0, into: buffer)
                precondition(got == size)
            }
            results.append(.latency(
                .latency, transport: transport, size: size, microseconds: cached.map { $0 * 1e6 },
                reference: reference,
                note: inline ? "read of an open object whose bytes came with its lookup (no data-plane round trip; see --inline-limit 0)"
                             : "remote read with a cached location (open once), one client; ratio = reference p50 / GEDS p50"))
            try await geds.delete(bucket: bucket, key: info.key)
        }
        return results
    }

    /// Over RDMA the goal is stated against a READ plus one MDS lookup over RDMA send/receive: the
    /// reference is then ib_read_lat plus the p50 of this MDS's lookups from this reader, measured here.
    private func withLookup(_ reference: Reference, key: String) async throws -> Reference {
        guard transport == .rdma, let read = reference.value else { return reference }
        let mds = geds.metadataClient
        let bucket = self.bucket
        progress("latency rdma: 3000 MDS lookups over RDMA send/receive after 300 warm-up")
        let lookups = try await Bench.timed(warmups: 300, samples: 3000) { _ = try await mds.lookup(bucket: bucket, key: key) }
        let p50 = Statistics.median(lookups.map { $0 * 1e6 })
        return Reference(reference.name + String(format: " + MDS lookup over RDMA (p50 %.0f µs)", p50), .success(read + p50))
    }

    // MARK: Metadata operations

    /// MDS lookups per second from `clients` connections. The MDS speaks TCP whatever the data transport.
    /// The metadata operations a job's tasks issue, each measured with one client and with `clients`.
    enum MetadataOperation: String, CaseIterable {
        case lookup
        /// Lookups as the C ABI and Python make them: blocking calls on the caller's own thread (`DirectCalls`).
        case lookupOnCallerThread = "lookup on the caller's thread"
        /// Lookups as redis-benchmark drives redis: every connection from one thread, one request outstanding on
        /// each, answered replies followed at once by the next request (so the clients' thread switches are not
        /// what is measured).
        case lookupFromOneThread = "lookup, all connections from one thread"
        case createSeal = "create+seal"
        /// create+seal driven as `lookupFromOneThread` drives lookups (redis-benchmark's way).
        case createSealFromOneThread = "create+seal, all connections from one thread"
        case list = "list 100 keys"

        /// The redis command it is compared with, where redis has a counterpart.
        var redisCommand: String? {
            switch self {
            case .lookup, .lookupOnCallerThread, .lookupFromOneThread: "GET"
            case .createSeal, .createSealFromOneThread: "SET"
            case .list: nil
            }
        }
    }

    func metadataOps(clients: Int) async throws -> [Measurement] {
        let info = try await setup.place("meta-key", size: 64)
        for index in 0..<1000 { _ = try await setup.place("meta-list/\(index)", size: 64, relocate: false) }
        var results: [Measurement] = []
        for operation in MetadataOperation.allCases {
            for count in Set([1, clients]).sorted() {
                let rate = try await Bench.metadataRate(operation, clients: count, key: info.key, mds: geds.nodeConfiguration!.mds,
                                                        node: geds.nodeIndex, bucket: bucket)
                var result = Measurement(workload: Workload.metadataOps.rawValue, transport: Transport.tcp.rawValue, size_bytes: 0,
                                         ops_per_s: rate,
                                         note: "MDS \(operation.rawValue)/s, \(count) client\(count == 1 ? "" : "s") each on its own connection")
                if let command = operation.redisCommand {
                    let redis = References.redis(command, size: 64, clients: count, requests: count == 1 ? 50_000 : 200_000)
                    result.compare(with: Reference("redis-benchmark \(command), \(count) client\(count == 1 ? "" : "s")",
                                                   redis.map(\.requestsPerSecond)),
                                   higherIsBetter: true, value: rate)
                }
                results.append(result)
            }
        }
        try await geds.delete(bucket: bucket, key: info.key)
        _ = try await geds.delete(bucket: bucket, prefix: "meta-")
        return results
    }

    /// Operations per second of `operation` over `duration` s with `clients` concurrent clients (after one warm-up
    /// each), on the MDS at `mdsEndpoint` as node `node`. Lookups are of `key`; seals are of new keys named after
    /// `key`, of `size`-byte objects, bringing `contents` (as a node does for objects within the MDS's inline limit).
    static func metadataRate(_ operation: MetadataOperation, clients: Int, key: String, mds mdsEndpoint: Endpoint, node: UInt32,
                             bucket: String, size: UInt64 = 64, contents: [UInt8]? = nil, duration: Double = 2,
                             workload: String = Workload.metadataOps.rawValue) async throws -> Double {
        progress("\(workload): \(operation.rawValue), \(clients) client\(clients == 1 ? "" : "s") for \(Int(duration)) s")
        switch operation {
        case .lookupOnCallerThread:
            return try callerThreadLookupRate(clients: clients, key: key, mds: mdsEndpoint, bucket: bucket, duration: duration)
        case .lookupFromOneThread:
            return try oneThreadRate(connections: clients, mds: mdsEndpoint, duration: duration) { _, reply in
                switch reply {
                case nil, .object?: return .lookup(bucket: bucket, key: key)
                case let other?: throw GedsError(.protocolViolation, "a lookup was answered \(other)")
                }
            }
        case .createSealFromOneThread:
            // Each connection reserves its blob ids first, as a node does, then announces one object per request.
            var reserved = Array(repeating: BlobID(0), count: clients)
            var created = Array(repeating: UInt64(0), count: clients)
            let bytes = contents ?? []
            return try oneThreadRate(connections: clients, mds: mdsEndpoint, duration: duration) { connection, reply in
                switch reply {
                case nil:
                    return .reserveBlobs(node: node, count: MetadataStore.maximumReservation)
                case .created(let first)?:
                    reserved[connection] = first
                case .ok?:
                    created[connection] += 1
                case let other?:
                    throw GedsError(.protocolViolation, "a create+seal was answered \(other)")
                }
                return .sealNewObject(blob: BlobID(reserved[connection].rawValue + created[connection]), bucket: bucket,
                                      key: "meta-new/\(key)one-thread/\(connection)/\(created[connection])", size: size, metadata: [:],
                                      placement: BlobPlacement(node: node, tier: .tier0), contents: bytes)
            }
        case .lookup, .createSeal, .list:
            break
        }
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for client in 0..<clients {
                group.addTask {
                    let mds = Bench.ownMDSClient(mdsEndpoint)
                    defer { mds.pool.closeAll() }
                    var done = 0
                    // As a node creates objects whole: under ids reserved ahead, announced with their seal (one request).
                    var reserved = BlobID(0)
                    var created: UInt64 = 0
                    if operation == .createSeal {
                        let reply = try await mds.call(.reserveBlobs(node: node, count: MetadataStore.maximumReservation))
                        guard case .created(let first) = reply else { throw GedsError(.protocolViolation, "unexpected \(reply)") }
                        reserved = first
                    }
                    func once() async throws {
                        switch operation {
                        case .lookup, .lookupOnCallerThread, .lookupFromOneThread, .createSealFromOneThread:
                            _ = try await mds.lookup(bucket: bucket, key: key)
                        case .createSeal:
                            // Metadata only: the blob's bytes are not the point here.
                            try await mds.expectOK(.sealNewObject(blob: BlobID(reserved.rawValue + created), bucket: bucket,
                                                                  key: "meta-new/\(key)\(client)/\(created)", size: size, metadata: [:],
                                                                  placement: BlobPlacement(node: node, tier: .tier0), contents: contents))
                            created += 1
                        case .list:
                            _ = try await mds.list(bucket: bucket, prefix: "meta-list/", delimiter: "", startAfter: "", maxKeys: 100)
                        }
                    }
                    try await once()  // warm-up: opens the connection
                    let end = DispatchTime.now().uptimeNanoseconds + UInt64(duration * 1e9)
                    while DispatchTime.now().uptimeNanoseconds < end {
                        try await once()
                        done += 1
                    }
                    return done
                }
            }
            return try await group.reduce(0, +)
        }
        return Double(counts) / duration
    }

    /// Lookups per second from `clients` threads of their own, each calling on its own blocking connection.
    static func callerThreadLookupRate(clients: Int, key: String, mds: Endpoint, bucket: String, duration: Double) throws -> Double {
        let calls = DirectCalls(endpoint: mds, timeoutMilliseconds: 10_000, token: try DeploymentToken.resolve(tokenFile: nil))
        let counts = Mutex<[Result<Int, GedsError>]>([])
        let finished = DispatchGroup()
        for _ in 0..<clients {
            finished.enter()
            Thread.detachNewThread {
                let outcome = Result { () throws(GedsError) -> Int in
                    _ = try calls.call(.lookup(bucket: bucket, key: key))  // warm-up: opens the connection
                    let end = DispatchTime.now().uptimeNanoseconds + UInt64(duration * 1e9)
                    var done = 0
                    while DispatchTime.now().uptimeNanoseconds < end {
                        guard case .object = try calls.call(.lookup(bucket: bucket, key: key)) else {
                            throw GedsError(.protocolViolation, "a lookup did not return the object")
                        }
                        done += 1
                    }
                    return done
                }
                counts.withLock { $0.append(outcome) }
                finished.leave()
            }
        }
        finished.wait()
        return Double(try counts.withLock { $0 }.reduce(0) { try $0 + $1.get() }) / duration
    }

    /// Requests per second from `connections` connections driven by this one thread with `poll`, as redis-benchmark
    /// drives its clients: each connection has one request outstanding, and a whole reply is decoded and checked
    /// before the next request goes out on it. `next(connection, reply)` checks a connection's reply (nil before its
    /// first request) and makes its next request; the first reply on each connection is not counted (it opens the
    /// connection, or reserves what the others use). Open deployments only (no token handshake here).
    static func oneThreadRate(connections count: Int, mds: Endpoint, duration: Double,
                              next: (_ connection: Int, _ reply: Reply?) throws -> Request) throws -> Double {
        guard try DeploymentToken.resolve(tokenFile: nil) == nil else {
            throw GedsError(.invalidArgument, "the one-thread driver speaks to open deployments only")
        }
        var connections: [BlockingReplies] = []
        defer { for connection in connections { close(connection.socket) } }
        for _ in 0..<count {
            connections.append(BlockingReplies(try BlockingTCP.connect(to: mds, peerName: "MDS", timeoutMilliseconds: 10_000)))
        }
        for index in connections.indices { try connections[index].send(try next(index, nil)) }
        var polled = connections.map { pollfd(fd: $0.socket, events: Int16(POLLIN), revents: 0) }
        var opened = Array(repeating: false, count: connections.count)
        var done = 0
        var end = UInt64.max
        while DispatchTime.now().uptimeNanoseconds < end {
            guard poll(&polled, nfds_t(polled.count), 1000) >= 0 else { throw GedsError.io("one-thread driver: poll", errno: errno) }
            for index in polled.indices where polled[index].revents != 0 {
                polled[index].revents = 0
                let reply = try connections[index].next()
                guard !connections[index].holdsMoreBytes else {
                    throw GedsError(.protocolViolation, "one-thread driver: more than one reply to one request")
                }
                if opened[index] {
                    if end != .max { done += 1 }
                } else {
                    opened[index] = true
                    // The clock starts once every connection is open.
                    if !opened.contains(false) { end = DispatchTime.now().uptimeNanoseconds + UInt64(duration * 1e9) }
                }
                try connections[index].send(try next(index, reply))
            }
        }
        return Double(done) / duration
    }

    // MARK: Local reads and writes

    func localRead() async throws -> [Measurement] {
        let size = 64 << 20
        let info = try await setup.place("local", size: size, relocate: false)
        var checksum: UInt64 = 0
        let first = try await geds.open(bucket: bucket, key: info.key).view()
        let inMapping = withExtendedLifetime(first) {
            Bench.addressIsMapped(first.base, path: geds.tier0Path(of: info.blob))
        }
        progress("local: 200 zero-copy views of a 64 MiB object after 20 warm-up")
        let seconds = try await Bench.timed(warmups: 20, samples: 200) {
            let view = try await geds.open(bucket: bucket, key: info.key).view()
            checksum &+= UInt64(view.bytes[size - 1])
        }
        try await geds.delete(bucket: bucket, key: info.key)
        return [.latency(.local, transport: nil, size: size, microseconds: seconds.map { $0 * 1e6 },
                         reference: nil,
                         note: "open + zero-copy view of a local object: view address \(inMapping ? "lies in" : "is NOT in") the mapping of its tier-0 file (/proc/self/maps)")]
    }

    /// Whether `address` lies in a mapping of `path`, per /proc/self/maps: the proof that a view is no copy.
    static func addressIsMapped(_ address: UnsafeMutableRawPointer?, path: String) -> Bool {
        guard let address, let maps = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8) else { return false }
        let value = UInt(bitPattern: address)
        for line in maps.split(separator: "\n") where line.hasSuffix(path) {
            let range = line.split(separator: " ")[0].split(separator: "-").compactMap { UInt($0, radix: 16) }
            if range.count == 2, value >= range[0], value < range[1] { return true }
        }
        return false
    }

    func write() async throws -> [Measurement] {
        let size = 64 << 20
        var round = 0
        progress("write: \(setup.repetitions) × 64 MiB objects, then 2000 × 4 KiB")
        let seconds = try await Bench.timed(samples: setup.repetitions) {
            _ = try await setup.place("w-\(round)", size: size, relocate: false)
            round += 1
        }
        let small = 2000
        var index = 0
        let smallSeconds = try await Bench.timed(warmups: 100, samples: small) {
            _ = try await setup.place("ws/\(index)", size: 4096, relocate: false)
            index += 1
        }
        _ = try await geds.delete(bucket: bucket, prefix: "w")
        var smallWrites = Measurement.latency(
            .write, transport: .tcp, size: 4096, microseconds: smallSeconds.map { $0 * 1e6 },
            reference: nil, note: "create + write + seal + stat of 4 KiB objects, one client (three MDS round trips each)")
        smallWrites.ops_per_s = Double(small) / smallSeconds.reduce(0, +)
        return [
            .bandwidth(.write, transport: nil, size: size, rates: Bench.rates(bytes: size, seconds), reference: nil,
                       note: "create + write + seal into the local tier 0"),
            smallWrites,
        ]
    }
}

/// Requests sent and replies read on one plain blocking TCP connection, frame by frame (a subscription's frames may
/// come several to a `recv`).
struct BlockingReplies {
    let socket: Int32
    private var outbound = ByteBufferAllocator().buffer(capacity: 8 << 10)
    private var inbound = ByteBufferAllocator().buffer(capacity: 8 << 10)

    init(_ socket: Int32) { self.socket = socket }

    mutating func send(_ request: Request) throws {
        outbound.clear()
        FrameEncoder.append(request, id: 1, to: &outbound)
        let sent = outbound.withUnsafeReadableBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == outbound.readableBytes else { throw GedsError.io("blocking connection: send", errno: errno) }
    }

    /// Whether bytes past the last reply returned have come (with one request outstanding, a reply too many).
    var holdsMoreBytes: Bool { inbound.readableBytes > 0 }

    /// The next reply frame's reply, reading while it is not whole.
    mutating func next() throws -> Reply {
        while true {
            var view = inbound
            if let header = try FrameHeader.read(from: &view), view.readableBytes >= Int(header.length) {
                var payload = view.readSlice(length: Int(header.length))!
                inbound = view
                guard header.kind == .reply else { throw GedsError(.protocolViolation, "a \(header.kind) frame where a reply was due") }
                return try Reply.decode(from: &payload)
            }
            if inbound.readableBytes == 0 { inbound.clear() }
            var got = 0
            inbound.writeWithUnsafeMutableBytes(minimumWritableBytes: 4096) { free in
                got = recv(socket, free.baseAddress, free.count, 0)
                return max(got, 0)
            }
            guard got > 0 else { throw GedsError.io("blocking connection: recv", errno: got == 0 ? ECONNRESET : errno) }
        }
    }
}
