import GedsCarrier
import GedsCore
import GedsWire
import NIOCore
import NIOPosix
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Large reads over plain blocking sockets, received straight into their destination with `recv`: no
/// intermediate buffer and no copy in user space, which an event-loop channel cannot offer. Each read
/// has a connection of its own for its duration (taken from a per-peer idle pool), so it never holds up
/// the small requests multiplexed on the peer's event-loop connection. The blocking calls run on a
/// dedicated thread pool, never on the cooperative pool or an event loop.
public final class BulkReader: Sendable {
    private let threads: NIOThreadPool
    /// Idle connections by peer: raw sockets (`Int32`), as swift-system has no socket calls (recv, send).
    private let idle = Mutex<[Endpoint: [Int32]]>([:])
    private let nextID = Atomic<UInt64>(1)
    private let token: DeploymentToken?

    /// `token`: the deployment's, proved on each new connection (none: an open deployment).
    public init(threads: Int = 8, token: DeploymentToken? = nil) {
        self.token = token
        self.threads = NIOThreadPool(numberOfThreads: threads)
        self.threads.start()
    }

    public func shutdown() async {
        let sockets = idle.withLock { table in
            defer { table = [:] }
            return table.values.flatMap { $0 }
        }
        for socket in sockets { close(socket) }
        try? await threads.shutdownGracefully()
    }

    /// Reads `length` bytes of a blob at `offset` from `peer` into `sink.destination`.
    public func read(blob: BlobID, offset: UInt64, length: UInt64, from peer: Endpoint, peerName: String,
                     into sink: any ReadSink, timeoutMilliseconds: Int64) async throws(GedsError) -> UInt64 {
        guard UInt64(sink.destination.count) >= length else {
            throw GedsError(.invalidArgument, "destination of \(sink.destination.count) bytes is smaller than the read of \(length)")
        }
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        // The pool thread lets go of its closure only after this read has returned: the closure holds the
        // destination's address, not the sink, so a sink that owns its memory (a tier-0 mapping) ends with the
        // caller's last reference, not at some later moment on that thread.
        let destination = Destination(buffer: sink.destination)
        defer { withExtendedLifetime(sink) {} }
        do {
            return try await threads.runIfActive { [self] () throws(GedsError) -> UInt64 in
                let socket = try takeConnection(to: peer, peerName: peerName, timeoutMilliseconds: timeoutMilliseconds)
                do throws(GedsError) {
                    let got = try BulkReader.transfer(on: socket, id: id, blob: blob, offset: offset, length: length,
                                                      into: destination.buffer, peerName: peerName,
                                                      timeoutMilliseconds: timeoutMilliseconds)
                    idle.withLock { $0[peer, default: []].append(socket) }
                    return got
                } catch {
                    close(socket)
                    throw error
                }
            }
        } catch {
            throw GedsError.wrapping(error)
        }
    }

    // @unchecked: the sink's memory stays valid until the read returns (the caller keeps the sink), and only the
    // read writes it meanwhile.
    private struct Destination: @unchecked Sendable {
        let buffer: UnsafeMutableRawBufferPointer
    }

    private func takeConnection(to peer: Endpoint, peerName: String, timeoutMilliseconds: Int64) throws(GedsError) -> Int32 {
        if let socket = idle.withLock({ $0[peer]?.popLast() }) { return socket }
        let socket = try BlockingTCP.connect(to: peer, peerName: peerName, timeoutMilliseconds: timeoutMilliseconds)
        guard let token else { return socket }
        do throws(GedsError) {
            let context = ReceiveContext(socket: socket, peerName: peerName, timeoutMilliseconds: timeoutMilliseconds)
            try ClientHandshake.run(token: token, peer: "\(peerName) \(peer)") { (request) throws(GedsError) -> Reply in
                try context.exchange(request, id: nextID.wrappingAdd(1, ordering: .relaxed).oldValue)
            }
        } catch {
            close(socket)
            throw error
        }
        return socket
    }

