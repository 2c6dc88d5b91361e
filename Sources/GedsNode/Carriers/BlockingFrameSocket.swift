import CLinux
import GedsCore
import GedsTCP
import GedsWire
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// One end of a blocking stream connection that carries whole frames: on a `gedsd`'s local socket (Unix, each frame
/// with at most one file descriptor beside it, `SCM_RIGHTS`), or to a TCP frame server (`connect(tcp:)`, as
/// `DirectCalls` uses it; never with descriptors). Used by one thread at a time; the owner closes it.
public struct BlockingFrameSocket: Sendable {
    public let descriptor: Int32
    /// Asked when a receive found nothing within the receive timeout: it throws to give up, or returns to wait on
    /// (nil: give up at once with `timedOut`).
    private var whenSilent: (@Sendable () throws(GedsError) -> Void)?

    public init(descriptor: Int32) {
        self.descriptor = descriptor
    }

    /// From now on a receive silent for `milliseconds` looks at the process at the other end of this Unix socket:
    /// one that is stopped (SIGSTOP, a debugger) or gone fails the call, one that runs is waited for (it may be busy
    /// with a long call: a write-through seal, a flush, a wait), until `limitMilliseconds` from now when given.
    /// `peer` names it in the error.
    public mutating func waitWhileThePeerRuns(_ peer: String, checkingEvery milliseconds: Int64, limitMilliseconds: Int64? = nil) {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        guard clinux_peer_credentials(descriptor, &pid, &uid, &gid) == 0, pid > 0 else { return }
        setReceiveTimeout(milliseconds: milliseconds)
        let deadline = limitMilliseconds.map { ContinuousClock.now + .milliseconds($0) }
        whenSilent = { [pid] () throws(GedsError) in
            switch ProcessState.of(pid) {
            case .running:
                if let deadline, let limitMilliseconds, ContinuousClock.now >= deadline {
                    throw GedsError(.timedOut, "\(peer) (pid \(pid)) runs but has not answered for \(limitMilliseconds) ms")
                }
                return
            case .stopped:
                throw GedsError(.timedOut, "\(peer) (pid \(pid)) is stopped and has not answered for \(milliseconds) ms")
            case .gone:
                throw GedsError(.peerUnreachable, "\(peer) (pid \(pid)) is gone")
            }
        }
    }

    /// Connects to the socket at `path`.
    public static func connect(to path: String) throws(GedsError) -> BlockingFrameSocket {
        switch try attemptConnection(to: path) {
        case .success(let socket): return socket
        case .failure(let failure): throw GedsError.io("cannot connect to gedsd at \(path)", errno: failure.code)
        }
    }

    /// Whether a socket file is left by a process that died: nobody listens on it (ECONNREFUSED).
    public static func isAbandoned(_ path: String) -> Bool {
        guard let attempt = try? attemptConnection(to: path) else { return false }
        switch attempt {
        case .success(let socket):
            socket.close()
            return false
        case .failure(let failure):
            return failure.code == ECONNREFUSED
        }
    }

    private struct ConnectFailure: Error { let code: Int32 }

    /// Thrown: the path or the socket call is at fault; returned as a failure: `connect`'s errno.
    private static func attemptConnection(to path: String) throws(GedsError) -> Result<BlockingFrameSocket, ConnectFailure> {
        var address = try socketAddress(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw GedsError.io("cannot make a Unix socket", errno: errno) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            let code = errno
            Glibc.close(fd)
            return .failure(ConnectFailure(code: code))
        }
        return .success(BlockingFrameSocket(descriptor: fd))
    }

