import Foundation
import GEDS
import GedsCore
import GedsNode
import GedsTCP
import NIOCore
import NIOPosix

/// The workloads. The reader is this process's own node on its own (simulated) host, so every remote
/// read crosses TCP from the owner `gedsd`, as a read from another machine would.
final class Bench {
    let geds: GEDS
    let ownerName: String
    let repetitions: Int
    let bucket = "perf-\(getpid())"
    private var owner: NodeInfo?
    private var iperfGbit: [Double]??
    /// 1 MiB of random bytes, repeated to fill objects.
    private let pattern: UnsafeMutableRawBufferPointer = {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        for index in 0..<buffer.count { buffer[index] = UInt8.random(in: 0...255) }
        return buffer
    }()

    deinit {
        pattern.deallocate()
    }

    init(geds: GEDS, ownerName: String, repetitions: Int) {
        self.geds = geds
        self.ownerName = ownerName
        self.repetitions = max(1, repetitions)
    }

    func prepare() async throws {
        try await geds.createBucket(bucket)
        owner = try await geds.relocationTarget(named: ownerName.isEmpty ? nil : ownerName)
    }

    /// Writes an object here and relocates it to the owner, so that reading it is a remote read.
    func place(_ key: String, size: Int, relocate: Bool = true) async throws -> ObjectInfo {
        let writer = try await geds.create(bucket: bucket, key: key)
        var offset = 0
        while offset < size {
            let count = min(pattern.count, size - offset)
            try writer.write(UnsafeRawBufferPointer(rebasing: pattern[..<count]), at: UInt64(offset))
            offset += count
        }
        try await writer.seal()
        if relocate, let owner { try await geds.relocate(bucket: bucket, key: key, to: owner) }
        return try await geds.stat(bucket: bucket, key: key)
    }

    func iperfReference() throws -> Double? {
        if iperfGbit == nil {
            progress("reference: iperf3 single stream on loopback (3 × 3 s)")
            iperfGbit = try References.iperf3(seconds: 3, repetitions: 3)
        }
        guard let values = iperfGbit!, !values.isEmpty else { return nil }
        return Statistics.median(values)
    }

    static func elapsed(_ body: () async throws -> Void) async rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try await body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    // MARK: Remote read bandwidth

    func readBandwidth(sizes: [Int]) async throws -> [Measurement] {
        let reference = try iperfReference()
        var results: [Measurement] = []
        for size in sizes {
            progress("read-bw: \(Report.formatSize(size))")
            let info = try await place("bw-\(size)", size: size)
            let reader = try await geds.open(bucket: bucket, key: info.key)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            let perRound = max(1, (64 << 20) / size)
            var rates: [Double] = []
            _ = try await reader.read(at: 0, into: buffer)  // warm-up: connection, page cache, buffers
            for _ in 0..<repetitions {
                let seconds = try await Bench.elapsed {
                    for _ in 0..<perRound { _ = try await reader.read(at: 0, into: buffer) }
                }
                rates.append(Double(size * perRound) * 8 / seconds / 1e9)
            }
            results.append(bandwidth("read-bw", size: size, rates: rates, reference: reference,
                                     note: "remote read into a caller buffer (open once, \(perRound) reads per repetition)"))
            if size >= 1 << 20 {
                var copyRates: [Double] = []
                for _ in 0..<repetitions {
                    let seconds = try await Bench.elapsed {
                        let view = try await reader.view()
                        precondition(view.count == size)
                    }
                    geds.node.tier0.remove(info.blob)
                    copyRates.append(Double(size) * 8 / seconds / 1e9)
                }
                results.append(bandwidth("read-tier0", size: size, rates: copyRates, reference: reference,
                                         note: "whole-object read instantiated in the reader's tier 0 (fresh tmpfs pages each time)"))
            }
            try await geds.delete(bucket: bucket, key: info.key)
        }
        return results
    }

