import GedsWire
import Metrics
import NIOCore

/// Requests a server answered, by kind and result (`geds_requests_total{kind,result}`), their latency from
/// decoded request to reply (`geds_request_duration_seconds{kind}`), and object bytes it sent
/// (`geds_served_bytes_total{carrier="tcp"}`). Made on first use, after a process that serves `/metrics`
/// bootstrapped its backend; otherwise swift-metrics' no-op handlers.
final class ServerMetrics: Sendable {
    static let shared = ServerMetrics()

    private let succeeded: [Counter?]
    private let failed: [Counter?]
    private let latency: [Metrics.Timer?]
    let servedBytes = Counter(label: "geds_served_bytes_total", dimensions: [("carrier", "tcp")])

    private init() {
        let names = Request.kindNames
        succeeded = names.map { $0.isEmpty ? nil : Counter(label: "geds_requests_total", dimensions: [("kind", $0), ("result", "ok")]) }
        failed = names.map { $0.isEmpty ? nil : Counter(label: "geds_requests_total", dimensions: [("kind", $0), ("result", "error")]) }
        latency = names.map { $0.isEmpty ? nil : Metrics.Timer(label: "geds_request_duration_seconds", dimensions: [("kind", $0)]) }
    }

    func record(kind: Int, ok: Bool, nanoseconds: Int64, bytes: UInt64) {
        (ok ? succeeded : failed)[kind]?.increment()
        latency[kind]?.recordNanoseconds(nanoseconds)
        if bytes > 0 { servedBytes.increment(by: Int64(bytes)) }
    }
}

/// One request on its way through a server, for `ServerMetrics`.
struct ServedRequest {
    let kind: Int
    let started: NIODeadline

    func finished(ok: Bool, bytes: UInt64 = 0) {
        ServerMetrics.shared.record(kind: kind, ok: ok, nanoseconds: (NIODeadline.now() - started).nanoseconds, bytes: bytes)
    }
}

extension Reply {
    var isFailure: Bool {
        if case .failure = self { return true }
        return false
    }
}