    static func socketAddress(_ path: String) throws(GedsError) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.utf8.count < capacity else {
            throw GedsError(.invalidArgument, "socket path \(path) is longer than \(capacity - 1) bytes")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[path.utf8.count] = 0
        }
        return address
    }

    public func close() { _ = Glibc.close(descriptor) }

    /// How long a receive may wait before it fails with `timedOut` (0: for ever).
    public func setReceiveTimeout(milliseconds: Int64) {
        var limit = timeval(tv_sec: Int(milliseconds / 1000), tv_usec: Int(milliseconds % 1000) * 1000)
        _ = setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sends `bytes`, with `passing` (a descriptor, not closed here) beside the first of them.
    public func send(_ bytes: [UInt8], passing: Int32 = -1) throws(GedsError) {
        var done = 0
        var attached = passing
        while done < bytes.count {
            let sent = retryingOnInterrupt {
                bytes.withUnsafeBytes { clinux_send_with_fd(descriptor, $0.baseAddress! + done, $0.count - done, attached) }
            }
            if sent < 0 {
                throw GedsError.io("local socket", errno: errno)
            }
            attached = -1
            done += sent
        }
    }

    /// The next frame: its header, its payload, and the descriptor that came with it (-1 for none; the caller
    /// owns it). Nil when the peer closed the connection between frames.
    public func receiveFrame() throws(GedsError) -> (header: FrameHeader, payload: [UInt8], descriptor: Int32)? {
        var descriptor: Int32 = -1
        var head = [UInt8](repeating: 0, count: FrameHeader.size)
        do throws(GedsError) {
            guard try receive(into: &head, descriptor: &descriptor) else {
                return nil
            }
            let header = try LocalFrame.header(head)
            var payload = [UInt8](repeating: 0, count: Int(header.length))
            guard try receive(into: &payload, descriptor: &descriptor) else {
                throw GedsError(.protocolViolation, "the local socket closed in the middle of a frame")
            }
            return (header, payload, descriptor)
        } catch {
            if descriptor >= 0 { Glibc.close(descriptor) }
            throw error
        }
    }

    /// Fills `bytes`, as `receive(into:descriptor:)` below.
    public func receive(into bytes: inout [UInt8], descriptor: inout Int32) throws(GedsError) -> Bool {
        do {
            return try bytes.withUnsafeMutableBytes { try receive(into: $0, descriptor: &descriptor) }
        } catch {
            throw GedsError.wrapping(error)
        }
    }

    /// Fills `buffer`; false when the peer closed before the first byte. A descriptor arriving meanwhile is
    /// kept in `descriptor` (only the first).
    public func receive(into buffer: UnsafeMutableRawBufferPointer, descriptor: inout Int32) throws(GedsError) -> Bool {
        var done = 0
        while done < buffer.count {
            var passed: Int32 = -1
            let got = retryingOnInterrupt {
                clinux_receive_with_fd(self.descriptor, buffer.baseAddress! + done, buffer.count - done, &passed)
            }
            if passed >= 0 {
                if descriptor < 0 { descriptor = passed } else { Glibc.close(passed) }
            }
            if got < 0 {
                try afterFailedReceive(on: "local socket")
                continue
            }
            if got == 0 {
                if done == 0 { return false }
                throw GedsError(.protocolViolation, "the local socket closed in the middle of a frame")
            }
            done += got
        }
        return true
    }

    /// After a receive failed (call at once: it reads `errno`): returns when the time limit passed and `whenSilent`
    /// says to wait on; else throws (`timedOut`, or the error).
    fileprivate func afterFailedReceive(on transport: String) throws(GedsError) {
        let code = errno
        guard code == EAGAIN || code == EWOULDBLOCK else { throw GedsError.io(transport, errno: code) }
        guard let whenSilent else { throw GedsError(.timedOut, "no answer on the \(transport) within its time limit") }
        try whenSilent()
    }
}

extension BlockingFrameSocket {
    /// A blocking TCP connection to the MDS (see `BlockingTCP.connect`).
    static func connect(tcp endpoint: Endpoint, timeoutMilliseconds: Int64) throws(GedsError) -> BlockingFrameSocket {
        BlockingFrameSocket(descriptor: try BlockingTCP.connect(to: endpoint, peerName: "MDS", timeoutMilliseconds: timeoutMilliseconds))
    }

    /// Sends `frame` whole on a TCP connection (plain `send`: no descriptor rides on TCP).
    func send(tcp frame: ByteBuffer) throws(GedsError) {
        var rest = frame
        while rest.readableBytes > 0 {
            let sent = rest.withUnsafeReadableBytes { bytes in
                retryingOnInterrupt { Glibc.send(descriptor, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL)) }
            }
            guard sent >= 0 else { throw GedsError.io("TCP connection", errno: errno) }
            rest.moveReaderIndex(forwardBy: sent)
        }
    }

    /// The frame that answers the one request outstanding on a TCP connection, read into `buffer` (cleared first;
    /// grown only for a larger frame): the header and payload usually come in one `recv`. On return `buffer` holds
    /// exactly the payload. Nil when the peer closed before the first byte; bytes past the frame are a protocol
    /// violation (a request has one answer).
    func receiveFrame(tcp buffer: inout ByteBuffer) throws(GedsError) -> FrameHeader? {
        buffer.clear()
        var header: FrameHeader?
        while true {
            if header == nil, let complete = try FrameHeader.read(from: &buffer) {
                header = complete
                buffer.reserveCapacity(minimumWritableBytes: max(0, Int(complete.length) - buffer.readableBytes))
            }
            if let header, buffer.readableBytes >= Int(header.length) {
                guard buffer.readableBytes == Int(header.length) else {
                    throw GedsError(.protocolViolation, "\(buffer.readableBytes - Int(header.length)) bytes came after the answer to a request")
                }
                return header
            }
            var got = 0
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: FrameHeader.size) { free in
                got = retryingOnInterrupt { Glibc.recv(descriptor, free.baseAddress, free.count, 0) }
                return max(got, 0)
            }
            if got < 0 {
                try afterFailedReceive(on: "TCP connection")
                continue
            }
            if got == 0 {
                if header == nil && buffer.readableBytes == 0 { return nil }
                throw GedsError(.protocolViolation, "the TCP connection closed in the middle of a frame")
            }
        }
    }
}

/// What `/proc/PID/stat` says of a process.
enum ProcessState {
    case running, stopped, gone

    static func of(_ pid: Int32) -> ProcessState {
        guard let file = fopen("/proc/\(pid)/stat", "r") else { return .gone }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 512)
        guard fgets(&line, Int32(line.count), file) != nil else { return .gone }
        // "PID (COMMAND) STATE …": the command may hold spaces and parentheses, the state follows the last ')'.
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let close = text.lastIndex(of: ")") else { return .gone }
        switch text[close...].dropFirst().drop(while: { $0 == " " }).first {
        case "T", "t": return .stopped
        case "Z", "X", "x", nil: return .gone
        default: return .running
        }
    }
}
