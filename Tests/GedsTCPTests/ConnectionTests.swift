import GedsCore
@testable import GedsTCP
import GedsTestSupport
import GedsWire
import NIOCore
import NIOPosix
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A call on a multiplexed connection ends within its timeout, with a clear error, whatever the peer does: dies
/// before the call is written (as an MDS killed with SIGKILL between a pool's check and the write), or accepts and
/// never answers.
@Suite struct ConnectionTests {
    @Test func callOnAConnectionThePeerClosedFailsAtOnce() async throws {
        let listener = try LoopbackListener()
        defer { listener.close() }
        let connection = try await Connection.connect(to: listener.endpoint, peerName: "MDS", group: MultiThreadedEventLoopGroup.singleton)
        listener.acceptAndClose()
        // Once the channel is closed its pipeline is gone: a call written now never reaches the handler that
        // matches replies and enforces timeouts.
        try await connection.channel.closeFuture.get()
        let outcome = await finishing(withinSeconds: 5) {
            await gedsError { _ = try await connection.call(.listBuckets, timeout: .seconds(1)) }
        }
        let error = try #require(outcome, "the call hung")
        #expect(error?.code == .peerUnreachable, "\(String(describing: error))")
    }

    @Test func callToAPeerThatNeverAnswersTimesOut() async throws {
        let listener = try LoopbackListener()  // the kernel completes the connection; nobody reads it
        defer { listener.close() }
        let connection = try await Connection.connect(to: listener.endpoint, peerName: "MDS", group: MultiThreadedEventLoopGroup.singleton)
        defer { connection.close() }
        let outcome = await finishing(withinSeconds: 5) {
            await gedsError { _ = try await connection.call(.listBuckets, timeout: .milliseconds(500)) }
        }
        let error = try #require(outcome, "the call hung")
        #expect(error?.code == .timedOut, "\(String(describing: error))")
    }
}

/// A listening loopback TCP socket that accepts only when told to.
private struct LoopbackListener {
    let descriptor: Int32
    let endpoint: Endpoint

    init() throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = descriptor
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                bind(fd, address, length) == 0 && listen(fd, 4) == 0 && getsockname(fd, address, &length) == 0
            }
        }
        guard bound else { throw GedsError.io("cannot listen on loopback", errno: errno) }
        endpoint = Endpoint(host: "127.0.0.1", port: Int(UInt16(bigEndian: address.sin_port)))
    }

    /// Takes the connection waiting in the backlog and closes it: the client sees the peer go.
    func acceptAndClose() {
        let accepted = accept(descriptor, nil, nil)
        if accepted >= 0 { Glibc.close(accepted) }
    }

    func close() { Glibc.close(descriptor) }
}

/// What `body` returns, or nil when it has not returned after `seconds` (it is left running: a hung call cannot
/// be cancelled, and the test must fail rather than hang with it).
private func finishing<T: Sendable>(withinSeconds seconds: Int, _ body: @escaping @Sendable () async -> T) async -> T? {
    let waiter = Waiter<T>()
    return await withCheckedContinuation { continuation in
        waiter.set(continuation)
        Task { waiter.resume(with: await body()) }
        Task {
            try? await Task.sleep(for: .seconds(seconds))
            waiter.resume(with: nil)
        }
    }
}

/// Resumes a continuation once, with whichever result comes first.
private final class Waiter<T: Sendable>: Sendable {
    private let continuation = Mutex<CheckedContinuation<T?, Never>?>(nil)

    func set(_ waiting: CheckedContinuation<T?, Never>) {
        continuation.withLock { $0 = waiting }
    }

    func resume(with value: T?) {
        continuation.withLock { $0.take() }?.resume(returning: value)
    }
}
