import GedsCore
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus

/// Serves `GET /metrics` in Prometheus text format (`--metrics HOST:PORT` on `geds-mds` and `gedsd`).
///
/// Counters and histograms are updated where things happen, through swift-metrics (an atomic add for a counter);
/// levels that are cheaper to read than to track (tier bytes, live nodes, pending uploads) are set by
/// `refresh` just before each scrape.
public final class MetricsEndpoint: Sendable {
    public let localAddress: Endpoint
    private let channel: any Channel

    /// Makes swift-metrics record into a Prometheus registry (once per process, before anything counts) and
    /// listens on `listen`.
    public static func start(listen: Endpoint, group: any EventLoopGroup,
                             refresh: @escaping @Sendable () -> Void) async throws(GedsError) -> MetricsEndpoint {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
            .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(50),
            .milliseconds(250), .seconds(1), .seconds(5),
        ]
        MetricsSystem.bootstrap(factory)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(ScrapeHandler(registry: registry, refresh: refresh))
                }
            }
        do {
            let channel = try await bootstrap.bind(host: listen.host, port: listen.port).get()
            return MetricsEndpoint(channel: channel,
                                   localAddress: Endpoint(host: listen.host, port: channel.localAddress?.port ?? listen.port))
        } catch {
            throw GedsError(.io, "cannot serve metrics on \(listen): \(error)")
        }
    }

    private init(channel: any Channel, localAddress: Endpoint) {
        self.channel = channel
        self.localAddress = localAddress
    }

    public func close() async {
        try? await channel.close()
    }
}

/// One HTTP connection: `GET /metrics` gets the registry's text, anything else a 404 or 405.
private final class ScrapeHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let registry: PrometheusCollectorRegistry
    private let refresh: @Sendable () -> Void
    private var head: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry, refresh: @escaping @Sendable () -> Void) {
        self.registry = registry
        self.refresh = refresh
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            head = request
        case .body:
            break
        case .end:
            guard let request = head else { return }
            head = nil
            let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
            switch (request.method, path) {
            case (.GET, "/metrics"):
                refresh()
                respond(context, request, .ok, registry.emitToBuffer(), type: "text/plain; version=0.0.4; charset=utf-8")
            case (_, "/metrics"):
                respond(context, request, .methodNotAllowed, Array("only GET\n".utf8), type: "text/plain")
            default:
                respond(context, request, .notFound, Array("metrics are at /metrics\n".utf8), type: "text/plain")
            }
        }
    }

    private func respond(_ context: ChannelHandlerContext, _ request: HTTPRequestHead, _ status: HTTPResponseStatus,
                         _ body: [UInt8], type: String) {
        var headers = HTTPHeaders([("Content-Type", type), ("Content-Length", String(body.count))])
        if !request.isKeepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))),
                      promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        let keepAlive = request.isKeepAlive
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}
