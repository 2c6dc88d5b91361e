import Foundation
@_spi(Benchmarks) import GEDS
import GedsCore

/// What a durable MDS costs: create+seal of 4 KiB objects (the seal bringing the bytes, as a node's does within
/// the inline limit) with `clients` concurrent clients, on an MDS in memory, with `--state --fsync everysec` and with
/// `--fsync always`, each a geds-mds of its own; beside redis-benchmark SET of 4 KiB values with
/// `appendfsync always` in the same folder (on disk: fsync on tmpfs costs nothing).
enum MDSStateBench {
    static let objectSize = 4096
    static let seconds = 3.0
    static let rounds = 3

    static func measure(binaries: String, parent: String, clients: Int) async throws -> [Measurement] {
        let folder = "\(parent)/geds-perf-state-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        Cleanup.folders.withLock { $0.append(folder) }
        defer {
            try? FileManager.default.removeItem(atPath: folder)
            Cleanup.folders.withLock { $0.removeAll { $0 == folder } }
        }
        // In turns, so that a neighbour's load on this machine weighs on both alike; medians of the rounds.
        var inMemoryRates: [Double] = []
        var everysecRates: [Double] = []
        for round in 0..<rounds {
            inMemoryRates.append(try await createSealRate(binaries: binaries, mdsArguments: [], clients: clients))
            everysecRates.append(try await createSealRate(binaries: binaries, mdsArguments: ["--state", "\(folder)/everysec-\(round)",
                                                                                           "--fsync", "everysec"], clients: clients))
        }
        let inMemory = Statistics.median(inMemoryRates)
        let everysec = Statistics.median(everysecRates)
        var results = [measurement(inMemoryRates, "in-memory MDS (no --state)", clients: clients)]
        var result = measurement(everysecRates, "--state --fsync everysec; goal at least 0.9x the in-memory MDS", clients: clients)
        result.compare(with: Reference("in-memory MDS create+seal, same run", .success(inMemory)), higherIsBetter: true, value: everysec)
        results.append(result)

        let always = try await createSealRate(binaries: binaries, mdsArguments: ["--state", folder + "/always", "--fsync", "always"],
                                              clients: clients)
        result = measurement([always], "--state --fsync always; goal at least 1.0x redis appendfsync always", clients: clients)
        try FileManager.default.createDirectory(atPath: folder + "/redis", withIntermediateDirectories: true)
        let redis = References.redis("SET", size: objectSize, clients: clients, requests: 50_000,
                                     appendOnly: References.AppendOnly(fsync: "always", directory: folder + "/redis"))
        result.compare(with: Reference("redis-benchmark SET 4 KiB, appendfsync always, \(clients) clients", redis.map(\.requestsPerSecond)),
                       higherIsBetter: true, value: always)
        results.append(result)
        return results
    }

    private static func measurement(_ rates: [Double], _ configuration: String, clients: Int) -> Measurement {
        Measurement(workload: Workload.mdsState.rawValue, transport: Transport.tcp.rawValue, size_bytes: objectSize,
                    ops_per_s: Statistics.median(rates), samples: rates.count,
                    note: "MDS create+seal/s of 4 KiB objects, \(clients) clients each on its own connection; \(configuration)"
                        + (rates.count > 1 ? "; median of rounds \(rates.map { String(Int($0)) }.joined(separator: ", "))" : ""))
    }

    /// Starts an MDS with these arguments (and the owner gedsd a cluster has), registers a node with it and measures.
    private static func createSealRate(binaries: String, mdsArguments: [String], clients: Int) async throws -> Double {
        let cluster = try Cluster(existingMDS: nil, binaries: binaries, ownerName: nil, hugePages: false, mdsArguments: mdsArguments)
        defer { cluster.stop() }
        let geds = try await cluster.connectReader(named: "state-writer")
        let bucket = "perf-state-\(getpid())"
        do {
            try await geds.createBucket(bucket)
            let rate = try await Bench.metadataRate(.createSeal, clients: clients, key: "", mds: cluster.mds, node: geds.nodeIndex,
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
