import Foundation
@_spi(Benchmarks) import GEDS
import GedsCore
import GedsMDS
import GedsWire
import Logging

/// What a durable MDS costs: create+seal of 4 KiB objects (the seal bringing the bytes, as a node's does within
/// the inline limit) with `clients` concurrent clients, on an MDS in memory, with `--state --fsync everysec` and with
/// `--fsync always`, each a geds-mds of its own (the first two side by side, driven in turns); beside
/// redis-benchmark SET of 4 KiB values with `appendfsync always` in the same folder (on disk: fsync on tmpfs costs
/// nothing), in turns with `always`.
enum MDSStateBench {
    static let objectSize = 4096
    static let seconds = 3.0
    /// Alternate slices of the in-memory MDS and of `everysec`, each `sliceSeconds` long.
    static let slices = 12
    static let sliceSeconds = 1.5
    /// Rounds of `always` against redis's AOF (each about 10 s with redis's).
    static let durableRounds = 6

    static func measure(binaries: String, parent: String, clients: Int, restartObjects: Int) async throws -> [Measurement] {
        let folder = "\(parent)/geds-perf-state-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        Cleanup.folders.withLock { $0.append(folder) }
        defer {
            try? FileManager.default.removeItem(atPath: folder)
            Cleanup.folders.withLock { $0.removeAll { $0 == folder } }
        }
        // Both MDSs run at once and are driven in turns of a second and a half, in both orders (ABBA): rounds of
        // 3 s, each on an MDS started for it, moved by ±30 % on this shared 2-core VM, far more than the journal's
        // own cost. Slices this short let a neighbour's load and whatever drifts during a run weigh on both alike.
        let (inMemory, everysec) = try await interleavedCreateSeal(binaries: binaries, clients: clients,
                                                                   against: ["--state", "\(folder)/everysec", "--fsync", "everysec"])
        var results = [measurement(inMemory.rates, "in-memory MDS (no --state)\(inMemory.cpuNote)", clients: clients)]
        var result = measurement(everysec.rates, "--state --fsync everysec\(everysec.cpuNote); goal at least 0.9x the in-memory MDS",
                                 clients: clients)
        result.note = (result.note ?? "") + Tier1Bench.pairedRatios(everysec.rates, inMemory.rates.map { .success($0) })
        result.compare(with: Reference("in-memory MDS create+seal, same run, in alternate slices", .success(Statistics.median(inMemory.rates))),
                       higherIsBetter: true, value: Statistics.median(everysec.rates))
        results.append(result)

        // `always` against redis's AOF in turns too: a single redis figure taken once beside a single GEDS figure
        // compared two moments of the disk, not two stores. Each side starts from an empty folder.
        // The library's clients (tasks in this process) beside a driver made as redis-benchmark is (every connection
        // from one thread), so that the figure against redis's shows the two servers, not only the two clients.
        var alwaysRates: [Double] = []
        var oneThreadRates: [Double] = []
        var redisRates: [Result<Double, References.Missing>] = []
        for round in 0..<durableRounds {
            let always = { (operation: Bench.MetadataOperation, name: String) in
                try await createSealRate(binaries: binaries, mdsArguments: ["--state", "\(folder)/\(name)-\(round)", "--fsync", "always"],
                                         clients: clients, operation: operation)
            }
            let redis = {
                try? FileManager.default.createDirectory(atPath: "\(folder)/redis-\(round)", withIntermediateDirectories: true)
                return References.redis("SET", size: objectSize, clients: clients, requests: 50_000,
                                        appendOnly: References.AppendOnly(fsync: "always", directory: "\(folder)/redis-\(round)"))
                    .map(\.requestsPerSecond)
            }
            if round % 2 == 0 {
                alwaysRates.append(try await always(.createSeal, "always"))
                oneThreadRates.append(try await always(.createSealFromOneThread, "always-one-thread"))
                redisRates.append(redis())
            } else {
                redisRates.append(redis())
                oneThreadRates.append(try await always(.createSealFromOneThread, "always-one-thread"))
                alwaysRates.append(try await always(.createSeal, "always"))
            }
            try? FileManager.default.removeItem(atPath: "\(folder)/redis-\(round)")  // its AOF: about 200 MB
        }
        let redisReference = Reference("redis-benchmark SET 4 KiB, appendfsync always, \(clients) clients, median of rounds in turns",
                                       References.median(redisRates))
        for (rates, driver) in [(alwaysRates, "the library's clients"), (oneThreadRates, "driven from one thread as redis-benchmark drives redis")] {
            result = measurement(rates, "--state --fsync always, \(driver); goal at least 1.0x redis appendfsync always", clients: clients)
            result.note = (result.note ?? "") + Tier1Bench.pairedRatios(rates, redisRates)
            result.compare(with: redisReference, higherIsBetter: true, value: Statistics.median(rates))
            results.append(result)
        }
        results.append(try await restart(objects: restartObjects, directory: folder + "/restart"))
        return results
    }

