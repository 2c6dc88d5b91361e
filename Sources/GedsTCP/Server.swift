import GedsCarrier
import GedsCore
import GedsWire
import Logging
import NIOCore
import NIOPosix
import NIOSSL

/// A pushed stream on a TCP connection: its thread is the connection's event loop.
struct ChannelPushSink: PushSink {
    private let eventLoop: any EventLoop
    private let channel: any Channel
    private let id: UInt64
    /// Whether work already ran at once in this turn of the loop (a task queued behind it clears this).
    private let ranThisTurn: NIOLoopBoundBox<Bool>

    /// Call on the channel's loop.
    init(channel: any Channel, id: UInt64) {
        self.eventLoop = channel.eventLoop
        self.channel = channel
        self.id = id
        ranThisTurn = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
    }

    var isWritable: Bool { channel.isWritable }

    func write(_ reply: Reply) {
        channel.write(FrameEncoder.frame(reply, id: id, allocator: channel.allocator), promise: nil)
    }

    func flush() { channel.flush() }

    func close(after grace: Duration) {
        let channel = self.channel
        let promise = eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(channel.allocator.buffer(capacity: 0), promise: promise)
        let timeout = eventLoop.scheduleTask(in: TimeAmount(grace)) { channel.close(promise: nil) }
        promise.futureResult.whenComplete { _ in
            timeout.cancel()
            channel.close(promise: nil)
        }
    }

    func execute(_ work: @escaping @Sendable () -> Void) {
        guard eventLoop.inEventLoop, !ranThisTurn.value else {
            eventLoop.execute(work)
            return
        }
        ranThisTurn.value = true
        let ranThisTurn = self.ranThisTurn
        eventLoop.execute { ranThisTurn.value = false }
        work()
    }
}

/// A TCP server speaking the GEDS frame protocol (swift-nio).
public final class FrameServer: Sendable {
    public let channel: any Channel
    public let localAddress: Endpoint

    /// `authentication`: the deployment's token that each connection must prove before it is served (none: open);
    /// `tls`: every connection speaks TLS (its handshake first, then the token's inside it).
    public static func start(listen: Endpoint, service: any RequestService, group: any EventLoopGroup,
                             logger: Logger, authentication: ServerAuthentication? = nil,
                             tls: TransportSecurity? = nil) async throws -> FrameServer {
        if authentication?.token != nil { AuthenticationFailures.register() }
        try tls?.checkServes()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 8 << 20))
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 16384, maximum: 1 << 20))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(try tls.serverHandler()) }
                    try channel.pipeline.syncOperations.addHandler(
                        ServerConnectionHandler(service: service, logger: logger,
                                                gate: AuthenticationGate(authentication, address: channel.localAddress.map(describe) ?? "?"),
                                                sendsFiles: tls == nil))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(host: listen.host, port: listen.port).get()
        } catch {
            throw GedsError(.io, "cannot listen on \(listen): \(error)")
        }
        let port = channel.localAddress?.port ?? listen.port
        return FrameServer(channel: channel, localAddress: Endpoint(host: listen.host, port: port))
    }

    /// HOST:PORT, as clients name the server (and logs name a peer).
    static func describe(_ address: SocketAddress) -> String {
        "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
    }

    private init(channel: any Channel, localAddress: Endpoint) {
        self.channel = channel
        self.localAddress = localAddress
    }

    public func close() async {
        try? await channel.close()
    }
}

