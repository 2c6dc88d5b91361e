import GedsCarrier
import GedsCore
import GedsWire
import NIOCore

/// The token's handshake on a client channel being made (`Connection`, `PushConnection`): its handler goes first in
/// the pipeline, and `connected` waits for the handshake's end once the channel is connected. Nil without a token.
struct PendingAuthentication: PendingHandshake, Sendable {
    let promise: EventLoopPromise<Void>
    private let handshake: ClientHandshake
    private let peer: String
    private let timeout: TimeAmount

    init?(token: DeploymentToken?, peer: String, loop: any EventLoop, timeout: TimeAmount) {
        guard let token else { return nil }
        promise = loop.makePromise(of: Void.self)
        handshake = ClientHandshake(token: token, peer: peer)
        self.peer = peer
        self.timeout = timeout
    }

    func addHandler(to channel: any Channel) throws {
        try channel.pipeline.syncOperations.addHandler(
            ClientAuthenticationHandler(handshake: handshake, peer: peer, done: promise, timeout: timeout), position: .first)
    }

}

/// A handshake a client channel runs before `connect` hands it out (TLS's, the token's): its handler completes
/// `promise` when the handshake ends.
protocol PendingHandshake {
    var promise: EventLoopPromise<Void> { get }
}

extension PendingHandshake {
    /// The channel is connected: waits until the handshake succeeded (the channel is closed if it did not).
    func connected(_ channel: any Channel) async throws(GedsError) {
        do {
            try await promise.futureResult.get()
        } catch {
            channel.close(promise: nil)
            throw GedsError.wrapping(error)
        }
    }

    /// The channel never connected.
    func abandon(_ error: GedsError) { promise.fail(error) }
}

/// Speaks the handshake when the channel becomes active, before the handlers behind it send anything, then
/// steps aside; a failure closes the channel and is reported only through `done` (not to the handlers behind).
final class ClientAuthenticationHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var handshake: ClientHandshake
    private let peer: String
    private let done: EventLoopPromise<Void>
    private let timeout: TimeAmount
    private var reader = FrameReader()
    /// `reader.holdsTLSRecord` after the last read, kept beside the reader: the channel may close while the reader
    /// is busy (a frame's handling inside `consume` can close it), when the reader itself cannot be asked.
    private var heldTLSRecord = false
    private var proved = false
    private var finished = false
    private var deadline: Scheduled<Void>?

    init(handshake: ClientHandshake, peer: String, done: EventLoopPromise<Void>, timeout: TimeAmount) {
        self.handshake = handshake
        self.peer = peer
        self.done = done
        self.timeout = timeout
    }

    func channelActive(context: ChannelHandlerContext) {
        deadline = context.deadline(of: self, in: timeout) { handler, context in
            handler.fail(GedsError(.timedOut, "authentication got no answer within \(handler.timeout.nanoseconds / 1_000_000) ms"),
                         context: context)
        }
        send(handshake.hello, id: 1, context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished else { return }
        do {
            try reader.consume(unwrapInboundIn(data)) { (frame) throws(GedsError) in
                guard !finished else { return }  // the server says nothing more until asked
                guard case .reply(_, let reply) = frame else {
                    throw GedsError(.protocolViolation, "a server sent something other than the handshake's replies")
                }
                if proved {
                    try handshake.finish(reply)
                    finished = true
                } else {
                    send(try handshake.proof(answering: reply), id: 2, context: context)
                    proved = true
                }
            }
            heldTLSRecord = reader.holdsTLSRecord
        } catch {
            fail(error, context: context)
            return
        }
        if finished {
            deadline?.cancel()
            done.succeed()
            // The handlers behind see the channel become active only now, and so never see one that failed.
            context.fireChannelActive()
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    /// The TLS handler's failures (explained by `TLSHandshakeWatcher`), such as a server refusing this client's
    /// certificate after the handshake ended on this side.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(GedsError.wrapping(error), context: context)
    }

    /// Not passed on: the handlers behind never saw the channel active.
    func channelInactive(context: ChannelHandlerContext) {
        fail(heldTLSRecord ? .peerRequiresTLS(peer, code: .peerUnreachable)
                : GedsError(.peerUnreachable, "\(peer) closed the connection during authentication"), context: context)
    }

    private func send(_ request: Request, id: UInt64, context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(FrameEncoder.frame(request, id: id, allocator: context.channel.allocator)),
                              promise: nil)
    }

    private func fail(_ error: GedsError, context: ChannelHandlerContext) {
        guard !finished else { return }
        finished = true
        deadline?.cancel()
        done.fail(error)
        context.close(promise: nil)
    }
}

extension ChannelHandlerContext {
    /// Calls `expired` with `handler` on the event loop once `timeout` has passed: a handshake's deadline (cancel
    /// it when the handshake ends).
    func deadline<Handler: AnyObject>(of handler: Handler, in timeout: TimeAmount,
                                      _ expired: @escaping (Handler, ChannelHandlerContext) -> Void) -> Scheduled<Void> {
        let loopBound = NIOLoopBound((handler, self, expired), eventLoop: eventLoop)
        return eventLoop.scheduleTask(in: timeout) {
            let (handler, context, expired) = loopBound.value
            expired(handler, context)
        }
    }
}
