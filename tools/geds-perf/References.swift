import Foundation
import GedsCore

/// The tools GEDS is measured against, run on the same machine in the same invocation. A tool that is
/// not installed is reported as missing, never replaced by a guess.
enum References {
    static func which(_ tool: String) -> String? {
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let path = "\(directory)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    /// iperf3 single TCP stream on loopback, in Gbit/s (median of `repetitions` runs of `seconds`).
    static func iperf3(seconds: Int, repetitions: Int) throws -> [Double]? {
        guard let iperf = which("iperf3") else { return nil }
        let port = try Cluster.freePort()
        let server = try Child.spawn(iperf, ["-s", "-B", "127.0.0.1", "-p", String(port)], captureOutput: false)
        defer { server.terminate() }
        usleep(300_000)
        var results: [Double] = []
        for _ in 0..<repetitions {
            let json = try Child.run(iperf, ["-c", "127.0.0.1", "-p", String(port), "-t", String(seconds), "-J"])
            guard let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
                  let end = object["end"] as? [String: Any],
                  let received = end["sum_received"] as? [String: Any],
                  let bits = received["bits_per_second"] as? Double else { continue }
            results.append(bits / 1e9)
        }
        return results
    }

    struct RedisFigures {
        var requestsPerSecond: Double
        var p50Microseconds: Double
        var p99Microseconds: Double
    }

    /// redis-benchmark GET of a `size`-byte value with `clients` connections, against a redis-server
    /// started here on loopback.
    static func redisGet(size: Int, clients: Int, requests: Int) throws -> RedisFigures? {
        guard let server = which("redis-server"), let benchmark = which("redis-benchmark") else { return nil }
        let port = try Cluster.freePort()
        let process = try Child.spawn(server, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], captureOutput: false)
        defer { process.terminate() }
        usleep(300_000)
        let common = ["-h", "127.0.0.1", "-p", String(port), "-d", String(size), "-c", String(clients), "--csv"]
        _ = try Child.run(benchmark, common + ["-t", "set", "-n", "1000"])
        let csv = try Child.run(benchmark, common + ["-t", "get", "-n", String(requests)])
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
        guard let line = csv.split(separator: "\n").first(where: { $0.hasPrefix("\"GET") }) else { return nil }
        let fields = line.split(separator: ",").map { Double($0.trimmingCharacters(in: CharacterSet(charactersIn: "\""))) }
        guard fields.count >= 7, let rps = fields[1], let p50 = fields[4], let p99 = fields[6] else { return nil }
        return RedisFigures(requestsPerSecond: rps, p50Microseconds: p50 * 1000, p99Microseconds: p99 * 1000)
    }
}
