import GedsCarrier
import GedsCore
import GedsWire
import NIOCore
import NIOPosix
import Synchronization

/// A multiplexed client connection: many requests in flight, replies matched by request id, streamed reads
/// delivered to their sinks as bytes arrive. All per-request state lives on the channel's event loop.
public final class Connection: Sendable {
    public let peer: Endpoint
    let channel: any Channel
    private let peerName: String
    private let ending: ConnectionEnding

    init(peer: Endpoint, channel: any Channel, peerName: String, ending: ConnectionEnding) {
        self.peer = peer
        self.channel = channel
        self.peerName = peerName
        self.ending = ending
    }

    /// With a `token`, the connection is returned once the peer accepted its proof (and proved it knows it too);
    /// with `tls`, once the TLS handshake verified the peer (the token's handshake then runs inside TLS).
    public static func connect(to peer: Endpoint, peerName: String, group: any EventLoopGroup,
                               timeout: TimeAmount = .seconds(5), token: DeploymentToken? = nil, tls: TransportSecurity? = nil) async throws(GedsError) -> Connection {
        let loop = group.next()
        let ending = ConnectionEnding()
        let security = try ClientChannelSecurity(tls: tls, token: token, peer: peer, peerName: peerName, loop: loop,
                                                 timeout: timeout)
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 4 << 20))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try security.addHandlers(to: channel)
                    try channel.pipeline.syncOperations.addHandler(ClientConnectionHandler(peerName: peerName, ending: ending))
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
        return Connection(peer: peer, channel: channel, peerName: peerName, ending: ending)
    }

    public var isActive: Bool { channel.isActive }

    /// Sends a request and waits for its reply; `timeout` bounds the wait for the reply. `cancellable`: a cancelled
    /// task stops waiting (`timedOut`) and a later reply is dropped, for a call whose outcome then does not matter.
    public func call(_ request: Request, timeout: TimeAmount, cancellable: Bool = false) async throws(GedsError) -> Reply {
        let promise = channel.eventLoop.makePromise(of: Reply.self)
        send(OutboundCall(request: request, promise: promise, sink: nil, timeout: timeout))
        do {
            guard cancellable else { return try await promise.futureResult.get() }
            // A promise completes once: the reply that comes after this is ignored.
            return try await withTaskCancellationHandler {
                try await promise.futureResult.get()
            } onCancel: {
                promise.fail(GedsError(.timedOut, "the call to \(peerName) was cancelled"))
            }
        } catch {
            throw GedsError.wrapping(error)
        }
    }

    /// Reads a blob range into `sink`; `timeout` bounds each wait for progress, not the whole transfer.
    /// Returns the number of bytes delivered.
    public func read(blob: BlobID, offset: UInt64, length: UInt64, into sink: any ReadSink,
                     timeout: TimeAmount) async throws(GedsError) -> UInt64 {
        let promise = channel.eventLoop.makePromise(of: Reply.self)
        send(OutboundCall(request: .readBlob(blob: blob, offset: offset, length: length), promise: promise,
                          sink: sink, timeout: timeout))
        let reply: Reply
        do {
            reply = try await promise.futureResult.get()
        } catch {
            throw GedsError.wrapping(error)
        }
        switch reply {
        case .stream(let length): return length
        case .failure(let error): throw error
        default: throw GedsError(.protocolViolation, "unexpected reply to a read from \(peerName)")
        }
    }

    public func close() {
        channel.close(promise: nil)
    }

    /// Writes a call for the handler to track. A channel that closed since the caller checked it (the peer died)
    /// has lost its pipeline, handler included: the write fails and nothing would ever complete the call's promise,
    /// so the failed write completes it.
    private func send(_ call: OutboundCall) {
        let (peerName, promise, ending) = (peerName, call.promise, ending)
        channel.writeAndFlush(call).whenFailure { error in
            promise.fail(error as? GedsError ?? ending.reason
                              ?? GedsError(.peerUnreachable, "\(peerName) closed the connection (\(Connection.describe(error)))"))
        }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? IOError { return describeErrno(error.errnoCode) }
        if error is ChannelError { return "\(error)" }
        if let error = error as? NIOConnectionError, let first = error.connectionErrors.first {
            return describe(first.error)
        }
        return "\(error)"
    }
}

/// Why a connection's channel ended, set by its handler: a call written after that (when the handler has left with
/// the pipeline) fails with it rather than with NIO's "I/O on closed channel". A server that refuses this client's
/// TLS certificate closes the channel just after `connect` returned, for one.
final class ConnectionEnding: Sendable {
    private let first = Mutex<GedsError?>(nil)

    var reason: GedsError? { first.withLock { $0 } }

    func record(_ error: GedsError) { first.withLock { $0 = $0 ?? error } }
}

struct OutboundCall {
    var request: Request
    var promise: EventLoopPromise<Reply>
    var sink: (any ReadSink)?
    var timeout: TimeAmount
}