    /// Seconds from the start of an MDS whose state holds `objects` objects (snapshot and journal as a run that
    /// sealed them left them) until it serves: an MDS in this process, filled through its request service.
    static func restart(objects: Int, directory: String) async throws -> Measurement {
        progress("mds-state: sealing \(objects.formatted()) objects into an MDS with --state, then restarting it")
        var logger = Logger(label: "geds-perf")
        logger.logLevel = .warning
        let state = StateOptions(directory: directory, fsync: .everysec)
        let listen = Endpoint(host: "127.0.0.1", port: 0)
        // A lease longer than the run: this node sends no heartbeats.
        let first = try await MetadataServer.start(listen: listen, leaseMilliseconds: 3_600_000, state: state, logger: logger)
        let registration = NodeRegistration(name: "n", hostID: "h", role: .daemon, tcp: Endpoint(host: "127.0.0.1", port: 1),
                                            tier0Directory: "/t")
        guard case .reply(.nodeRegistered(let node, _, _)) = first.service.respond(to: .registerNode(registration)) else {
            throw GedsError(.internal, "the MDS did not register the node")
        }
        _ = first.service.respond(to: .createBucket("restart"))
        for index in 0..<objects {
            let response = first.service.respond(to: .createObject(bucket: "restart", key: MetadataScale.key(index), node: node))
            guard case .reply(.created(let blob)) = response else {
                throw GedsError(.internal, "the MDS did not create an object: \(response)")
            }
            _ = first.service.respond(to: .sealObject(blob: blob, size: 1024, metadata: [:], placement: BlobPlacement(node: node, tier: .tier0)))
        }
        await first.close()
        let started = DispatchTime.now().uptimeNanoseconds
        let second = try await MetadataServer.start(listen: listen, leaseMilliseconds: 3_600_000, state: state, logger: logger)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        let restored = second.service.objectCount
        await second.close()
        guard restored == objects else { throw GedsError(.internal, "the restarted MDS has \(restored) of \(objects) objects") }
        var result = Measurement(workload: Workload.mdsState.rawValue, transport: "none", size_bytes: 0, objects: objects,
                                 note: String(format: "MDS restart: serving again %.2f s after its start, with %@ objects in its state "
                                              + "(snapshot + journal); goal at most 5 s at 1 M", seconds, objects.formatted()))
        result.p50_us = seconds * 1e6
        return result
    }

    /// What one MDS did over its slices: its create+seal/s in each, and its CPU time per create+seal over all.
    struct SlicedRates {
        var rates: [Double] = []
        var operations = 0.0
        var cpuSeconds = 0.0

        var cpuNote: String {
            operations > 0 ? String(format: "; the MDS's CPU time %.1f µs per create+seal", cpuSeconds * 1e6 / operations) : ""
        }
    }

