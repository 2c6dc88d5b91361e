import ArgumentParser
import Foundation
import GEDS
import GedsCore
import GedsNode
import GedsTCP
import Logging

/// One figure: what was measured, how fast, and against which reference.
struct Measurement: Codable {
    var workload: String
    var transport: String
    var size_bytes: Int
    var gbit_per_s: Double?
    var ops_per_s: Double?
    var p50_us: Double?
    var p99_us: Double?
    var p999_us: Double?
    var spread: String?
    var reference: String?
    var reference_value: Double?
    var ratio: Double?
    var note: String?
}

@main
struct GedsPerf: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "geds-perf",
        abstract: "Measures GEDS beside its references (iperf3, redis-benchmark) in one run and prints ratios.")

    @Option(help: "Use a running MDS instead of starting an MDS and an owner node here.")
    var mds: String?

    @Option(help: "With --mds: the node that owns the objects read.")
    var owner: String?

    @Option(help: "Transports to measure: tcp, rdma or both.")
    var transport: String = "tcp"

    @Option(help: "Comma-separated workloads: read-bw, read-1mib, latency, mds-ops, local, write, mds-scale.")
    var workloads: String = "read-bw,read-1mib,latency,mds-ops,local,write"

    @Option(help: "Object sizes for read-bw, comma-separated (K, M, G suffixes are KiB, MiB, GiB).")
    var sizes: String = "4K,64K,1M,16M,256M"

    @Option(help: "Repetitions of each bandwidth figure (the median is reported, min–max as spread).")
    var repetitions: Int = 5

    @Option(name: .customLong("scale-objects"), help: "Objects for mds-scale (memory per object and lookup time).")
    var scaleObjects: Int = 1_000_000

    @Option(help: "Concurrent clients for mds-ops.")
    var clients: Int = 16

    @Option(help: "Folder of geds-mds and gedsd (default: next to this executable).")
    var bin: String?

    @Option(name: .customLong("tier0-pages"),
            help: "Tier-0 folders on /dev/shm as it is ('small' pages) or on a tmpfs mounted with huge pages ('huge', needs root).")
    var tier0Pages: String = "small"

    @Option(help: "Write the measurements as JSON to this file.")
    var json: String?

    func validate() throws {
        guard ["small", "huge"].contains(tier0Pages) else {
            throw ValidationError("--tier0-pages must be small or huge")
        }
        guard ["tcp", "rdma", "both"].contains(transport) else {
            throw ValidationError("--transport must be tcp, rdma or both")
        }
        let known: Set<String> = ["read-bw", "read-1mib", "latency", "mds-ops", "local", "write", "mds-scale"]
        for workload in workloads.split(separator: ",") where !known.contains(String(workload)) {
            throw ValidationError("unknown workload '\(workload)' (known: \(known.sorted().joined(separator: ", ")))")
        }
        _ = try parsedSizes()
    }

    func parsedSizes() throws -> [Int] {
        try sizes.split(separator: ",").map { text in
            let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
            var digits = Substring(text)
            var unit = 1
            if let last = text.last, let scale = units[Character(last.uppercased())] {
                unit = scale
                digits = text.dropLast()
            }
            guard let value = Int(digits), value > 0 else { throw ValidationError("bad size '\(text)'") }
            return value * unit
        }
    }

    func run() async throws {
        let binaries = bin ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        if transport != "tcp" {
            progress("RDMA: no RDMA data plane in this build (GedsVerbs is not implemented yet); measuring TCP only")
        }
        progress("machine: \(Machine.describe())")
        progress("tier 0: \(tier0Pages == "huge" ? "tmpfs with transparent huge pages (huge=within_size)" : "/dev/shm, 4 KiB pages")")
        let cluster = try Cluster(existingMDS: mds, binaries: binaries, ownerName: owner, hugePages: tier0Pages == "huge")
        defer { cluster.stop() }
        var logger = Logger(label: "geds-perf")
        logger.logLevel = .warning
        let geds = try await GEDS.connect(NodeConfiguration(
            mds: cluster.mds, tier0Directory: cluster.scratch + "/reader", name: "perf-reader-\(getpid())",
            hostID: "perf-reader-host", publishCachedCopies: false), logger: logger)
        let bench = Bench(geds: geds, ownerName: cluster.ownerName, repetitions: repetitions)
        var results: [Measurement] = []
        do {
            try await bench.prepare()
            let selected = Set(workloads.split(separator: ",").map(String.init))
            if selected.contains("read-bw") { results += try await bench.readBandwidth(sizes: try parsedSizes()) }
            if selected.contains("read-1mib") { results += try await bench.readManyMiB() }
            if selected.contains("latency") { results += try await bench.latency() }
            if selected.contains("mds-ops") { results += try await bench.metadataOps(clients: clients) }
            if selected.contains("local") { results += try await bench.localRead() }
            if selected.contains("write") { results += try await bench.write() }
            if selected.contains("mds-scale") {
                for count in [10_000, scaleObjects] { results += try MetadataScale.measure(count: count) }
            }
        } catch {
            await geds.close()
            throw error
        }
        await geds.close()
        Report.table(results)
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(results).write(to: URL(fileURLWithPath: json))
        }
    }
}

