import Foundation
import GEDS
import GedsCore
import Logging

/// Attach mode: this process attaches to a gedsd through its local socket, as every process on a gedsd's host
/// does, and is measured beside redis-benchmark over a Unix socket in the same run: 4 KiB put (create + write +
/// seal) and get with one client and with `clients`, a 256 MiB object written by another process (the CLI) and
/// viewed here (in the gedsd's tier-0 mapping, checked in /proc/self/maps), and what 64 attached connections
/// cost the gedsd.
enum AttachBench {
    static func measure(binaries: String, clients: Int) async throws -> [Measurement] {
        let socket = "/dev/shm/geds-perf-\(getpid())/attach.sock"  // in the cluster's scratch folder
        let cluster = try Cluster(existingMDS: nil, binaries: binaries, ownerName: nil, hugePages: false,
                                  ownerArguments: ["--socket", socket])
        defer { cluster.stop() }
        let geds = try GEDS.attach(socketPath: socket, mds: "\(cluster.mds)")
        try await geds.createBucket("perf-attach")
        var results = try await smallObjects(geds, clients: clients, socket: socket, mds: "\(cluster.mds)")
        results.append(try await metadataPath(geds, socket: socket))
        results.append(try await localView(geds, binaries: binaries, cluster: cluster, socket: socket))
        if let pid = cluster.ownerPID { results.append(try connectionCost(pid: pid, socket: socket)) }
        return results
    }

    private static func smallObjects(_ geds: GEDS, clients: Int, socket: String, mds: String) async throws -> [Measurement] {
        let size = 4096
        let bytes = [UInt8](repeating: 7, count: size)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        progress("attach: 4 KiB put (create + write + seal) and get, one client, 5000 each after 500 warm-up")
        let puts = try await Bench.timed(warmups: 500, samples: 5000) {
            try await geds.put(bucket: "perf-attach", key: "small", bytes: bytes)
        }
        let gets = try await Bench.timed(warmups: 500, samples: 5000) {
            _ = try await geds.read(bucket: "perf-attach", key: "small", into: buffer)
        }
        let redisSocket = "/dev/shm/geds-perf-\(getpid())/redis.sock"
        let redisSet = References.redis("SET", size: size, clients: 1, requests: 20_000, unixSocket: redisSocket)
        let redisGet = References.redis("GET", size: size, clients: 1, requests: 20_000, unixSocket: redisSocket)
        let manySet = References.redis("SET", size: size, clients: clients, requests: 50_000, unixSocket: redisSocket)
        let manyGet = References.redis("GET", size: size, clients: clients, requests: 50_000, unixSocket: redisSocket)
        var results = [
            Measurement.latency(.attach, transport: nil, size: size, microseconds: puts.map { $0 * 1e6 },
                                reference: Reference("redis-benchmark -s SET p50 (µs)", redisSet.map(\.p50Microseconds)),
                                note: "attached put: create + write + seal as GEDS.put does it (one request over the gedsd's local socket up to 64 KiB), one client"),
            Measurement.latency(.attach, transport: nil, size: size, microseconds: gets.map { $0 * 1e6 },
                                reference: Reference("redis-benchmark -s GET p50 (µs)", redisGet.map(\.p50Microseconds)),
                                note: "attached get: lookup + read into caller memory in one round trip, one client"),
        ]
        for (name, reference) in [("put", manySet), ("get", manyGet)] {
            func rate(_ value: Double, _ note: String) -> Measurement {
                var measurement = Measurement(workload: Workload.attach.rawValue, transport: "none", size_bytes: size,
                                              ops_per_s: value, note: "attached \(name), \(note)")
                measurement.compare(with: Reference("redis-benchmark -s \(name == "put" ? "SET" : "GET") -c \(clients) ops/s",
                                                    reference.map(\.requestsPerSecond)),
                                    higherIsBetter: true, value: value)
                return measurement
            }
            progress("attach: 4 KiB \(name) by \(clients) attached processes for 3 s each")
            results.append(rate(try processesRate(clients: clients, socket: socket, mds: mds, operation: name),
                                "\(clients) processes (geds-perf clients), each attached on its own"))
            progress("attach: 4 KiB \(name) by \(clients) tasks of this process for 3 s")
            let inProcess = try await throughput(clients: clients, seconds: 3) { (index) throws(GedsError) in
                if name == "put" {
                    try await geds.put(bucket: "perf-attach", key: "c\(index)", bytes: bytes)
                } else {
                    let local = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
                    defer { local.deallocate() }
                    _ = try await geds.read(bucket: "perf-attach", key: "small", into: local)
                }
            }
            results.append(rate(inProcess, "\(clients) tasks in this one process (one connection each; blocking calls: "
                                + "as many in flight as the cooperative pool has threads)"))
        }
        return results
    }

    /// An attached process's lookup (`stat`), straight to the MDS on the caller's thread, against the same
    /// through the gedsd's MDS session (the way of an attachment that does not know the MDS): the two ways an
    /// attached process could make metadata calls.
    private static func metadataPath(_ geds: GEDS, socket: String) async throws -> Measurement {
        progress("attach: stat straight to the MDS vs through the gedsd, 3000 each after 300 warm-up")
        let straight = try await Bench.timed(warmups: 300, samples: 3000) { _ = try await geds.stat(bucket: "perf-attach", key: "small") }
        let throughGedsd = try GEDS.attach(socketPath: socket)
        let through: [Double]
        do {
            through = try await Bench.timed(warmups: 300, samples: 3000) { _ = try await throughGedsd.stat(bucket: "perf-attach", key: "small") }
        } catch {
            await throughGedsd.close()
            throw error
        }
        await throughGedsd.close()
        let throughP50 = Statistics.percentile(through.sorted(), 0.5) * 1e6
        return .latency(.attach, transport: nil, size: 0, microseconds: straight.map { $0 * 1e6 },
                        reference: Reference("stat through the gedsd p50 (µs)", .success(throughP50)),
                        note: "attached stat (MDS lookup) straight to the MDS on the caller's thread, against the same through the gedsd's MDS session")
    }

