import CGeds
import GEDS
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A subscription C holds: its events come through `geds_next_event`; the subscription's readiness descriptor
/// (an eventfd) becomes readable whenever one may be waiting, for `poll`/`epoll` loops.
final class Subscription: Handle {
    static let cName = "geds_subscription_t"
    let events: EventSubscription
    let descriptor: Int32
    /// The strings of the event C holds now (malloc'd; addresses kept as numbers), freed on the next call.
    let current = Mutex<[UInt]>([])

    init(_ events: EventSubscription) throws(GedsError) {
        self.events = events
        descriptor = try events.readinessDescriptor()
    }

    deinit {
        events.cancel()
        releaseStrings()
    }

    func releaseStrings() {
        current.withLock { strings in
            for address in strings { free(UnsafeMutableRawPointer(bitPattern: address)) }
            strings = []
        }
    }
}

@_cdecl("geds_wait")
public func gedsWait(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?, _ timeoutMilliseconds: Int64) -> Int32 {
    runBlocking { () throws(GedsError) in
        let (geds, bucket, key) = try object(handle, bucket, key)
        let timeout: Duration? = timeoutMilliseconds < 0 ? nil : .milliseconds(timeoutMilliseconds)
        return { () async throws(GedsError) in _ = try await geds.wait(bucket: bucket, key: key, timeout: timeout) }
    }
}

@_cdecl("geds_subscribe")
public func gedsSubscribe(_ handle: OpaquePointer?, _ scope: Int32, _ bucket: CString?, _ name: CString?,
                          _ after: UnsafePointer<UInt64>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    runBlocking { () throws(GedsError) in
        let geds = try Handles.find(handle, as: Store.self).geds
        let bucket = try text(bucket, "bucket")
        let out = try output(out, "out")
        out.pointee = nil
        let chosen: EventScope
        switch scope {
        case Int32(GEDS_SCOPE_BUCKET): chosen = .bucket(bucket)
        case Int32(GEDS_SCOPE_PREFIX): chosen = .prefix(try text(name, "prefix"), in: bucket)
        case Int32(GEDS_SCOPE_KEY): chosen = .key(try text(name, "key"), in: bucket)
        default: throw GedsError(.invalidArgument, "scope \(scope) is not GEDS_SCOPE_BUCKET, _PREFIX or _KEY")
        }
        let revision = after?.pointee
        return { () async throws(GedsError) in try await geds.subscribe(chosen, after: revision) }
    } then: { (events: EventSubscription) throws(GedsError) in
        do throws(GedsError) {
            out?.pointee = Handles.register(try Subscription(events))
        } catch {
            events.cancel()
            throw error
        }
    }
}

@_cdecl("geds_next_event")
public func gedsNextEvent(_ handle: OpaquePointer?, _ timeoutMilliseconds: Int64, _ event: UnsafeMutablePointer<geds_event_t>?) -> Int32 {
    do throws(GedsError) {
        let subscription = try Handles.find(handle, as: Subscription.self)
        let event = try output(event, "event")
        subscription.releaseStrings()
        let timeout: Duration? = timeoutMilliseconds < 0 ? nil : .milliseconds(timeoutMilliseconds)
        // Woken straight by the thread that receives the event (no task, no semaphore in between).
        guard let next = try subscription.events.nextBlocking(timeout: timeout) else { return 0 }
        let source: ObjectName = next.source ?? ObjectName(bucket: "", key: "")
        let texts: [String] = [next.bucket, next.key, source.bucket, source.key]
        let strings = texts.map { strdup($0)! }
        subscription.current.withLock { $0 = strings.map { UInt(bitPattern: $0) } }
        event.pointee = geds_event_t(revision: next.revision, kind: Int32(next.kind.rawValue), bucket: strings[0],
                                     key: strings[1], source_bucket: strings[2], source_key: strings[3])
        return 1
    } catch {
        return fail(error)
    }
}

@_cdecl("geds_subscription_fd")
public func gedsSubscriptionFD(_ handle: OpaquePointer?) -> Int32 {
    do throws(GedsError) {
        return try Handles.find(handle, as: Subscription.self).descriptor
    } catch {
        return fail(error)
    }
}

@_cdecl("geds_subscription_revision")
public func gedsSubscriptionRevision(_ handle: OpaquePointer?, _ revision: UnsafeMutablePointer<UInt64>?) -> Int32 {
    run { () throws(GedsError) in
        try output(revision, "revision").pointee = try Handles.find(handle, as: Subscription.self).events.revision
    }
}

@_cdecl("geds_subscription_close")
public func gedsSubscriptionClose(_ handle: OpaquePointer?) {
    _ = run { () throws(GedsError) in _ = try Handles.remove(handle, as: Subscription.self) }
}