func progress(_ line: String) {
    printError("geds-perf: \(line)")
}

enum Machine {
    static func describe() -> String {
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }?
            .split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: name.release) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        return "\(cpu), \(ProcessInfo.processInfo.activeProcessorCount) cores, Linux \(release), loopback TCP"
    }
}

enum Statistics {
    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.down)))]
    }

    static func median(_ values: [Double]) -> Double { percentile(values.sorted(), 0.5) }

    static func spread(_ values: [Double], _ format: String = "%.2f") -> String {
        "\(String(format: format, values.min() ?? .nan))–\(String(format: format, values.max() ?? .nan))"
    }
}

enum Report {
    static func table(_ results: [Measurement]) {
        var lines = ["workload    transport size        Gbit/s   ops/s       p50 µs   p99 µs   spread          reference                      ref value   ratio"]
        for m in results {
            func f(_ value: Double?, _ format: String) -> String { value.map { String(format: format, $0) } ?? "-" }
            lines.append([
                m.workload.padding(toLength: 11, withPad: " ", startingAt: 0),
                m.transport.padding(toLength: 9, withPad: " ", startingAt: 0),
                formatSize(m.size_bytes).padding(toLength: 11, withPad: " ", startingAt: 0),
                f(m.gbit_per_s, "%.2f").padding(toLength: 8, withPad: " ", startingAt: 0),
                f(m.ops_per_s, "%.0f").padding(toLength: 11, withPad: " ", startingAt: 0),
                f(m.p50_us, "%.1f").padding(toLength: 8, withPad: " ", startingAt: 0),
                f(m.p99_us, "%.1f").padding(toLength: 8, withPad: " ", startingAt: 0),
                (m.spread ?? "-").padding(toLength: 15, withPad: " ", startingAt: 0),
                (m.reference ?? "-").padding(toLength: 30, withPad: " ", startingAt: 0),
                f(m.reference_value, "%.2f").padding(toLength: 11, withPad: " ", startingAt: 0),
                m.ratio.map { String(format: "%.2fx", $0) } ?? "-",
            ].joined(separator: " "))
            if let note = m.note { lines.append("    \(note)") }
        }
        lines.append("Units: Gbit/s = 10^9 bit/s; sizes in KiB/MiB (2^10, 2^20 bytes); latencies in microseconds.")
        printLine(lines.joined(separator: "\n"))
    }

    static func formatSize(_ bytes: Int) -> String {
        if bytes >= 1 << 30, bytes % (1 << 30) == 0 { return "\(bytes >> 30) GiB" }
        if bytes >= 1 << 20, bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
        if bytes >= 1 << 10, bytes % (1 << 10) == 0 { return "\(bytes >> 10) KiB" }
        return "\(bytes) B"
    }
}
