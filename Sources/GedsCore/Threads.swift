#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// Starts a POSIX thread of its own running `body` (for blocking loops and long system calls, which must not hold a
/// thread of the cooperative pool or of an event loop); throws `pthread_create`'s error when no thread could be made.
/// The caller joins it or detaches it.
public func startThread(_ body: @escaping @Sendable () -> Void) throws(Errno) -> pthread_t {
    final class Body: Sendable {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }
    var thread = pthread_t()
    let context = Unmanaged.passRetained(Body(body)).toOpaque()
    let created = pthread_create(&thread, nil, { raw in
        Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue().run()
        return nil
    }, context)
    guard created == 0 else {
        Unmanaged<Body>.fromOpaque(context).release()
        throw Errno(rawValue: created)
    }
    return thread
}

/// `startThread`, detached (it ends on its own).
public func startDetachedThread(_ body: @escaping @Sendable () -> Void) throws(Errno) {
    pthread_detach(try startThread(body))
}
