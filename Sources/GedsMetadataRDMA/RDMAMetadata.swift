import GedsCarrier
import GedsCore
import GedsVerbs
import GedsWire
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The MDS's side of RDMA send/receive, and the client that talks to it: one GEDS wire frame (header +
/// payload) per message, the same messages and codec as over TCP.
public enum RDMAMetadata {
    /// Why RDMA is unusable on this machine ("no RDMA device: ..."), or nil when it is usable.
    public static var unavailableReason: String? { RDMA.unavailableReason }

    /// Both sides refuse a message longer than the largest frame at its first fragment, before buffering
    /// any of it; the frame header is then checked against the same bounds as on TCP.
    static let options = RDMAMessageOptions(maxMessageSize: FrameHeader.size + Int(WireLimits.maximumMessagePayload))

    /// How long a reply may wait for the peer's credits before that connection is given up.
    static let sendTimeout: Duration = .seconds(30)
}

/// Accepts RDMA message connections for a request service (the MDS) and answers each connection's requests
/// in order on a task of its own; the service's state is behind its own lock, so connections need no other
/// coordination. A malformed frame gets a failure reply (id 0) and closes that connection only.
public final class RDMAMetadataListener: Sendable {
    /// The address actually bound (the port chosen when 0 was asked for).
    public let endpoint: Endpoint
    private let engine: RDMAEngine
    private let listener: RDMAMessageListener
    private let acceptLoop: Task<Void, Never>

    /// Listens on `endpoint`, an address of an RDMA device (port 0: any free port, in rdmacm's port space);
    /// `authentication`: the token each connection must prove before it is served (none: open).
    public static func start(listen endpoint: Endpoint, service: any RequestService, logger: Logger,
                             authentication: ServerAuthentication? = nil) async throws(GedsError) -> RDMAMetadataListener {
        let engine: RDMAEngine
        let listener: RDMAMessageListener
        do throws(RDMAError) {
            engine = try RDMAEngine(localAddress: endpoint.host)
            listener = try await RDMAMessageListener.listen(engine: engine, on: endpoint, options: RDMAMetadata.options)
        } catch {
            throw GedsError(error.gedsError.code, "cannot listen for RDMA on \(endpoint): \(error.message)")
        }
        if authentication?.token != nil { AuthenticationFailures.register() }
        let acceptLoop = Task {
            await accept(from: listener, service: service, logger: logger, authentication: authentication)
        }
        return RDMAMetadataListener(endpoint: listener.endpoint, engine: engine, listener: listener, acceptLoop: acceptLoop)
    }

    private init(endpoint: Endpoint, engine: RDMAEngine, listener: RDMAMessageListener, acceptLoop: Task<Void, Never>) {
        self.endpoint = endpoint
        self.engine = engine
        self.listener = listener
        self.acceptLoop = acceptLoop
    }

    /// Stops listening and closes every connection (their tasks end when their receives fail).
    public func close() async {
        acceptLoop.cancel()
        await listener.close()
        await acceptLoop.value
        engine.shutdown()
    }

    private static func accept(from listener: RDMAMessageListener, service: any RequestService, logger: Logger,
                               authentication: ServerAuthentication?) async {
        while !Task.isCancelled {
            let connection: RDMAMessageConnection
            do throws(RDMAError) {
                // A bounded wait, so that cancellation is seen even when nobody connects.
                connection = try await listener.accept(timeout: .seconds(1))
            } catch {
                if error.kind == .timedOut { continue }
                if error.kind != .closed { logger.warning("RDMA listener on \(listener.endpoint): \(error.message)") }
                return
            }
            logger.debug("RDMA client \(connection.peer) connected")
            let gate = AuthenticationGate(authentication, address: "\(listener.endpoint) (rdma)")
            Task { await serve(connection, service: service, gate: gate, logger: logger) }
        }
    }

    /// One connection's requests, one at a time, until the client goes or breaks the protocol.
    private static func serve(_ connection: RDMAMessageConnection, service: any RequestService, gate: AuthenticationGate,
                              logger: Logger) async {
        var gate = gate
        while true {
            let message: [UInt8]
            do throws(RDMAError) {
                message = try await connection.receive(timeout: .seconds(3600))
            } catch {
                if error.kind == .timedOut { continue }  // an idle client; it stays connected
                if error.kind != .closed { logger.info("RDMA client \(connection.peer): \(error.message)") }
                await connection.close()
                return
            }
            let id: UInt64
            let request: Request
            do throws(GedsError) {
                (id, request) = try WholeFrame.request(from: message)
            } catch {
                logger.warning("closing RDMA connection from \(connection.peer): \(error.message)")
                try? await connection.send(WholeFrame.bytes(.failure(error), id: 0), timeout: RDMAMetadata.sendTimeout)
                await connection.close()
                return
            }
            let reply: Reply
            switch gate.admit(request, from: "\(connection.peer)") {
            case .serve:
                let response = service.respond(to: request)
                if case .push(let source) = response {
                    await push(source, id: id, on: connection, logger: logger)
                    return
                }
                reply = await answer(response)
            case .answer(let step):
                reply = step
            case .refuse(let error):
                try? await connection.send(WholeFrame.bytes(.failure(error), id: id), timeout: RDMAMetadata.sendTimeout)
                await connection.close()
                return
            }
            do throws(RDMAError) {
                try await connection.send(WholeFrame.bytes(reply, id: id), timeout: RDMAMetadata.sendTimeout)
            } catch {
                logger.info("RDMA client \(connection.peer): \(error.message)")
                await connection.close()
                return
            }
        }
    }

