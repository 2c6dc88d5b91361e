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
    /// Idle connections kept beyond this many are closed.
    private static let keptIdle = 64

    public init(endpoint: Endpoint, timeoutMilliseconds: Int64) {
        self.endpoint = endpoint
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    deinit {
        for socket in idle.withLock({ $0.sockets }) { socket.close() }
    }

    /// Sends `request` and waits on this thread for its reply (failures answered by the server come back as
    /// `.failure`, as from the other transports). Only for requests that may be sent twice (lookups, listings): a
    /// pooled connection the server closed meanwhile (a restart, an idle timeout) fails, and the call is made once
    /// more on a new one. A connection that fails is closed, never reused.
    public func call(_ request: Request) throws(GedsError) -> Reply {
        if let pooled = pooledConnection(), let reply = try? exchange(request, on: pooled) {
            return reply
        }
        return try exchange(request, on: try BlockingFrameSocket.connect(tcp: endpoint, timeoutMilliseconds: timeoutMilliseconds))
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

    private func exchange(_ request: Request, on socket: BlockingFrameSocket) throws(GedsError) -> Reply {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let reply: Reply
        do throws(GedsError) {
            try socket.send(LocalFrame.bytes(request, id: id))
            guard let frame = try socket.receiveFrame() else {
                throw GedsError(.mdsUnreachable, "\(endpoint) closed the connection")
            }
            if frame.descriptor >= 0 { Glibc.close(frame.descriptor) }
            guard frame.header.kind == .reply, frame.header.requestID == id else {
                throw GedsError(.protocolViolation, "\(endpoint) answered request \(id) with a \(frame.header.kind) frame for \(frame.header.requestID)")
            }
            reply = try LocalFrame.reply(from: frame.payload)
        } catch {
            socket.close()
            throw error.code == .io ? GedsError(.mdsUnreachable, "\(endpoint): \(error.message)") : error
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