final class ClientConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = OutboundCall
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        var promise: EventLoopPromise<Reply>
        var sink: (any ReadSink)?
        var timeout: TimeAmount
        var deadline: NIODeadline
        /// For streamed reads: bytes expected (nil until the `.stream` reply) and received.
        var expected: UInt64?
        var received: UInt64 = 0
    }

    private let peerName: String
    private var reader = FrameReader()
    /// `reader.holdsTLSRecord` after the last read, kept beside the reader: the channel may close while the reader
    /// is busy (a frame's handling inside `consume` can close it), when the reader itself cannot be asked.
    private var heldTLSRecord = false
    private var pending: [UInt64: Pending] = [:]
    private var nextID: UInt64 = 1
    private var timer: RepeatedTask?
    private var closedError: GedsError?
    private let ending: ConnectionEnding

    init(peerName: String, ending: ConnectionEnding) {
        self.peerName = peerName
        self.ending = ending
    }

    /// Once connected (and authenticated, see `ClientAuthenticationHandler`).
    func channelActive(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(200), delay: .milliseconds(200)) { _ in
            let (handler, context) = loopBound.value
            handler.expire(context: context)
        }
        context.fireChannelActive()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let call = unwrapOutboundIn(data)
        if let closedError {
            call.promise.fail(closedError)
            promise?.fail(closedError)
            return
        }
        let id = nextID
        nextID += 1
        pending[id] = Pending(promise: call.promise, sink: call.sink, timeout: call.timeout,
                              deadline: .now() + call.timeout)
        context.write(wrapOutboundOut(FrameEncoder.frame(call.request, id: id, allocator: context.channel.allocator)),
                      promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try reader.consume(unwrapInboundIn(data)) { (frame) throws(GedsError) in
                try deliver(frame)
            }
            heldTLSRecord = reader.holdsTLSRecord
        } catch {
            fail(everything: error, context: context)
        }
    }

    private func deliver(_ frame: InboundFrame) throws(GedsError) {
        switch frame {
        case .request:
            throw GedsError(.protocolViolation, "\(peerName) sent a request on a client connection")
        case .reply(let id, let reply):
            guard var entry = pending[id] else {
                if case .failure(let error) = reply, id == 0 { throw error }  // the peer rejected the connection
                return  // a reply to a request that already timed out
            }
            if case .stream(let length) = reply, entry.sink != nil, length > 0 {
                entry.expected = length
                entry.deadline = .now() + entry.timeout
                pending[id] = entry
            } else {
                pending[id] = nil
                entry.promise.succeed(reply)
            }
        case .data(let id, let slice):
            guard var entry = pending[id], let expected = entry.expected, let sink = entry.sink else {
                throw GedsError(.protocolViolation, "\(peerName) sent data for no open read")
            }
            guard entry.received + UInt64(slice.readableBytes) <= expected else {
                throw GedsError(.protocolViolation, "\(peerName) sent more bytes than it announced")
            }
            let destination = sink.destination
            let start = Int(entry.received)
            guard slice.readableBytes <= destination.count - start else {
                throw GedsError(.protocolViolation, "read from \(peerName) overran its destination")
            }
            slice.withUnsafeReadableBytes { bytes in
                destination.baseAddress!.advanced(by: start).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            }
            entry.received += UInt64(slice.readableBytes)
            if entry.received == expected {
                pending[id] = nil
                entry.promise.succeed(.stream(length: expected))
            } else {
                entry.deadline = .now() + entry.timeout
                pending[id] = entry
            }
        }
    }

    /// Fails requests whose deadline passed. A stream stopped midway leaves the connection unusable, so
    /// then the connection is closed and everything on it fails.
    private func expire(context: ChannelHandlerContext) {
        let now = NIODeadline.now()
        for (id, entry) in pending where entry.deadline < now {
            if entry.expected != nil {
                fail(everything: GedsError(.timedOut, "read from \(peerName) made no progress for \(entry.timeout.nanoseconds / 1_000_000) ms"),
                     context: context)
                return
            }
            pending[id] = nil
            entry.promise.fail(GedsError(.timedOut, "\(peerName) did not answer within \(entry.timeout.nanoseconds / 1_000_000) ms"))
        }
    }

    private func fail(everything error: GedsError, context: ChannelHandlerContext) {
        closedError = closedError ?? error
        ending.record(closedError!)
        let entries = pending
        pending = [:]
        for (_, entry) in entries { entry.promise.fail(error) }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        let midRead = pending.values.contains { $0.expected != nil }
        fail(everything: closedError ?? (heldTLSRecord
                ? .peerRequiresTLS(peerName, code: .peerUnreachable)
                : GedsError(.peerUnreachable, midRead
                    ? "\(peerName) closed the connection in the middle of a read"
                    : "\(peerName) closed the connection")), context: context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A GedsError is one a handler in front explained already (TLS).
        fail(everything: error as? GedsError
                ?? GedsError(.peerUnreachable, "connection to \(peerName) failed: \(Connection.describe(error))"),
             context: context)
    }
}

/// One connection per peer, made on first use and replaced when it breaks.
public final class ConnectionPool: Sendable {
    private let group: any EventLoopGroup
    private let token: DeploymentToken?
    private let tls: TransportSecurity?
    private let connections = Mutex<[Endpoint: Connection]>([:])

    /// `token`: the deployment's, proved on each new connection (none: an open deployment); `tls`: connections over TLS.
    public init(group: any EventLoopGroup, token: DeploymentToken? = nil, tls: TransportSecurity? = nil) {
        self.group = group
        self.token = token
        self.tls = tls
    }

    public func connection(to peer: Endpoint, peerName: String) async throws(GedsError) -> Connection {
        if let existing = connections.withLock({ $0[peer] }), existing.isActive { return existing }
        let fresh = try await Connection.connect(to: peer, peerName: peerName, group: group, token: token, tls: tls)
        let winner = connections.withLock { table -> Connection in
            if let existing = table[peer], existing.isActive { return existing }
            table[peer] = fresh
            return fresh
        }
        if winner !== fresh { fresh.close() }
        return winner
    }

    public func closeAll() {
        let all = connections.withLock { table in
            defer { table = [:] }
            return Array(table.values)
        }
        for connection in all { connection.close() }
    }
}
