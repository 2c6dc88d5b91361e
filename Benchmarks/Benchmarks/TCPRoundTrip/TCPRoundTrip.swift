import Benchmark
import BenchmarkSupport
import GedsCarrier
import GedsCore
import GedsMDS
import GedsTCP
import GedsWire
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// One small request and its reply over loopback TCP through GedsTCP (FrameServer and a multiplexed
/// Connection on swift-nio): first with a service that answers at once (the carrier alone), then with the
/// MDS's own service answering a lookup among 10 k objects (a remote `stat`, less the client library).
struct Instant: RequestService {
    func respond(to request: Request) -> Response { .reply(.ok) }
}

final class Loopback: Sendable {
    let server: FrameServer
    let connection: Connection

    init(service: any RequestService) async throws {
        var logger = Logger(label: "geds-bench")
        logger.logLevel = .warning
        server = try await FrameServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), service: service,
                                             group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        connection = try await Connection.connect(to: server.localAddress, peerName: "bench",
                                                  group: MultiThreadedEventLoopGroup.singleton)
    }

    func close() async {
        connection.close()
        await server.close()
    }
}

/// The loopback of the benchmark running now: made in its setup hook, closed in its teardown.
let current = Mutex<Loopback?>(nil)
let lookup = Request.lookup(bucket: FilledStore.bucket, key: objectKey(4242))

let benchmarks: @Sendable () -> Void = {
    let services: [(String, @Sendable () -> any RequestService)] = [
        ("round trip, instant reply", { Instant() }),
        ("MDS lookup among 10k objects", {
            var logger = Logger(label: "geds-bench-mds")
            logger.logLevel = .warning
            return MetadataService(store: FilledStore(count: 10_000).store, logger: logger)
        }),
    ]
    for (name, service) in services {
        Benchmark(name, configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal, .syscalls],
                                             maxDuration: .seconds(3))) { benchmark in
            guard let connection = current.withLock({ $0?.connection }) else { return benchmark.error("no connection") }
            for _ in benchmark.scaledIterations {
                blackHole(try await connection.call(lookup, timeout: .seconds(5)))
            }
        } setup: {
            let loopback = try await Loopback(service: service())
            _ = try await loopback.connection.call(lookup, timeout: .seconds(5))  // the connection is up
            current.withLock { $0 = loopback }
        } teardown: {
            await current.withLock { loopback in defer { loopback = nil }; return loopback }?.close()
        }
    }
}
