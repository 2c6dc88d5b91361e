import Foundation
import GEDS
import GedsCore
import Logging

/// What a second copy costs at seal: a task's node writes 64 MiB and seals it with 2 replicas (its own copy, and a
/// gedsd on another host pulls one before the seal returns), beside what a single copy costs when one remote reader
/// then fetches it (seal, then a node on another host reads the whole object into its tier 0): the same bytes cross
/// the network once in both. Rounds alternate; medians.
enum ReplicaBench {
    static let size = 64 << 20
    static let rounds = 9

    static func measure(binaries: String) async throws -> [Measurement] {
        let cluster = try Cluster(existingMDS: nil, binaries: binaries, ownerName: nil, hugePages: false)
        defer { cluster.stop() }
        _ = try cluster.startNode(name: "perf-replica", hostID: "perf-replica-host")
        let writer = try await cluster.connectReader(named: "replica-writer")
        var logger = Logger(label: "geds-perf")
        logger.logLevel = .warning
        var readerConfiguration = NodeConfiguration(mds: cluster.mds, tier0Directory: cluster.scratch + "/replica-reader",
                                                    name: "replica-reader-\(getpid())", hostID: "perf-remote-reader-host",
                                                    publishCachedCopies: false)
        readerConfiguration.attach = .never
        let reader: GEDS
        do {
            reader = try await GEDS.connect(readerConfiguration, logger: logger)
        } catch {
            await writer.close()
            throw error
        }
        let bucket = "perf-replicas-\(getpid())"
        let bytes = [UInt8]((0..<size).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) })
        var replicated: [Double] = []
        var reference: [Double] = []
        do {
            try await writer.createBucket(bucket)
            progress("replicas: \(rounds) rounds of a 64 MiB seal with 2 copies, beside a single-copy seal plus one remote read")
            for round in 0...rounds {  // round 0 warms up
                let twoCopies = try await Bench.timed(warmups: 0, samples: 1) {
                    try await seal(bytes, in: bucket, key: "two-\(round)", replicas: 2, writer: writer)
                }
                let info = try await writer.stat(bucket: bucket, key: "two-\(round)")
                guard info.presentCopies == 2, Set(info.locations.compactMap { $0.nodeCopy?.hostID }).count == 2 else {
                    throw GedsError(.internal, "the replicated seal published \(info.presentCopies) copies")
                }
                let oneCopyAndRead = try await Bench.timed(warmups: 0, samples: 1) {
                    try await seal(bytes, in: bucket, key: "one-\(round)", replicas: 1, writer: writer)
                    let view = try await reader.open(bucket: bucket, key: "one-\(round)").view()
                    guard view.count == size else { throw GedsError(.internal, "the remote read got \(view.count) bytes") }
                }
                if round > 0 {
                    replicated += twoCopies
                    reference += oneCopyAndRead
                }
                try await writer.delete(bucket: bucket, prefix: "")
            }
        } catch {
            await reader.close()
            await writer.close()
            throw error
        }
        await reader.close()
        await writer.close()
        let median = Statistics.median(replicated)
        var result = Measurement.latency(.replicas, transport: .tcp, size: size, microseconds: replicated.map { $0 * 1e6 },
                                         reference: nil,
                                         note: "create+write+seal of 64 MiB with 2 replicas (the writer's copy and a gedsd's on another "
                                             + "host, pulled before the seal returns); goal at least 0.8x a single-copy seal plus one "
                                             + "remote read; median of \(rounds) rounds, each: \(replicated.map { String(format: "%.0f", $0 * 1000) }.joined(separator: ", ")) ms "
                                             + "vs \(reference.map { String(format: "%.0f", $0 * 1000) }.joined(separator: ", ")) ms")
        result.compare(with: Reference("single-copy seal + one remote read of 64 MiB, same run", .success(Statistics.median(reference) * 1e6)),
                       higherIsBetter: false, value: median * 1e6)
        return [result]
    }

    private static func seal(_ bytes: [UInt8], in bucket: String, key: String, replicas: Int, writer: GEDS) async throws(GedsError) {
        let object = try await writer.create(bucket: bucket, key: key, replicas: try Replicas(copies: replicas))
        try object.write(bytes, at: 0)
        try await object.seal()
    }
}
