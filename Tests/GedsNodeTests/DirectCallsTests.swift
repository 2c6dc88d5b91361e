import GedsTestSupport
import GedsCore
import GedsNode
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
}