/// One accepted connection. Requests are answered as they come; file streams are cut into chunks and sent
/// round-robin whenever the socket can take more, so a small reply never waits behind a large object.
final class ServerConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = IOData

    static let chunkSize: UInt64 = 1 << 20
    static let inlineLimit: UInt64 = 64 << 10

    private struct ActiveStream {
        var id: UInt64
        var handle: NIOFileHandle
        var next: UInt64
        var end: UInt64
    }

    private let service: any RequestService
    private let logger: Logger
    private var reader = FrameReader()
    private var streams = CircularBuffer<ActiveStream>()
    private var active = true
    private var push: (any PushSource)?
    private var gate: AuthenticationGate
    /// Whether file streams go out as file regions (sendfile); under TLS, whose handler encrypts bytes in memory,
    /// each chunk is read into a buffer instead.
    private let sendsFiles: Bool
    /// The replies framed since the last write: a read's replies go out in one write, and the storage is used again
    /// once the socket took it (no allocation per reply).
    private var outbound = ByteBuffer()
    /// A larger `outbound` (a listing page, a lookup with many KiB inline) is let go after its write rather than kept
    /// for the connection's life: at most this much stays with each of possibly thousands of connections.
    private static let keptOutboundCapacity = 16 << 10

    init(service: any RequestService, logger: Logger, gate: AuthenticationGate, sendsFiles: Bool) {
        self.service = service
        self.logger = logger
        self.gate = gate
        self.sendsFiles = sendsFiles
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard active else { return }
        let buffer = unwrapInboundIn(data)
        do {
            try reader.consume(buffer) { (frame) throws(GedsError) in
                guard case .request(let id, let request) = frame else {
                    throw GedsError(.protocolViolation, "a server accepts only requests")
                }
                handle(request, id: id, context: context)
            }
        } catch {
            reject(error, context: context)
        }
        flush(context: context)
    }

    private func handle(_ request: Request, id: UInt64, context: ChannelHandlerContext) {
        guard active else { return }  // refused: what was pipelined behind it is not served
        switch gate.admit(request, from: context.remoteAddress.map(FrameServer.describe) ?? "?") {
        case .serve:
            break
        case .answer(let reply):
            send(reply, id: id, context: context)
            return
        case .refuse(let error):
            refuse(error, id: id, context: context)
            return
        }
        guard push == nil else {
            send(.failure(GedsError(.invalidArgument, "this connection carries a subscription; use another one")), id: id,
                 context: context)
            return
        }
        let served = ServedRequest(kind: request.kindIndex, started: .now())
        dispatch(service.respond(to: request), id: id, context: context, served: served)
    }

    private func dispatch(_ response: Response, id: UInt64, context: ChannelHandlerContext, served: ServedRequest) {
        switch response {
        case .reply(let reply):
            served.finished(ok: !reply.isFailure)
            send(reply, id: id, context: context)
        case .deferred(let answer):
            dispatch(.later { .reply(await answer()) }, id: id, context: context, served: served)
        case .promised(let register):
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let loop = context.eventLoop
            register { reply in
                let send: @Sendable () -> Void = {
                    let (handler, context) = loopBound.value
                    guard handler.active else { return }
                    handler.dispatch(.reply(reply), id: id, context: context, served: served)
                    handler.flush(context: context)
                }
                // Answered on this connection's own loop (a wait released by a seal on a connection of the same
                // loop): sent at once rather than after the loop's turn.
                if loop.inEventLoop { send() } else { loop.execute(send) }
            }
        case .later(let decide):
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            // The answer is decided off the event loop and sent from it.
            context.eventLoop.makeFutureWithTask { await decide() }.whenSuccess { response in
                let (handler, context) = loopBound.value
                guard handler.active else {
                    if case .file(let file) = response { try? file.descriptor.close() }
                    return
                }
                handler.dispatch(response, id: id, context: context, served: served)
                handler.flush(context: context)
            }
        case .file(let file) where file.length <= ServerConnectionHandler.inlineLimit:
            // Small ranges: one pread and one write beat setting up a sendfile stream.
            var data = context.channel.allocator.buffer(capacity: Int(file.length))
            let got = data.writeWithUnsafeMutableBytes(minimumWritableBytes: Int(file.length)) { bytes in
                (try? file.descriptor.read(fromAbsoluteOffset: Int64(file.offset),
                                           into: UnsafeMutableRawBufferPointer(rebasing: bytes[..<Int(file.length)]))) ?? 0
            }
            try? file.descriptor.close()
            guard got == Int(file.length) else {
                served.finished(ok: false)
                send(.failure(GedsError(.io, "could not read \(file.length) bytes of the object")), id: id, context: context)
                return
            }
            served.finished(ok: true, bytes: file.length)
            send(.stream(length: file.length), id: id, context: context)
            writeReplies(context: context)
            if got > 0 {
                context.write(wrapOutboundOut(.byteBuffer(FrameEncoder.dataHeader(id: id, length: UInt32(got),
                                                                                   allocator: context.channel.allocator))),
                              promise: nil)
                context.write(wrapOutboundOut(.byteBuffer(data)), promise: nil)
            }
        case .push(let source):
            served.finished(ok: true)
            // A pushed stream stops at a small backlog, so a subscriber that does not read is noticed early and its
            // events wait in the source's bounded queue, not in this connection's buffer.
            // The kernel's share is bounded too (loopback would otherwise let megabytes sit in the socket).
            context.channel.setOption(ChannelOptions.writeBufferWaterMark,
                                      value: .init(low: 64 << 10, high: 256 << 10)).whenComplete { _ in }
            context.channel.setOption(ChannelOptions.socketOption(.so_sndbuf), value: 256 << 10).whenComplete { _ in }
            push = source
            writeReplies(context: context)  // the replies before it go first
            source.start(ChannelPushSink(channel: context.channel, id: id))
        case .file(let file):
            served.finished(ok: true, bytes: file.length)
            send(.stream(length: file.length), id: id, context: context)
            let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: file.descriptor.rawValue)
            streams.append(ActiveStream(id: id, handle: handle, next: file.offset, end: file.offset + file.length))
            pump(context: context)
        }
    }

    /// Frames `reply` into `outbound`; `writeReplies` or `flush` sends it.
    private func send(_ reply: Reply, id: UInt64, context: ChannelHandlerContext) {
        if outbound.readableBytes == 0 { outbound.clear() }  // allocates only while the socket still holds the last write
        FrameEncoder.append(reply, id: id, to: &outbound)
    }

    /// Hands the replies framed so far to the channel, ahead of anything written after them.
    private func writeReplies(context: ChannelHandlerContext) {
        guard outbound.readableBytes > 0 else { return }
        context.write(wrapOutboundOut(.byteBuffer(outbound)), promise: nil)
        if outbound.capacity > ServerConnectionHandler.keptOutboundCapacity {
            outbound = ByteBuffer()
        } else {
            outbound.moveReaderIndex(to: outbound.writerIndex)
        }
    }

    private func flush(context: ChannelHandlerContext) {
        writeReplies(context: context)
        context.flush()
    }

    /// Writes chunks while the socket has room; called again when it drains.
    private func pump(context: ChannelHandlerContext) {
        writeReplies(context: context)
        while context.channel.isWritable, var stream = streams.popFirst() {
            let length = min(ServerConnectionHandler.chunkSize, stream.end - stream.next)
            context.write(wrapOutboundOut(.byteBuffer(FrameEncoder.dataHeader(id: stream.id, length: UInt32(length),
                                                                                allocator: context.channel.allocator))),
                          promise: nil)
            let chunk: IOData
            if sendsFiles {
                chunk = .fileRegion(FileRegion(fileHandle: stream.handle, readerIndex: Int(stream.next),
                                               endIndex: Int(stream.next + length)))
            } else {
                do {
                    chunk = .byteBuffer(try read(length, at: stream.next, of: stream.handle, allocator: context.channel.allocator))
                } catch {
                    // The header went out already: the connection cannot carry on.
                    logger.error("closing connection from \(context.remoteAddress?.description ?? "?"): \(error.message)")
                    context.close(promise: nil)
                    return
                }
            }
            stream.next += length
            if stream.next < stream.end {
                context.write(wrapOutboundOut(chunk), promise: nil)
                streams.append(stream)
            } else {
                let handle = stream.handle
                let promise = context.eventLoop.makePromise(of: Void.self)
                promise.futureResult.whenComplete { _ in try? handle.close() }
                context.write(wrapOutboundOut(chunk), promise: promise)
            }
        }
        context.flush()
    }

    /// One chunk of a stream, for a TLS connection (the file is in tier 0 or tier 1's page cache: a memory copy).
    private func read(_ length: UInt64, at offset: UInt64, of handle: NIOFileHandle,
                      allocator: ByteBufferAllocator) throws(GedsError) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: Int(length))
        let got = try? handle.withUnsafeFileDescriptor { descriptor in
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Int(length)) { bytes in
                max(0, pread(descriptor, bytes.baseAddress, Int(length), off_t(offset)))
            }
        }
        guard got == Int(length) else { throw GedsError(.io, "could not read \(length) bytes of the object at \(offset)") }
        return buffer
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            pump(context: context)
            push?.writable()
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        active = false
        while let stream = streams.popFirst() { try? stream.handle.close() }
        push?.stop()
        push = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOSSLError, case .handshakeFailed = error {  // a client without TLS, or untrusted
            let peer = context.remoteAddress.map(FrameServer.describe) ?? "?"
            logger.warning("closing connection from \(peer): TLS handshake failed: \(boringSSLReason(error) ?? "\(error)")")
        }
        context.close(promise: nil)
    }

    /// A malformed frame: tell the peer why (best effort) and close; other connections are unaffected.
    private func reject(_ error: GedsError, context: ChannelHandlerContext) {
        logger.warning("closing connection from \(context.remoteAddress?.description ?? "?"): \(error.message)")
        refuse(error, id: 0, context: context)
    }

    /// Sends the failure (best effort), then closes; nothing more is read from this connection.
    private func refuse(_ error: GedsError, id: UInt64, context: ChannelHandlerContext) {
        guard active else { return }
        send(.failure(error), id: id, context: context)
        writeReplies(context: context)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(channel.allocator.buffer(capacity: 0))))
            .whenComplete { _ in channel.close(promise: nil) }
        active = false
    }
}
