import CVerbs
import GedsCore
#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 socket address, resolved once, in the form rdmacm takes.
struct SocketAddress: Sendable {
    private var storage = sockaddr_storage()
    private var length = socklen_t(0)

    static func resolve(_ endpoint: Endpoint) throws(RDMAError) -> SocketAddress {
        try resolve(host: endpoint.host, port: endpoint.port)
    }

    static func resolve(host: String, port: Int) throws(RDMAError) -> SocketAddress {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let list, let first = list.pointee.ai_addr else {
            let text = status == 0 ? "no address" : String(cString: gai_strerror(status))
            throw RDMAError(.invalidArgument, "cannot resolve \(host): \(text)")
        }
        defer { freeaddrinfo(list) }
        var address = SocketAddress()
        address.length = list.pointee.ai_addrlen
        withUnsafeMutableBytes(of: &address.storage) { target in
            target.copyMemory(from: UnsafeRawBufferPointer(start: first, count: Int(list.pointee.ai_addrlen)))
        }
        return address
    }

    mutating func withSockaddr<R>(_ body: (UnsafeMutablePointer<sockaddr>) -> R) -> R {
        withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0) }
        }
    }
}

/// Monotonic time in nanoseconds, and deadlines on it.
enum Clock {
    static func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }

    static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0 else { return 0 }
        let whole = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if whole.overflow { return UInt64.max / 2 }
        return whole.partialValue + UInt64(attoseconds / 1_000_000_000)
    }

    static func deadline(after duration: Duration) -> UInt64 {
        let (sum, overflow) = now().addingReportingOverflow(nanoseconds(duration))
        return overflow ? UInt64.max : sum
    }
}

extension Duration {
    var readable: String {
        let (seconds, attoseconds) = components
        let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(milliseconds) ms"
    }
}
