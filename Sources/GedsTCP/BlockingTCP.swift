import GedsCore
#if canImport(Glibc)
import Glibc
#endif

/// Blocking TCP connections, for callers that wait on their own thread (bulk reads, direct MDS calls).
public enum BlockingTCP {
    /// A connected descriptor (the caller closes it), trying each address `peer.host` resolves to: no Nagle delay,
    /// and the connect, sends and receives fail after `timeoutMilliseconds`. `mdsUnreachable` when `peerName` is
    /// "MDS", else `peerUnreachable`, as for the multiplexed connections. A raw `Int32`: swift-system has no sockets.
    public static func connect(to peer: Endpoint, peerName: String, timeoutMilliseconds: Int64) throws(GedsError) -> Int32 {
        let unreachable: GedsError.Code = peerName == "MDS" ? .mdsUnreachable : .peerUnreachable
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let resolved = getaddrinfo(peer.host, String(peer.port), &hints, &list)
        guard resolved == 0, let first = list else {
            throw GedsError(unreachable, "\(peerName) unreachable at \(peer): cannot resolve \(peer.host) "
                            + "(\(String(cString: gai_strerror(resolved))))")
        }
        defer { freeaddrinfo(list) }
        var timeout = timeval(tv_sec: Int(timeoutMilliseconds / 1000), tv_usec: Int(timeoutMilliseconds % 1000) * 1000)
        var one: Int32 = 1
        var lastError: Int32 = 0
        for address in sequence(first: first, next: { $0.pointee.ai_next }) {
            let socket = Glibc.socket(address.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard socket >= 0 else {
                lastError = errno
                continue
            }
            setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(socket, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            // With SO_SNDTIMEO set, a connect that cannot complete in time fails with EINPROGRESS.
            if Glibc.connect(socket, address.pointee.ai_addr, address.pointee.ai_addrlen) == 0 { return socket }
            lastError = errno
            close(socket)
        }
        throw GedsError(unreachable, "\(peerName) unreachable at \(peer): \(describeErrno(lastError))")
    }
}