    /// One request and its streamed answer; the connection is reusable afterwards only if this returns.
    static func transfer(on socket: Int32, id: UInt64, blob: BlobID, offset: UInt64, length: UInt64,
                         into destination: UnsafeMutableRawBufferPointer, peerName: String,
                         timeoutMilliseconds: Int64) throws(GedsError) -> UInt64 {
        let context = ReceiveContext(socket: socket, peerName: peerName, timeoutMilliseconds: timeoutMilliseconds)
        switch try context.exchange(.readBlob(blob: blob, offset: offset, length: length), id: id) {
        case .stream(let announced) where announced == length:
            break
        case .failure(let error):
            throw error
        default:
            throw GedsError(.protocolViolation, "unexpected answer from \(peerName) to a read")
        }
        var received: UInt64 = 0
        while received < length {
            let header = try context.header()
            guard header.kind == .data, header.requestID == id, UInt64(header.length) <= length - received else {
                throw GedsError(.protocolViolation, "\(peerName) sent data that does not belong to this read")
            }
            let start = Int(received)
            try context.receive(into: UnsafeMutableRawBufferPointer(rebasing: destination[start..<(start + Int(header.length))]),
                                streaming: true)
            received += UInt64(header.length)
        }
        return received
    }

    struct ReceiveContext {
        let socket: Int32
        let peerName: String
        let timeoutMilliseconds: Int64

        /// Sends a request and receives its one reply (the handshake's steps).
        func exchange(_ request: Request, id: UInt64) throws(GedsError) -> Reply {
            let frame = FrameEncoder.frame(request, id: id, allocator: ByteBufferAllocator())
            try frame.withUnsafeReadableBytes { (bytes) throws(GedsError) in try sendAll(socket, bytes, peerName: peerName) }
            let header = try header()
            guard header.kind == .reply, header.requestID == id || header.requestID == 0 else {
                throw GedsError(.protocolViolation, "\(peerName) answered out of turn")
            }
            var payload = try message(length: Int(header.length))
            return try Reply.decode(from: &payload)
        }

        func header() throws(GedsError) -> FrameHeader {
            var buffer = try message(length: FrameHeader.size)
            return try FrameHeader.read(from: &buffer)!
        }

        /// Receives exactly `length` bytes (already bounded by the frame header's check) into a buffer.
        func message(length: Int) throws(GedsError) -> ByteBuffer {
            let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: max(length, 1), alignment: 8)
            defer { raw.deallocate() }
            try receive(into: UnsafeMutableRawBufferPointer(rebasing: raw[..<length]), streaming: false)
            return ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: raw[..<length]))
        }

        /// Fills `buffer` completely; the socket's receive timeout is the progress deadline.
        func receive(into buffer: UnsafeMutableRawBufferPointer, streaming: Bool) throws(GedsError) {
            var done = 0
            while done < buffer.count {
                let got = retryingOnInterrupt { recv(socket, buffer.baseAddress! + done, buffer.count - done, Int32(MSG_WAITALL)) }
                if got > 0 {
                    done += got
                    continue
                }
                if got == 0 {
                    throw GedsError(.peerUnreachable, streaming
                        ? "\(peerName) closed the connection in the middle of a read"
                        : "\(peerName) closed the connection")
                }
                switch errno {
                case EAGAIN, EWOULDBLOCK:
                    throw GedsError(.timedOut, "read from \(peerName) made no progress for \(timeoutMilliseconds) ms")
                default:
                    throw GedsError(.peerUnreachable, "read from \(peerName) failed: \(describeErrno(errno))")
                }
            }
        }
    }

    static func sendAll(_ socket: Int32, _ bytes: UnsafeRawBufferPointer, peerName: String) throws(GedsError) {
        var done = 0
        while done < bytes.count {
            let sent = retryingOnInterrupt { send(socket, bytes.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            if sent < 0 {
                throw GedsError(.peerUnreachable, "cannot send to \(peerName): \(describeErrno(errno))")
            }
            done += sent
        }
    }
}