    /// The one reply a response comes to over RDMA messages, waited for on this connection's task (its requests
    /// are answered in order anyway).
    private static func answer(_ response: Response) async -> Reply {
        switch response {
        case .reply(let reply): return reply
        case .deferred(let answer): return await answer()
        case .promised(let register): return await withCheckedContinuation { reply in register { reply.resume(returning: $0) } }
        case .later(let decide): return await Self.answer(decide())
        case .file(let file):
            // Blob bytes are a node's to serve (one-sided READs, or TCP); the MDS never answers with a file.
            try? file.descriptor.close()
            return .failure(GedsError(.invalidArgument, "file streams are served over TCP only"))
        case .push(let stream):
            stream.stop()
            return .failure(GedsError(.invalidArgument, "a pushed stream must be a request's immediate answer"))
        }
    }

    /// From now on the connection carries the stream's replies (each one send) until the client closes it or the
    /// stream ends; a message from the client is a protocol violation and ends it too.
    private static func push(_ source: any PushSource, id: UInt64, on connection: RDMAMessageConnection, logger: Logger) async {
        logger.debug("RDMA client \(connection.peer): a pushed stream (subscription) over rdma")
        let sink = RDMAPushSink(connection: connection, id: id, source: source)
        connection.engine.execute { source.start(sink) }
        while true {
            do throws(RDMAError) {
                _ = try await connection.receive(timeout: .seconds(3600))
                logger.warning("closing RDMA connection from \(connection.peer): a request on a pushed stream")
            } catch {
                if error.kind == .timedOut { continue }
            }
            break
        }
        sink.end()
    }
}

/// A client of the MDS over RDMA send/receive. Calls are answered in the order they are sent, so they take
/// turns: one request on the connection at a time. A transport failure or a reply out of step leaves the
/// connection unusable, and every later call fails with that error.
public final class RDMAMetadataClient: Sendable {
    public let mds: Endpoint
    private let connection: RDMAMessageConnection
    private let ownsEngine: Bool
    private let timeout: Duration
    private let turns = Turns()
    private let state = Mutex(State())

    private struct State {
        var nextID: UInt64 = 1
        var broken: GedsError?
    }

    /// Connects from `localAddress` (an address of this machine's RDMA device) to the MDS's RDMA listener;
    /// `timeout` bounds the connection and each call; with a `token`, returns once the MDS accepted its proof.
    public static func connect(to mds: Endpoint, from localAddress: String, timeout: Duration = .seconds(10),
                               token: DeploymentToken? = nil) async throws(GedsError) -> RDMAMetadataClient {
        let engine: RDMAEngine
        do throws(RDMAError) {
            engine = try RDMAEngine(localAddress: localAddress)
        } catch {
            throw connectionError(error, mds: mds)
        }
        return try await connect(to: mds, engine: engine, ownsEngine: true, timeout: timeout, token: token)
    }

    /// Connects through an engine the caller keeps (a node's data plane); `close` leaves it running.
    public static func connect(to mds: Endpoint, engine: RDMAEngine, timeout: Duration = .seconds(10),
                               token: DeploymentToken? = nil) async throws(GedsError) -> RDMAMetadataClient {
        try await connect(to: mds, engine: engine, ownsEngine: false, timeout: timeout, token: token)
    }

    private static func connect(to mds: Endpoint, engine: RDMAEngine, ownsEngine: Bool, timeout: Duration,
                                token: DeploymentToken?) async throws(GedsError) -> RDMAMetadataClient {
        let client: RDMAMetadataClient
        do throws(RDMAError) {
            let connection = try await RDMAMessageConnection.connect(engine: engine, to: mds, options: RDMAMetadata.options,
                                                                     timeout: timeout)
            client = RDMAMetadataClient(mds: mds, connection: connection, ownsEngine: ownsEngine, timeout: timeout)
        } catch {
            if ownsEngine { engine.shutdown() }
            throw connectionError(error, mds: mds)
        }
        guard let token else { return client }
        do throws(GedsError) {
            try await ClientHandshake.run(token: token, peer: "MDS \(mds) (rdma)") { (request) async throws(GedsError) in
                try await client.call(request)
            }
        } catch {
            await client.close()
            throw error
        }
        return client
    }

