import Crypto
import Foundation
import GEDS
import GedsCore

/// A soak: an MDS and two gedsd nodes, and `clients` tasks in this process doing a random mix of put (handed
/// off to one of the two nodes), get (bytes checked against their SHA-256), list, rename and delete for
/// `seconds`, each in its own key space so every answer can be checked. Resident memory and open file
/// descriptors of every process are sampled once a second. The figures: operations per second, p50/p99 per
/// kind of operation, errors (expected: 0), and each process's memory and descriptors at start, peak and end.
enum SoakBench {
    static func measure(binaries: String, clients: Int, seconds: Int) async throws -> [Measurement] {
        let cluster = try Cluster(existingMDS: nil, binaries: binaries, ownerName: nil, hugePages: false)
        defer { cluster.stop() }
        let second = try cluster.startNode(name: "perf-soak-b", hostID: "perf-soak-b-host")
        let geds = try await cluster.connectReader(named: "perf-soak-client")
        do {
            let processes = [("geds-mds", cluster.mdsPID), ("gedsd \(cluster.ownerName)", cluster.ownerPID),
                             ("gedsd perf-soak-b", second), ("geds-perf", getpid())].compactMap { name, pid in pid.map { (name, $0) } }
            let results = try await run(geds: geds, targets: [cluster.ownerName, "perf-soak-b"], clients: clients,
                                        seconds: seconds, processes: processes)
            await geds.close()
            return results
        } catch {
            await geds.close()
            throw error
        }
    }

    enum Operation: String, CaseIterable, Sendable {
        case put, get, list, rename, delete
    }

    struct ClientOutcome: Sendable {
        var times: [Operation: [Double]] = [:]
        var errors: [String] = []
    }

    private static func run(geds: GEDS, targets: [String], clients: Int, seconds: Int,
                            processes: [(String, pid_t)]) async throws -> [Measurement] {
        let bucket = "perf-soak-\(getpid())"
        try await geds.createBucket(bucket)
        var found: [NodeInfo] = []
        for name in targets { found.append(try await geds.relocationTarget(named: name)) }
        let nodes = found
        progress("soak: \(clients) clients for \(seconds) s over \(targets.joined(separator: " and ")); sampling memory and descriptors")
        let stop = StopFlag()
        let sampler = Task { await sample(processes, until: stop) }
        let start = DispatchTime.now().uptimeNanoseconds
        let outcomes = await withTaskGroup(of: ClientOutcome.self) { group in
            for client in 0..<clients {
                group.addTask { await runClient(client, geds: geds, bucket: bucket, nodes: nodes, until: stop) }
            }
            try? await Task.sleep(for: .seconds(seconds))
            stop.stop()
            var all: [ClientOutcome] = []
            for await outcome in group { all.append(outcome) }
            return all
        }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let samples = await sampler.value
        _ = try? await geds.delete(bucket: bucket, prefix: "")

        let errors = outcomes.flatMap(\.errors)
        let total = outcomes.reduce(0) { $0 + $1.times.values.reduce(0) { $0 + $1.count } }
        let resources = samples.map { name, series in
            "\(name) rss MiB \(series.map(\.rss).first ?? 0)/\(series.map(\.rss).max() ?? 0)/\(series.map(\.rss).last ?? 0), "
                + "fds \(series.map(\.fds).first ?? 0)/\(series.map(\.fds).max() ?? 0)/\(series.map(\.fds).last ?? 0)"
        }.joined(separator: "; ")
        var results = [Measurement(workload: Workload.soak.rawValue, transport: "tcp", size_bytes: 0,
                                   ops_per_s: Double(total) / elapsed, samples: total,
                                   note: "soak: \(clients) clients, \(seconds) s, \(errors.count) errors"
                                       + (errors.isEmpty ? "" : " (first: \(errors[0]))")
                                       + "; start/peak/end \(resources)")]
        for operation in Operation.allCases {
            let times = outcomes.flatMap { $0.times[operation] ?? [] }
            guard !times.isEmpty else { continue }
            results.append(.latency(.soak, transport: .tcp, size: 0, microseconds: times, reference: nil,
                                    note: "soak \(operation.rawValue): \(times.count) operations, 1 KiB to 256 KiB objects"))
        }
        if !errors.isEmpty { progress("soak: \(errors.count) errors; first: \(errors[0])") }
        return results
    }

