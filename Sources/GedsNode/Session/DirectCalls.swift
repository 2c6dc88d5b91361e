import GedsCarrier
import GedsCore
import GedsWire
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Calls to a TCP frame server (the MDS) made on the caller's own thread, over blocking connections. For callers
/// that block anyway (the C ABI, Python), a call then costs its round trip and one wake-up, the caller's, where
/// the event loop's path adds a hand-off to the loop and one back (measured in docs/PERFORMANCE.md). A connection
/// serves one call at a time; idle ones wait in a pool, so concurrent callers each get their own. A process forked
/// from the one that opened them never uses them (the two would read each other's replies): it opens its own.
public final class DirectCalls: Sendable {
    public let endpoint: Endpoint
    private let timeoutMilliseconds: Int64
    private let idle = Mutex<(process: pid_t, sockets: [BlockingFrameSocket])>((getpid(), []))
    private let nextID = Atomic<UInt64>(1)
    private let token: DeploymentToken?
    /// Idle connections kept beyond this many are closed.
    private static let keptIdle = 64

    /// `token`: the deployment's, proved on each new connection (none: an open deployment).
    public init(endpoint: Endpoint, timeoutMilliseconds: Int64, token: DeploymentToken? = nil) {
        self.endpoint = endpoint
        self.timeoutMilliseconds = timeoutMilliseconds
        self.token = token
    }

    deinit {
        for socket in idle.withLock({ $0.sockets }) { socket.close() }
    }

    /// Sends `request` and waits on this thread for its reply (failures answered by the server come back as
    /// `.failure`, as from the other transports). A pooled connection the server closed meanwhile (a restart)
    /// fails at once, and the call is made once more on a new one; one that times out is not tried again (the
    /// server may be working on it). A connection that fails is closed, never reused.
    public func call(_ request: Request) throws(GedsError) -> Reply {
        if let pooled = pooledConnection() {
            do throws(GedsError) {
                return try exchange(request, on: pooled)
            } catch where error.code == .timedOut {
                throw error
            } catch {}
        }
        return try exchange(request, on: try connect())
    }

    /// A new connection, authenticated when the deployment has a token.
    private func connect() throws(GedsError) -> BlockingFrameSocket {
        let socket = try BlockingFrameSocket.connect(tcp: endpoint, timeoutMilliseconds: timeoutMilliseconds)
        guard let token else { return socket }
        do throws(GedsError) {
            try ClientHandshake.run(token: token, peer: "MDS \(endpoint)") { (request) throws(GedsError) in
                try roundTrip(request, on: socket)
            }
        } catch {
            socket.close()
            throw error
        }
        return socket
    }

    /// An idle connection of this process; after a fork, the parent's are closed here (only this process's copies
    /// of their descriptors) and forgotten.
    private func pooledConnection() -> BlockingFrameSocket? {
        let process = getpid()
        let (socket, inherited) = idle.withLock { idle -> (BlockingFrameSocket?, [BlockingFrameSocket]) in
            guard idle.process == process else {
                defer { idle = (process, []) }
                return (nil, idle.sockets)
            }
            return (idle.sockets.popLast(), [])
        }
        for socket in inherited { socket.close() }
        return socket
    }

    /// One request and its reply; a failed one leaves the connection unusable (the caller closes it).
    private func roundTrip(_ request: Request, on socket: BlockingFrameSocket) throws(GedsError) -> Reply {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        do throws(GedsError) {
            try socket.send(LocalFrame.bytes(request, id: id))
            guard let frame = try socket.receiveFrame() else {
                throw GedsError(.mdsUnreachable, "\(endpoint) closed the connection")
            }
            if frame.descriptor >= 0 { Glibc.close(frame.descriptor) }
            guard frame.header.kind == .reply, frame.header.requestID == id else {
                throw GedsError(.protocolViolation, "\(endpoint) answered request \(id) with a \(frame.header.kind) frame for \(frame.header.requestID)")
            }
            return try LocalFrame.reply(from: frame.payload)
        } catch {
            throw error.code == .io ? GedsError(.mdsUnreachable, "\(endpoint): \(error.message)") : error
        }
    }

    private func exchange(_ request: Request, on socket: BlockingFrameSocket) throws(GedsError) -> Reply {
        let reply: Reply
        do throws(GedsError) {
            reply = try roundTrip(request, on: socket)
        } catch {
            socket.close()
            throw error
        }
        let process = getpid()
        let surplus = idle.withLock { idle -> BlockingFrameSocket? in
            guard idle.process == process, idle.sockets.count < DirectCalls.keptIdle else { return socket }
            idle.sockets.append(socket)
            return nil
        }
        surplus?.close()
        return reply
    }
}
