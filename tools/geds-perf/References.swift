import Foundation
import GedsCore
import GedsVerbs

/// A reference figure beside which a GEDS figure is reported, or the reason there is none.
struct Reference {
    let name: String
    let value: Double?
    let missing: String?

    init(_ name: String, _ outcome: Result<Double, References.Missing>) {
        self.name = name
        switch outcome {
        case .success(let value): (self.value, missing) = (value, nil)
        case .failure(let reason): (value, missing) = (nil, reason.reason)
        }
    }

    var label: String { missing.map { "\(name) (missing: \($0))" } ?? name }
}

/// The tools GEDS is measured against, run on the same machine in the same invocation. A tool that is
/// not installed, or gives no figure, is reported as missing, never replaced by a guess.
enum References {
    struct Missing: Error {
        let reason: String
    }

    static func which(_ tool: String) -> String? {
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let path = "\(directory)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    static func find(_ tool: String) -> Result<String, Missing> {
        which(tool).map { .success($0) } ?? .failure(Missing(reason: "\(tool) is not installed, not on PATH"))
    }

    /// The reference tools of these transports, each with its path or "missing (…)", for the machine description.
    static func tools(for transports: [Transport], tier1: Bool = false) -> [String: String] {
        var tools = ["iperf3", "redis-server", "redis-benchmark"]
        if tier1 { tools.append("fio") }
        // perftest's tools, for when the RDMA data plane is measured.
        if transports.contains(.rdma) { tools += ["ib_read_bw", "ib_read_lat"] }
        return Dictionary(uniqueKeysWithValues: tools.map { ($0, which($0) ?? "missing (not on PATH)") })
    }

    /// iperf3 single TCP stream on loopback, in Gbit/s: the median of `repetitions` runs of `seconds`.
    static func iperf3(seconds: Int, repetitions: Int) -> Result<Double, Missing> {
        Result {
            let iperf = try find("iperf3").get()
            progress("reference: iperf3 single stream on loopback (\(repetitions) × \(seconds) s)")
            let port = try Cluster.freePort()
            let server = try Child.spawn(iperf, ["-s", "-B", "127.0.0.1", "-p", String(port)], captureOutput: false)
            defer { server.terminate() }
            usleep(300_000)
            var results: [Double] = []
            for _ in 0..<repetitions {
                let json = try Child.run(iperf, ["-c", "127.0.0.1", "-p", String(port), "-t", String(seconds), "-J"]).output
                guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
                      let end = object["end"] as? [String: Any],
                      let received = end["sum_received"] as? [String: Any],
                      let bits = received["bits_per_second"] as? Double else { continue }
                results.append(bits / 1e9)
            }
            guard !results.isEmpty else { throw Missing(reason: "iperf3 gave no result") }
            return Statistics.median(results)
        }.mapError(asMissing)
    }

    struct RedisFigures {
        var requestsPerSecond: Double
        var p50Microseconds: Double
        var p99Microseconds: Double
    }

    /// redis-benchmark GET of a `size`-byte value with `clients` connections, against a redis-server
    /// started here on loopback.
    static func redisGet(size: Int, clients: Int, requests: Int) -> Result<RedisFigures, Missing> {
        redis("GET", size: size, clients: clients, requests: requests)
    }

    /// Redis's append-only file: `appendfsync` policy and the folder it goes in.
    struct AppendOnly {
        var fsync: String
        var directory: String
    }

    /// A redis-server of this run's own, without persistence unless `appendOnly`, on a free loopback port (or, with
    /// `unixSocket`, on a Unix socket at that path): its process (terminate it when done) and its port (0 with a Unix
    /// socket).
    static func startRedisServer(unixSocket: String? = nil, appendOnly: AppendOnly? = nil) throws -> (process: Child, port: Int) {
        let server = try find("redis-server").get()
        let port = unixSocket == nil ? try Cluster.freePort() : 0
        let listen = unixSocket.map { ["--unixsocket", $0] } ?? ["--bind", "127.0.0.1"]
        let persistence = appendOnly.map { ["--appendonly", "yes", "--appendfsync", $0.fsync, "--dir", $0.directory] }
            ?? ["--appendonly", "no"]
        let process = try Child.spawn(server, ["--port", String(port)] + listen + ["--save", ""] + persistence,
                                      captureOutput: false)
        return (process, port)
    }

