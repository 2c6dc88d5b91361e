import GedsCarrier
import GedsCore
import GedsVerbs
import GedsWire
import Synchronization

/// A pushed stream (a subscription) on an RDMA message connection at the MDS: each reply is one send. Its thread
/// is the engine's poll thread, where sends complete, so the source learns there, without a hand-off, that the
/// peer takes more again.
final class RDMAPushSink: PushSink {
    /// Sends handed over and not yet taken by the device (the peer's receive buffers, our credits, are full) beyond
    /// which the stream waits, and the count it waits to fall to: the events wait in the source's bounded queue.
    static let highMark = 32
    static let lowMark = 8

    private struct State {
        var written: [[UInt8]] = []
        var unsent = 0
        var blocked = false
        var source: (any PushSource)?
    }

    private let connection: RDMAMessageConnection
    private let id: UInt64
    private let state: Mutex<State>

    init(connection: RDMAMessageConnection, id: UInt64, source: any PushSource) {
        self.connection = connection
        self.id = id
        state = Mutex(State(source: source))
    }

    var isWritable: Bool {
        state.withLock { state in
            guard state.unsent >= RDMAPushSink.highMark else { return true }
            state.blocked = true
            return false
        }
    }

    func write(_ reply: Reply) {
        let message = WholeFrame.bytes(reply, id: id)
        state.withLock { $0.written.append(message) }
    }

    func flush() {
        let messages = state.withLock { state in
            defer { state.written = [] }
            state.unsent += state.written.count
            return state.written
        }
        guard !messages.isEmpty else { return }
        connection.post(messages, timeout: RDMAMetadata.sendTimeout) { result in self.sent(result) }
    }

    private func sent(_ result: Result<Void, RDMAError>) {
        guard case .success = result else {
            connection.abort()  // a message lost leaves a gap in the stream: the peer resumes on a new one
            return
        }
        let source = state.withLock { state -> (any PushSource)? in
            state.unsent -= 1
            guard state.blocked, state.unsent <= RDMAPushSink.lowMark else { return nil }
            state.blocked = false
            return state.source
        }
        source?.writable()
    }

    func close(after grace: Duration) {
        flush()
        let connection = self.connection
        Task { await connection.close() }
        Task {
            try? await Task.sleep(for: grace)
            connection.abort()
        }
    }

    func execute(_ work: @escaping @Sendable () -> Void) {
        connection.engine.execute(work)
    }

    /// The connection ended: the source stops (on the sink's thread) and is let go.
    func end() {
        let source = state.withLock { state in
            defer { state.source = nil }
            return state.source
        }
        if let source { execute { source.stop() } }
        connection.abort()
    }
}

/// The client's side of a pushed stream over RDMA send/receive: one request on a connection of its own, then the
/// replies pushed for it, each handed to `onReply` on the engine's poll thread, in order (no thread hand-off before
/// the caller's own); `onClose` is called once, when the connection ends for any reason (with why).
public final class RDMAPushConnection: Sendable {
    private let client: RDMAMetadataClient

    private init(client: RDMAMetadataClient) {
        self.client = client
    }

    /// With a `token`, the request is sent once the MDS accepted its proof (a refusal is thrown).
    public static func open(to mds: Endpoint, engine: RDMAEngine, request: Request, timeout: Duration,
                            token: DeploymentToken? = nil, onReply: @escaping @Sendable (Reply) -> Void,
                            onClose: @escaping @Sendable (GedsError) -> Void) async throws(GedsError) -> RDMAPushConnection {
        let client = try await RDMAMetadataClient.connect(to: mds, engine: engine, timeout: timeout, token: token)
        try await client.push(request, onReply: onReply, onClose: onClose)
        return RDMAPushConnection(client: client)
    }

    public func close() {
        client.abort()
    }
}
