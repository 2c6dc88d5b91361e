import GedsCore
import GedsWire
import SystemPackage

/// What a server does with requests: the MDS and the node data server each implement it, and each carrier
/// (TCP frames, RDMA messages) delivers requests to it and sends back what it answers.
public protocol RequestService: Sendable {
    /// Called on the carrier's own thread (a TCP connection's event loop, an RDMA connection's task): it must not
    /// block; work that waits goes into a `.deferred` or `.later` answer.
    func respond(to request: Request) -> Response
}

/// A file range to stream to the requester; the carrier closes the descriptor when done.
public struct FileStream: Sendable {
    public var descriptor: FileDescriptor
    public var offset: UInt64
    public var length: UInt64

    public init(descriptor: FileDescriptor, offset: UInt64, length: UInt64) {
        self.descriptor = descriptor
        self.offset = offset
        self.length = length
    }
}

public enum Response: Sendable {
    case reply(Reply)
    /// Answered later: the carrier awaits the body in a task (never blocking its thread) and sends its reply.
    case deferred(@Sendable () async -> Reply)
    /// Answered later by whoever holds the callback, from any thread, once: the carrier sends that reply from its
    /// own thread (no task in between, for replies a dedicated thread decides, such as the journal's fsync).
    case promised(@Sendable (_ answer: @escaping @Sendable (Reply) -> Void) -> Void)
    /// A `.stream` reply followed by the file's bytes.
    case file(FileStream)
    /// Decided later (a node's file that must first come back from a lower tier), then sent as above.
    case later(@Sendable () async -> Response)
    /// Replies pushed by the source, all with the request's id, until it or the connection ends (a subscription).
    /// The connection then carries nothing else.
    case push(any PushSource)
}

/// What feeds a pushed stream of replies. Every call comes on the sink's thread.
public protocol PushSource: Sendable {
    /// The stream begins: the source keeps `sink` and writes through it (on the sink's thread, see `execute`).
    func start(_ sink: any PushSink)
    /// The connection can take more after it could not (`sink.isWritable` was false).
    func writable()
    /// The connection closed.
    func stop()
}

/// The write side of a pushed stream: replies framed with the id of the request that opened it. Use it only on
/// its thread (`execute` gets there).
public protocol PushSink: Sendable {
    /// False while the peer does not read what was sent (the connection's buffer is above its high mark).
    var isWritable: Bool { get }
    func write(_ reply: Reply)
    func flush()
    /// Sends what was written, then closes; after `grace` the connection is closed even if the peer never read it.
    func close(after grace: Duration)
    /// Runs `work` on the sink's thread: queued to it from elsewhere; called there, at once (RDMA's poll thread), or
    /// at once only the first time in a turn of it and queued behind the turn after that (a TCP event loop: a turn's
    /// first push goes out without delay, the rest of the turn's together).
    func execute(_ work: @escaping @Sendable () -> Void)
}