    /// create+seal/s of an in-memory MDS and of one started with `arguments`, both running at once, driven in
    /// `slices` alternate slices (ABBA) of `sliceSeconds` each, every slice sealing keys of its own (deleted after it).
    private static func interleavedCreateSeal(binaries: String, clients: Int, against arguments: [String]) async throws -> (SlicedRates, SlicedRates) {
        let parent = "/dev/shm/geds-perf-\(getpid())"
        var clusters: [Cluster] = []
        defer { for cluster in clusters { cluster.stop() } }
        for (index, mdsArguments) in [[], arguments].enumerated() {
            clusters.append(try Cluster(existingMDS: nil, binaries: binaries, ownerName: nil, hugePages: false, mdsArguments: mdsArguments,
                                        scratch: "\(parent)-\(index)"))
        }
        var readers: [GEDS] = []
        var sliced = [SlicedRates(), SlicedRates()]
        let bucket = "perf-state-\(getpid())"
        do {
            for cluster in clusters {
                readers.append(try await cluster.connectReader(named: "state-writer"))
                try await readers.last!.createBucket(bucket)
            }
            for slice in 0..<slices {
                for index in slice % 2 == 0 ? [0, 1] : [1, 0] {
                    let cpuBefore = clusters[index].mdsPID.flatMap(Cluster.cpuSeconds) ?? 0
                    let rate = try await Bench.metadataRate(.createSeal, clients: clients, key: "slice-\(slice)/", mds: clusters[index].mds,
                                                            node: readers[index].nodeIndex, bucket: bucket, size: UInt64(objectSize),
                                                            contents: [UInt8](repeating: 0x5A, count: objectSize), duration: sliceSeconds,
                                                            workload: Workload.mdsState.rawValue)
                    sliced[index].rates.append(rate)
                    sliced[index].operations += rate * sliceSeconds
                    sliced[index].cpuSeconds += (clusters[index].mdsPID.flatMap(Cluster.cpuSeconds) ?? 0) - cpuBefore
                    // Each slice starts from a store of the same size, as each round did on an MDS of its own.
                    _ = try await readers[index].delete(bucket: bucket, prefix: "meta-new/slice-\(slice)/")
                }
            }
        } catch {
            for reader in readers { await reader.close() }
            throw error
        }
        for reader in readers { await reader.close() }
        return (sliced[0], sliced[1])
    }

    private static func measurement(_ rates: [Double], _ configuration: String, clients: Int) -> Measurement {
        Measurement(workload: Workload.mdsState.rawValue, transport: Transport.tcp.rawValue, size_bytes: objectSize,
                    ops_per_s: Statistics.median(rates), samples: rates.count,
                    note: "MDS create+seal/s of 4 KiB objects, \(clients) clients each on its own connection; \(configuration)"
                        + (rates.count > 1 ? "; median of rounds \(rates.map { String(Int($0)) }.joined(separator: ", "))" : ""))
    }

    /// Starts an MDS with these arguments (and the owner gedsd a cluster has), registers a node with it and measures.
    private static func createSealRate(binaries: String, mdsArguments: [String], clients: Int,
                                       operation: Bench.MetadataOperation = .createSeal) async throws -> Double {
        let cluster = try Cluster(existingMDS: nil, binaries: binaries, ownerName: nil, hugePages: false, mdsArguments: mdsArguments)
        defer { cluster.stop() }
        let geds = try await cluster.connectReader(named: "state-writer")
        let bucket = "perf-state-\(getpid())"
        do {
            try await geds.createBucket(bucket)
            let rate = try await Bench.metadataRate(operation, clients: clients, key: "", mds: cluster.mds, node: geds.nodeIndex,
                                                    bucket: bucket, size: UInt64(objectSize),
                                                    contents: [UInt8](repeating: 0x5A, count: objectSize), duration: seconds,
                                                    workload: Workload.mdsState.rawValue)
            await geds.close()
            return rate
        } catch {
            await geds.close()
            throw error
        }
    }
}