    /// redis-benchmark's figures for one command ("GET" or "SET") against a redis-server started here, on
    /// loopback TCP or, with `unixSocket`, on a Unix socket at that path (`redis-benchmark -s`).
    static func redis(_ command: String, size: Int, clients: Int, requests: Int,
                      unixSocket: String? = nil, appendOnly: AppendOnly? = nil) -> Result<RedisFigures, Missing> {
        Result {
            let benchmark = try find("redis-benchmark").get()
            progress("reference: redis-benchmark \(command) of \(size) B values, \(clients) client\(clients == 1 ? "" : "s")"
                     + (unixSocket == nil ? "" : " over a Unix socket") + (appendOnly.map { ", appendfsync \($0.fsync)" } ?? ""))
            let (process, port) = try startRedisServer(unixSocket: unixSocket, appendOnly: appendOnly)
            defer { process.terminate() }
            usleep(300_000)
            let address = unixSocket.map { ["-s", $0] } ?? ["-h", "127.0.0.1", "-p", String(port)]
            let common = address + ["-d", String(size), "-c", String(clients), "--csv"]
            _ = try Child.run(benchmark, common + ["-t", "set", "-n", "1000"])
            let csv = try Child.run(benchmark, common + ["-t", command.lowercased(), "-n", String(requests)]).output
            // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
            guard let line = csv.split(separator: "\n").first(where: { $0.hasPrefix("\"\(command)") }) else {
                throw Missing(reason: "redis-benchmark gave no \(command) figure")
            }
            let fields = line.split(separator: ",").map { Double($0.trimmingCharacters(in: CharacterSet(charactersIn: "\""))) }
            guard fields.count >= 7, let rps = fields[1], let p50 = fields[4], let p99 = fields[6] else {
                throw Missing(reason: "redis-benchmark's CSV was not understood")
            }
            return RedisFigures(requestsPerSecond: rps, p50Microseconds: p50 * 1000, p99Microseconds: p99 * 1000)
        }.mapError(asMissing)
    }

    /// perftest between the devices that own `owner` and `reader` (GID index 1, the IPv4-mapped one, as
    /// soft-RoCE needs): `ib_read_bw` in Gbit/s (average) or `ib_read_lat` in µs (t_typical) for `size`-byte
    /// READs issued by the reader from the owner's memory.
    enum PerftestFigure { case bandwidth, latency }

    static func ibRead(_ figure: PerftestFigure, size: Int, owner: String, reader: String) -> Result<Double, Missing> {
        Result {
            let tool = figure == .bandwidth ? "ib_read_bw" : "ib_read_lat"
            let path = try find(tool).get()
            let ownerDevice = try DeviceContext.owning(address: owner).name
            let readerDevice = try DeviceContext.owning(address: reader).name
            progress("reference: \(tool) of \(size) B READs, \(readerDevice) (\(reader)) from \(ownerDevice) (\(owner))")
            let iterations = figure == .bandwidth ? String(max(20, min(1000, (256 << 20) / size))) : "1000"
            // A server serves one client and exits, and may exit after a failed exchange too; on a loaded machine it
            // may not listen yet when the client first tries (the client then gives up at once). So each try has a
            // server of its own, on a port of its own, given a second to start.
            var output = ""
            for _ in 0..<5 {
                let common = ["-F", "-x", "1", "-s", String(size), "-n", iterations, "-p", String(try Cluster.freePort())]
                    + (figure == .bandwidth ? ["--report_gbits"] : [])
                let server = try Child.spawn(path, common + ["-d", ownerDevice], captureOutput: false)
                defer { server.terminate() }
                usleep(1_000_000)
                output = try Child.run(path, common + ["-d", readerDevice, owner]).output
                if let value = perftestFigure(in: output, size: size, column: figure == .bandwidth ? 3 : 4) { return value }
            }
            throw Missing(reason: "\(tool) gave no figure (output: \(output.suffix(300)))")
        }.mapError(asMissing)
    }

    /// The figure in perftest's report: its line starts with the message size (bandwidth "#bytes #iterations
    /// BW peak BW average MsgRate"; latency "#bytes #iterations t_min t_max t_typical t_avg ...").
    private static func perftestFigure(in output: String, size: Int, column: Int) -> Double? {
        guard let line = output.split(separator: "\n").map({ $0.split(whereSeparator: \.isWhitespace) })
            .first(where: { $0.first == Substring(String(size)) && $0.count > column }),
              let value = Double(line[column]), value.isFinite, value > 0 else { return nil }
        return value
    }

    private static func asMissing(_ error: any Error) -> Missing {
        error as? Missing ?? Missing(reason: "\(error)")
    }
}
