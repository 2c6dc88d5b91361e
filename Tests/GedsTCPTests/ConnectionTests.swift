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
        let outcome = await finishing(withinSeconds: 30) {
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
        let outcome = await finishing(withinSeconds: 30) {
            await gedsError { _ = try await connection.call(.listBuckets, timeout: .milliseconds(500)) }
        }
        let error = try #require(outcome, "the call hung")
        #expect(error?.code == .timedOut, "\(String(describing: error))")
    }

    /// TLS: a peer that accepts and then says nothing (a server without TLS waiting for the rest of a frame) fails
    /// `connect` at its timeout, naming the handshake, instead of hanging.
    @Test func tlsHandshakeWithAPeerThatNeverAnswersTimesOut() async throws {
        let listener = try LoopbackListener()
        defer { listener.close() }
        let authority = try TemporaryFile(contents: ConnectionTests.testAuthority)
        defer { authority.remove() }
        let tls = try TransportSecurity(TransportSecurity.Files(authority: authority.path))
        let outcome = await finishing(withinSeconds: 30) {
            await gedsError {
                _ = try await Connection.connect(to: listener.endpoint, peerName: "MDS", group: MultiThreadedEventLoopGroup.singleton,
                                                 timeout: .milliseconds(500), tls: tls)
            }
        }
        let error = try #require(outcome, "connect hung")
        #expect(error?.code == .timedOut, "\(String(describing: error))")
        #expect(error?.message.contains("TLS handshake with MDS 127.0.0.1") == true, "\(String(describing: error))")
    }

    @Test func tlsFilesAreCheckedUpFront() throws {
        let authority = try TemporaryFile(contents: ConnectionTests.testAuthority)
        defer { authority.remove() }
        let garbage = try TemporaryFile(contents: "not a certificate\n")
        defer { garbage.remove() }
        let keyAlone = gedsError { _ = try TransportSecurity(TransportSecurity.Files(key: authority.path)) }
        #expect(keyAlone?.message.contains("needs --tls-cert") == true, "\(String(describing: keyAlone))")
        let notPEM = gedsError { _ = try TransportSecurity(TransportSecurity.Files(authority: garbage.path)) }
        #expect(notPEM?.message.contains("is not valid PEM") == true, "\(String(describing: notPEM))")
        let missing = gedsError { _ = try TransportSecurity(TransportSecurity.Files(authority: garbage.path + ".missing")) }
        #expect(missing?.message.contains("cannot read the TLS CA") == true, "\(String(describing: missing))")
        // A client-only configuration cannot serve, and says what is missing.
        let clientOnly = try TransportSecurity(TransportSecurity.Files(authority: authority.path))
        let serving = gedsError { try clientOnly.checkServes() }
        #expect(serving?.message.contains("serving over TLS needs --tls-cert and --tls-key") == true)
    }

    /// A self-signed CA certificate (EC P-256, valid until 2126), made with `openssl req -x509`: enough for a client.
    static let testAuthority = """
-----BEGIN CERTIFICATE-----
MIIBnzCCAUWgAwIBAgIURAFngqZ02gjXEEtHVuaFyGe1eMIwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRZ2Vkcy11bml0LXRlc3QtY2EwIBcNMjYxMjA2MTUyNDQzWhgP
MjEyNjExMTIxNTI0NDNaMBwxGjAYBgNVBAMMEWdlZHMtdW5pdC10ZXN0LWNhMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEY2Q8bfPpeu3V6OgIx4Deah6jqOvaQ4h1
ieQo3JMJwUYsNu0d557jCOhHCME7S2dI1k8U8g7NM4SzydnwGOtOC6NjMGEwHQYD
VR0OBBYEFEhWktxaobMt0417Cv0cMcmeGBwJMB8GA1UdIwQYMBaAFEhWktxaobMt
0417Cv0cMcmeGBwJMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgIEMAoG
CCqGSM49BAMCA0gAMEUCIQC7UOMcJb4HQIHfYaWdUXETEEiIJu1HdahPl2KYUq80
YgIgITP//xjSWNeVeoHV7RkGgCH+apVg7trPwu6le1hTJLA=
-----END CERTIFICATE-----
"""
}

/// A file with `contents` in /tmp, for the test to remove.
struct TemporaryFile {
    let path: String

    init(contents: String) throws {
        var template = Array("/tmp/geds-tcp-test-XXXXXX".utf8CString)
        let descriptor = mkstemp(&template)
        guard descriptor >= 0 else { throw GedsError.io("cannot create a temporary file", errno: errno) }
        path = String(cString: template)
        let bytes = Array(contents.utf8)
        let written = write(descriptor, bytes, bytes.count)
        Glibc.close(descriptor)
        guard written == bytes.count else { throw GedsError.io("cannot write \(path)", errno: errno) }
    }

    func remove() { unlink(path) }
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