    /// The summed rates of `clients` processes, each attached and calling `operation` for 3 s.
    private static func processesRate(clients: Int, socket: String, mds: String, operation: String) throws -> Double {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        let children = try (0..<clients).map { index in
            try Child.spawn(executable, ["--attach-client", "\(socket),\(operation),3,\(index),\(mds)"], captureOutput: true)
        }
        var total = 0.0
        for child in children {
            let output = child.read()
            guard child.wait() == 0, let rate = Double(output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw GedsError(.internal, "an attached client process failed: \(output)")
            }
            total += rate
        }
        return total
    }

    /// The client process: `SOCKET,put|get,SECONDS,INDEX,MDS`; prints its operations per second on stdout.
    static func client(_ specification: String) async throws {
        let parts = specification.split(separator: ",").map(String.init)
        guard parts.count == 5, let seconds = Double(parts[2]) else { throw GedsError(.invalidArgument, "--attach-client \(specification)") }
        let geds = try GEDS.attach(socketPath: parts[0], mds: parts[4])
        let bytes = [UInt8](repeating: 7, count: 4096)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
        defer { buffer.deallocate() }
        let start = DispatchTime.now().uptimeNanoseconds
        let end = start + UInt64(seconds * 1e9)
        var done = 0
        while DispatchTime.now().uptimeNanoseconds < end {
            if parts[1] == "put" {
                try await geds.put(bucket: "perf-attach", key: "p\(parts[3])", bytes: bytes)
            } else {
                _ = try await geds.read(bucket: "perf-attach", key: "small", into: buffer)
            }
            done += 1
        }
        printLine(String(Double(done) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)))
    }

    /// Operations per second of `clients` tasks each calling `operation` in a loop for `seconds`.
    private static func throughput(clients: Int, seconds: Double,
                                   _ operation: @escaping @Sendable (Int) async throws(GedsError) -> Void) async throws -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        let end = start + UInt64(seconds * 1e9)
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<clients {
                group.addTask {
                    var done = 0
                    while DispatchTime.now().uptimeNanoseconds < end {
                        try await operation(index)
                        done += 1
                    }
                    return done
                }
            }
            return try await group.reduce(0, +)
        }
        return Double(total) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }

    /// A 256 MiB object written by another attached process (the CLI), then opened and viewed here.
    private static func localView(_ geds: GEDS, binaries: String, cluster: Cluster, socket: String) async throws -> Measurement {
        let size = 256 << 20
        let file = cluster.scratch + "/big.bin"
        guard FileManager.default.createFile(atPath: file, contents: Data(repeating: 0x5a, count: size)) else {
            throw GedsError(.io, "cannot write \(file)")
        }
        progress("attach: a 256 MiB object written by `geds put` (attached), then 200 open + view here after 20 warm-up")
        let put = try Child.run(binaries + "/geds", ["--mds", "\(cluster.mds)", "--node", socket, "put", file, "perf-attach/big"])
        try? FileManager.default.removeItem(atPath: file)
        guard put.succeeded else { throw GedsError(.internal, "geds put failed: \(put.output)") }
        let info = try await geds.stat(bucket: "perf-attach", key: "big")
        let first = try await geds.open(bucket: "perf-attach", key: "big").view()
        let inMapping = first.count == size
            && Bench.addressIsMapped(first.base, path: cluster.scratch + "/owner/" + info.blob.fileName)
        var checksum: UInt64 = 0
        let seconds = try await Bench.timed(warmups: 20, samples: 200) {
            let view = try await geds.open(bucket: "perf-attach", key: "big").view()
            checksum &+= UInt64(view.bytes[size - 1])
        }
        return .latency(.attach, transport: nil, size: size, microseconds: seconds.map { $0 * 1e6 }, reference: nil,
                        note: "open + view of an object another process wrote: the view \(inMapping ? "lies in" : "is NOT in") "
                            + "the mapping of the gedsd's tier-0 file (/proc/self/maps); goal p50 <= 100 us")
    }

    /// The gedsd's resident memory, descriptors and threads before and with 64 more attached connections.
    private static func connectionCost(pid: pid_t, socket: String) throws -> Measurement {
        func sample() -> (rssKiB: Int, descriptors: Int, threads: Int) {
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            func field(_ name: String) -> Int {
                status.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                    .flatMap { Int($0.split(whereSeparator: \.isWhitespace)[1]) } ?? -1
            }
            let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
            return (field("VmRSS"), descriptors, field("Threads"))
        }
        let before = sample()
        let handles = try (0..<64).map { _ in try GEDS.attach(socketPath: socket) }
        usleep(200_000)
        let with = sample()
        progress("attach: gedsd with 64 more attached processes' connections: RSS \(before.rssKiB) -> \(with.rssKiB) KiB, "
                 + "descriptors \(before.descriptors) -> \(with.descriptors), threads \(before.threads) -> \(with.threads)")
        withExtendedLifetime(handles) {}
        return Measurement(workload: Workload.attach.rawValue, transport: "none", size_bytes: 0,
                           note: "gedsd cost of 64 attached connections: RSS \(before.rssKiB) -> \(with.rssKiB) KiB, "
                               + "descriptors \(before.descriptors) -> \(with.descriptors), threads \(before.threads) -> \(with.threads) "
                               + "(one thread and one descriptor per connection; at most \(LocalEndpoint.maximumConnections) connections)")
    }
}