    /// One client: its own keys under `c<N>/`, and what it stored (key → digest) to check every answer against.
    private static func runClient(_ client: Int, geds: GEDS, bucket: String, nodes: [NodeInfo], until stop: StopFlag) async -> ClientOutcome {
        var outcome = ClientOutcome()
        var stored: [String: SHA256.Digest] = [:]
        var generator = SystemRandomNumberGenerator()
        var serial = 0
        let prefix = "c\(client)/"
        while !stop.isStopped {
            let operation: Operation = stored.count < 4 ? .put : Operation.allCases.randomElement(using: &generator)!
            let started = DispatchTime.now().uptimeNanoseconds
            do throws(GedsError) {
                switch operation {
                case .put:
                    serial += 1
                    let key = prefix + "o\(serial)"
                    let bytes = randomBytes(Int.random(in: 1024...(256 << 10), using: &generator), using: &generator)
                    let writer = try await geds.create(bucket: bucket, key: key)
                    try writer.write(bytes, at: 0)
                    try await writer.seal(handingOffTo: nodes[serial % nodes.count])
                    stored[key] = SHA256.hash(data: bytes)
                case .get:
                    let (key, digest) = stored.randomElement(using: &generator)!
                    let bytes = try await geds.get(bucket: bucket, key: key)
                    if SHA256.hash(data: bytes) != digest { outcome.errors.append("\(key): read bytes differ from written") }
                case .list:
                    let page = try await geds.listAll(bucket: bucket, prefix: prefix)
                    if Set(page.objects.map(\.key)) != Set(stored.keys) {
                        outcome.errors.append("\(prefix): listed \(page.objects.count) keys, stored \(stored.count)")
                    }
                case .rename:
                    serial += 1
                    let (key, digest) = stored.randomElement(using: &generator)!
                    let renamed = prefix + "r\(serial)"
                    try await geds.rename(bucket: bucket, key: key, toBucket: bucket, toKey: renamed)
                    stored[key] = nil
                    stored[renamed] = digest
                case .delete:
                    let key = stored.keys.randomElement(using: &generator)!
                    try await geds.delete(bucket: bucket, key: key)
                    stored[key] = nil
                }
                outcome.times[operation, default: []].append(Double(DispatchTime.now().uptimeNanoseconds - started) / 1000)
            } catch {
                outcome.errors.append("\(operation.rawValue): \(error.message)")
            }
        }
        return outcome
    }

    /// Random bytes, eight at a time (a byte at a time would take more CPU than the store).
    private static func randomBytes(_ count: Int, using generator: inout SystemRandomNumberGenerator) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            var offset = 0
            while offset + 8 <= count {
                raw.storeBytes(of: generator.next() as UInt64, toByteOffset: offset, as: UInt64.self)
                offset += 8
            }
            while offset < count {
                raw[offset] = UInt8.random(in: 0...255, using: &generator)
                offset += 1
            }
            initialized = count
        }
    }

    struct Sample: Sendable {
        var rss: Int
        var fds: Int
    }

    /// Every second until stopped: each process's resident memory (MiB) and open descriptors.
    private static func sample(_ processes: [(String, pid_t)], until stop: StopFlag) async -> [(String, [Sample])] {
        var series = processes.map { ($0.0, [Sample]()) }
        while true {
            for (index, (_, pid)) in processes.enumerated() {
                let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
                let rssKiB = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
                    .flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") } ?? 0
                let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
                series[index].1.append(Sample(rss: rssKiB / 1024, fds: fds))
            }
            if stop.isStopped { return series }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}