    private static func connectionError(_ error: RDMAError, mds: Endpoint) -> GedsError {
        let code: GedsError.Code = error.kind == .noDevice || error.kind == .invalidArgument ? error.gedsError.code : .mdsUnreachable
        return GedsError(code, "MDS unreachable over RDMA at \(mds): \(error.message)")
    }

    private init(mds: Endpoint, connection: RDMAMessageConnection, ownsEngine: Bool, timeout: Duration) {
        self.mds = mds
        self.connection = connection
        self.ownsEngine = ownsEngine
        self.timeout = timeout
    }

    /// Frames `request`, sends it, and returns the decoded reply (a `.failure` reply is returned, not thrown).
    public func call(_ request: Request) async throws(GedsError) -> Reply {
        await turns.take()
        defer { turns.pass() }
        let id = try state.withLock { (state) throws(GedsError) -> UInt64 in
            if let broken = state.broken { throw broken }
            defer { state.nextID &+= 1 }
            return state.nextID
        }
        do throws(GedsError) {
            try await transport { () throws(RDMAError) in
                try await connection.send(WholeFrame.bytes(request, id: id), timeout: timeout)
            }
            let message = try await transport { () throws(RDMAError) in try await connection.receive(timeout: timeout) }
            let (replyID, reply) = try WholeFrame.reply(from: message)
            if replyID == id { return reply }
            // Id 0 is the MDS refusing the connection (it closes it after this reply).
            if replyID == 0, case .failure(let refusal) = reply { throw refusal }
            throw GedsError(.protocolViolation, "the MDS at \(mds) answered request \(id) with a reply to \(replyID)")
        } catch {
            // The stream is out of step (or gone): a later reply could belong to this request.
            state.withLock { if $0.broken == nil { $0.broken = error } }
            await connection.close()
            throw error
        }
    }

    /// Sends `request` and hands each reply the MDS pushes for it (a subscription's) to `onReply`, on the engine's
    /// poll thread, in order, until the connection ends: then `onClose`, once. The connection carries nothing else
    /// from now on (a later `call` fails).
    func push(_ request: Request, onReply: @escaping @Sendable (Reply) -> Void,
              onClose: @escaping @Sendable (GedsError) -> Void) async throws(GedsError) {
        let id = try state.withLock { (state) throws(GedsError) -> UInt64 in
            if let broken = state.broken { throw broken }
            state.broken = GedsError(.invalidArgument, "this RDMA connection to the MDS carries a subscription")
            return state.nextID
        }
        do throws(GedsError) {
            try await transport { () throws(RDMAError) in
                try await connection.send(WholeFrame.bytes(request, id: id), timeout: timeout)
            }
        } catch {
            await connection.close()
            throw error
        }
        receivePushed(id: id, onReply: onReply, onClose: onClose)
    }

    private func receivePushed(id: UInt64, onReply: @escaping @Sendable (Reply) -> Void,
                               onClose: @escaping @Sendable (GedsError) -> Void) {
        connection.receive(timeout: .seconds(3600)) { [self] result in
            let message: [UInt8]
            switch result {
            case .success(let received): message = received
            case .failure(let error) where error.kind == .timedOut:  // an idle stream; progress marks come far more often
                return receivePushed(id: id, onReply: onReply, onClose: onClose)
            case .failure(let error):
                return onClose(GedsError(.mdsUnreachable, "MDS over RDMA at \(mds): \(error.message)"))
            }
            do throws(GedsError) {
                let (replyID, reply) = try WholeFrame.reply(from: message)
                guard replyID == id else {
                    throw GedsError(.protocolViolation, "the MDS at \(mds) pushed a reply to \(replyID) on the stream of request \(id)")
                }
                onReply(reply)
            } catch {
                connection.abort()
                return onClose(error)
            }
            receivePushed(id: id, onReply: onReply, onClose: onClose)
        }
    }

    /// Closes at once (a pushed stream's end: its receive then fails, and `onClose` is called).
    func abort() {
        state.withLock { if $0.broken == nil { $0.broken = GedsError(.mdsUnreachable, "the RDMA connection to the MDS is closed") } }
        connection.abort()
    }

    private func transport<T>(_ body: () async throws(RDMAError) -> T) async throws(GedsError) -> T {
        do throws(RDMAError) {
            return try await body()
        } catch {
            throw GedsError(error.kind == .timedOut ? .timedOut : .mdsUnreachable, "MDS over RDMA at \(mds): \(error.message)")
        }
    }

    public func close() async {
        state.withLock { if $0.broken == nil { $0.broken = GedsError(.mdsUnreachable, "the RDMA connection to the MDS is closed") } }
        await connection.close()
        if ownsEngine { connection.engine.shutdown() }
    }
}

/// Takes turns among tasks, first come first served, without blocking a thread while waiting.
final class Turns: Sendable {
    private struct State: ~Copyable {
        var busy = false
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    func take() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                guard state.busy else {
                    state.busy = true
                    return true
                }
                state.waiting.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    func pass() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.waiting.isEmpty else {
                state.busy = false
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }
}

extension RDMAMetadataClient: MetadataCarrier {}