    func readManyMiB() async throws -> [Measurement] {
        let count = 128
        progress("read-1mib: placing \(count) objects of 1 MiB")
        for index in 0..<count { _ = try await place("mib/\(index)", size: 1 << 20) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        var rates: [Double] = []
        for round in 0...repetitions {
            let seconds = try await Bench.elapsed {
                for index in 0..<count {
                    let reader = try await geds.open(bucket: bucket, key: "mib/\(index)")
                    _ = try await reader.read(at: 0, into: buffer)
                }
            }
            if round > 0 { rates.append(Double(count << 20) * 8 / seconds / 1e9) }
        }
        try await geds.delete(bucket: bucket, prefix: "mib/")
        return [bandwidth("read-1mib", size: 1 << 20, rates: rates, reference: try iperfReference(),
                          note: "\(count) distinct 1 MiB objects back to back, each open (MDS lookup) + remote read")]
    }

    private func bandwidth(_ workload: String, size: Int, rates: [Double], reference: Double?, note: String) -> Measurement {
        let median = Statistics.median(rates)
        return Measurement(workload: workload, transport: "tcp", size_bytes: size, gbit_per_s: median,
                           spread: Statistics.spread(rates), reference: reference == nil ? "iperf3 (missing)" : "iperf3 single stream",
                           reference_value: reference, ratio: reference.map { median / $0 }, note: note)
    }

    // MARK: Small-object latency

    func latency() async throws -> [Measurement] {
        var results: [Measurement] = []
        let iterations = 3000
        for size in [64, 4096, 65536] {
            progress("latency: \(Report.formatSize(size))")
            let info = try await place("lat-\(size)", size: size)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
            defer { buffer.deallocate() }
            var samples: [Double] = []
            samples.reserveCapacity(iterations)
            for round in 0..<(iterations + 300) {
                let seconds = try await Bench.elapsed {
                    let reader = try await geds.open(bucket: bucket, key: info.key)
                    let got = try await reader.read(at: 0, into: buffer)
                    precondition(got == size)
                }
                if round >= 300 { samples.append(seconds * 1e6) }
            }
            samples.sort()
            let p50 = Statistics.percentile(samples, 0.5)
            let redis = try References.redisGet(size: size, clients: 1, requests: 20000)
            results.append(Measurement(
                workload: "latency", transport: "tcp", size_bytes: size, p50_us: p50,
                p99_us: Statistics.percentile(samples, 0.99), p999_us: Statistics.percentile(samples, 0.999),
                reference: redis == nil ? "redis GET (missing)" : "redis-benchmark GET p50, 1 client",
                reference_value: redis?.p50Microseconds, ratio: redis.map { $0.p50Microseconds / p50 },
                note: "open (MDS lookup) + remote read, one client; ratio = redis p50 / GEDS p50 (>1: GEDS faster)"))
            try await geds.delete(bucket: bucket, key: info.key)
        }
        return results
    }

    // MARK: Metadata operations

    func metadataOps(clients: Int) async throws -> [Measurement] {
        progress("mds-ops: \(clients) clients, lookups for 3 s")
        let info = try await place("meta-key", size: 64)
        let mdsEndpoint = geds.node.configuration.mds
        let duration = 3.0
        let bucket = self.bucket
        let key = info.key
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<clients {
                group.addTask {
                    let client = MDSClient(endpoint: mdsEndpoint, pool: ConnectionPool(group: MultiThreadedEventLoopGroup.singleton),
                                           timeout: .seconds(10))
                    _ = try await client.lookup(bucket: bucket, key: key)
                    let end = DispatchTime.now().uptimeNanoseconds + UInt64(duration * 1e9)
                    var done = 0
                    while DispatchTime.now().uptimeNanoseconds < end {
                        _ = try await client.lookup(bucket: bucket, key: key)
                        done += 1
                    }
                    client.pool.closeAll()
                    return done
                }
            }
            return try await group.reduce(0, +)
        }
        let rate = Double(counts) / duration
        let redis = try References.redisGet(size: 64, clients: clients, requests: 200_000)
        try await geds.delete(bucket: bucket, key: info.key)
        return [Measurement(workload: "mds-ops", transport: "tcp", size_bytes: 0, ops_per_s: rate,
                            reference: redis == nil ? "redis GET (missing)" : "redis-benchmark GET, \(clients) clients",
                            reference_value: redis?.requestsPerSecond, ratio: redis.map { rate / $0.requestsPerSecond },
                            note: "MDS lookups/s, \(clients) clients each on its own connection")]
    }

    // MARK: Local reads and writes

    func localRead() async throws -> [Measurement] {
        progress("local: zero-copy view of a 64 MiB object")
        let size = 64 << 20
        let info = try await place("local", size: size, relocate: false)
        var samples: [Double] = []
        var checksum: UInt64 = 0
        var inMapping = false
        for round in 0..<220 {
            let seconds = try await Bench.elapsed {
                let view = try await geds.open(bucket: bucket, key: info.key).view()
                checksum &+= UInt64(view.bytes[size - 1])
                if round == 0 { inMapping = Bench.addressIsMapped(view.base, path: geds.node.tier0.path(of: info.blob)) }
            }
            if round >= 20 { samples.append(seconds * 1e6) }
        }
        samples.sort()
        try await geds.delete(bucket: bucket, key: info.key)
        return [Measurement(workload: "local", transport: "none", size_bytes: size, p50_us: Statistics.percentile(samples, 0.5),
                            p99_us: Statistics.percentile(samples, 0.99),
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
        progress("write: 64 MiB objects and 4 KiB objects (create + write + seal)")
        var rates: [Double] = []
        for round in 0..<repetitions {
            let seconds = try await Bench.elapsed { _ = try await place("w-\(round)", size: 64 << 20, relocate: false) }
            rates.append(Double(64 << 20) * 8 / seconds / 1e9)
        }
        let small = 2000
        let seconds = try await Bench.elapsed {
            for index in 0..<small { _ = try await place("ws/\(index)", size: 4096, relocate: false) }
        }
        try await geds.delete(bucket: bucket, prefix: "w")
        return [
            Measurement(workload: "write", transport: "none", size_bytes: 64 << 20, gbit_per_s: Statistics.median(rates),
                        spread: Statistics.spread(rates), note: "create + write + seal into the local tier 0"),
            Measurement(workload: "write", transport: "tcp", size_bytes: 4096, ops_per_s: Double(small) / seconds,
                        note: "create + write + seal + stat of 4 KiB objects, one client (three MDS round trips each)"),
        ]
    }
}
