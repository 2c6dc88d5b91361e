import Foundation
import GedsTestSupport
import GedsCore
import GedsNode
import GedsWire
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Blocking calls on the caller's thread: a server that is not there, or that closes a pooled connection, gives a
/// clear error or a fresh connection, never a hang or a wrong reply.
@Suite struct DirectCallsTests {
    @Test func nobodyListeningIsUnreachable() throws {
        // A port just freed: bound, then closed without listening.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = bind(fd, $0, length); _ = getsockname(fd, $0, &length) }
        }
        let port = Int(UInt16(bigEndian: address.sin_port))
        close(fd)
        let calls = DirectCalls(endpoint: Endpoint(host: "127.0.0.1", port: port), timeoutMilliseconds: 1000)
        #expect(gedsError { _ = try calls.call(.lookup(bucket: "bucket", key: "k")) }?.code == .mdsUnreachable)
        let unresolvable = DirectCalls(endpoint: Endpoint(host: "no-such-host.invalid", port: 1), timeoutMilliseconds: 1000)
        #expect(gedsError { _ = try unresolvable.call(.lookup(bucket: "bucket", key: "k")) }?.code == .mdsUnreachable)
    }

    /// Threads calling at once each get their own answer, replies larger than a call's first buffer arrive whole, and
    /// connections are used again (the server sees at most one per thread).
    @Test func concurrentCallersGetTheirOwnRepliesOnReusedConnections() throws {
        let server = try EchoServer()
        defer { server.stop() }
        let calls = DirectCalls(endpoint: Endpoint(host: "127.0.0.1", port: server.port), timeoutMilliseconds: 5000)
        let threads = 8
        let callsEach = 200
        let mismatches = Atomic<Int>(0)
        let finished = Atomic<Int>(0)
        for thread in 0..<threads {
            Thread.detachNewThread {
                for index in 0..<callsEach {
                    // Every 10th reply is about 12 KiB: more than a call's first buffer.
                    let key = String(repeating: "k", count: index % 10 == 0 ? 3000 : 10) + "-\(thread)-\(index)"
                    let expected = Reply.buckets(EchoServer.names(for: key))
                    if (try? calls.call(.lookup(bucket: "bucket", key: key))) != expected {
                        mismatches.add(1, ordering: .relaxed)
                    }
                }
                finished.add(1, ordering: .releasing)
            }
        }
        while finished.load(ordering: .acquiring) < threads { usleep(10_000) }
        #expect(mismatches.load(ordering: .relaxed) == 0)
        #expect(server.accepted.load(ordering: .relaxed) <= threads)
    }
}

/// A TCP server answering each `lookup` with `.buckets(names(for: key))`, one thread per connection.
private final class EchoServer: Sendable {
    let port: Int
    let accepted = Atomic<Int>(0)
    private let listener: Int32

    static func names(for key: String) -> [String] { [key, "bucket", key, key] }

    init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) == 0 && getsockname(listener, $0, &length) == 0 }
        }
        try #require(bound && listen(listener, 64) == 0)
        port = Int(UInt16(bigEndian: address.sin_port))
        self.listener = listener
        Thread.detachNewThread { [self] in
            while true {
                let connection = accept(listener, nil, nil)
                guard connection >= 0 else { return }
                accepted.add(1, ordering: .relaxed)
                Thread.detachNewThread { EchoServer.serve(BlockingFrameSocket(descriptor: connection)) }
            }
        }
    }

    private static func serve(_ socket: BlockingFrameSocket) {
        defer { socket.close() }
        while let frame = try? socket.receiveFrame() {
            let header = frame.header
            let headerBytes = [0x47, 0x45, FrameHeader.version, header.kind.rawValue] + bigEndian(header.requestID) + bigEndian(header.length)
            guard case .lookup(_, let key)? = try? WholeFrame.request(from: headerBytes + frame.payload).request,
                  (try? socket.send(LocalFrame.bytes(.buckets(names(for: key)), id: frame.header.requestID))) != nil else { return }
        }
    }

    private static func bigEndian<Integer: FixedWidthInteger>(_ value: Integer) -> [UInt8] {
        withUnsafeBytes(of: value.bigEndian) { Array($0) }
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }
}
