import GedsCarrier
import GedsCore
import GedsWire
import NIOCore
import NIOPosix

/// A connection that carries one request and then the replies pushed for it (a subscription): each reply is
/// handed to `onReply` on the connection's event loop, in order; `onClose` is called once, when the connection
/// ends for any reason (with why).
public final class PushConnection: Sendable {
    private let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    /// With a `token`, the request is sent once the peer accepted its proof (inside TLS with `tls`) (a refusal is thrown; `onClose` is for a connection that was opened).
    public static func open(to peer: Endpoint, peerName: String, request: Request, group: any EventLoopGroup,
                            timeout: TimeAmount = .seconds(5), token: DeploymentToken? = nil, tls: TransportSecurity? = nil,
                            onReply: @escaping @Sendable (Reply) -> Void,
                            onClose: @escaping @Sendable (GedsError) -> Void) async throws(GedsError) -> PushConnection {
        let loop = group.next()
        let security = try ClientChannelSecurity(tls: tls, token: token, peer: peer, peerName: peerName, loop: loop,
                                                 timeout: timeout)
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try security.addHandlers(to: channel)
                    try channel.pipeline.syncOperations.addHandler(
                        PushClientHandler(peerName: peerName, onReply: onReply, onClose: onClose))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: peer.host, port: peer.port).get()
        } catch {
            let failure = GedsError(peerName == "MDS" ? .mdsUnreachable : .peerUnreachable,
                                    "\(peerName) unreachable at \(peer): \(Connection.describe(error))")
            security.abandon(failure)
            throw failure
        }
        try await security.connected(channel)
        channel.writeAndFlush(FrameEncoder.frame(request, id: 1, allocator: channel.allocator), promise: nil)
        return PushConnection(channel: channel)
    }

    public func close() {
        channel.close(promise: nil)
    }
}

final class PushClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let peerName: String
    /// `mdsUnreachable` or `peerUnreachable`, as for the multiplexed connections.
    private let unreachable: GedsError.Code
    private let onReply: @Sendable (Reply) -> Void
    private let onClose: @Sendable (GedsError) -> Void
    private var reader = FrameReader()
    /// `reader.holdsTLSRecord` after the last read, kept beside the reader: the channel may close while the reader
    /// is busy (a frame's handling inside `consume` can close it), when the reader itself cannot be asked.
    private var heldTLSRecord = false
    private var closedError: GedsError?

    init(peerName: String, onReply: @escaping @Sendable (Reply) -> Void, onClose: @escaping @Sendable (GedsError) -> Void) {
        self.peerName = peerName
        unreachable = peerName == "MDS" ? .mdsUnreachable : .peerUnreachable
        self.onReply = onReply
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard closedError == nil else { return }
        do {
            try reader.consume(unwrapInboundIn(data)) { (frame) throws(GedsError) in
                guard case .reply(_, let reply) = frame else {
                    throw GedsError(.protocolViolation, "\(peerName) sent something other than replies on a subscription")
                }
                onReply(reply)
            }
            heldTLSRecord = reader.holdsTLSRecord
        } catch {
            closedError = error
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        onClose(closedError ?? (heldTLSRecord
            ? .peerRequiresTLS(peerName, code: unreachable)
            : GedsError(unreachable, "\(peerName) closed the connection")))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        closedError = closedError ?? error as? GedsError  // explained by a handler in front (TLS)
            ?? GedsError(unreachable, "connection to \(peerName) failed: \(Connection.describe(error))")
        context.close(promise: nil)
    }
}
