import GedsCarrier
import GedsCore
import GedsNode
import GedsTCP

@_exported import struct GedsCore.NamespaceEvent
@_exported import struct GedsCore.EventScope
@_exported import struct GedsCore.ObjectName
@_exported import enum GedsCore.SubscriptionEnd
@_exported import class GedsNode.EventSubscription
@_exported import struct GedsCarrier.DeploymentToken
@_exported import class GedsTCP.TransportSecurity

extension GEDS {
    /// Subscribes to the changes in `scope` (a bucket, a key prefix, one key): every event after `revision`, from
    /// the MDS's history, then live; without `revision`, the changes from now on. Iterate the result
    /// (`for try await event in subscription`) or call `next(timeout:)`; `cancel()` ends it. It resumes by itself
    /// after a lost connection; it throws `compacted` when the history no longer reaches back to `revision`.
    public func subscribe(_ scope: EventScope, after revision: UInt64? = nil) async throws(GedsError) -> EventSubscription {
        _ = try BucketName(scope.bucket)
        if let attachment {
            return try await EventSubscription.open(scope, after: revision, mds: Endpoint(parsing: attachment.mds),
                                                    token: attachment.token, tls: attachment.tls)
        }
        return try await node.subscribe(scope, after: revision)
    }

    /// Returns once the object exists sealed: at once when it does (in GEDS or, read through, in its bucket's S3
    /// store), else when it is created in GEDS (sealed, copied or renamed to this name). Throws `timedOut` when
    /// `timeout` passes first; a cancelled task stops waiting at once (`timedOut`).
    public func wait(_ path: ObjectPath, timeout: Duration? = nil) async throws(GedsError) -> ObjectInfo {
        if let info = try await lookupIfSealed(path) { return info }
        let deadline = timeout.map { ContinuousClock.now + $0 }
        let target = ObjectName(bucket: path.bucket.rawValue, key: path.key.rawValue)
        func timedOut() -> GedsError {
            Task.isCancelled ? GedsError(.timedOut, "waiting for \(target) was cancelled")
                             : GedsError(.timedOut, "\(target) did not appear within \(timeout!)")
        }
        if attachment != nil { return try await waitBySubscribing(path, target: target, deadline: deadline, timedOut: timedOut) }
        // The MDS holds the call (no subscription, no lookup after the event): one reply carries the record. A lost
        // connection (an MDS restarting) is called again, as a subscription resumes.
        var pause = Duration.milliseconds(50)
        while true {
            let remaining = deadline.map { $0 - ContinuousClock.now } ?? GEDS.longestWaitCall
            guard remaining > .zero, !Task.isCancelled else { throw timedOut() }
            let milliseconds = UInt32(min(remaining, GEDS.longestWaitCall) / .milliseconds(1))
            do {
                if let info = try await node.waitForObject(bucket: target.bucket, key: target.key, milliseconds: max(milliseconds, 1)) {
                    return info
                }
            } catch where [.mdsUnreachable, .peerUnreachable, .timedOut].contains(error.code) && !Task.isCancelled {
                try? await Task.sleep(for: min(pause, remaining))
                pause = min(pause * 2, .seconds(1))
            }
        }
    }

    /// The longest one held wait call lasts; a longer wait calls again.
    static let longestWaitCall = Duration.seconds(60)

    /// `wait` for a process attached to a gedsd: a subscription straight at the MDS, confirmed before the second
    /// lookup so a seal between the two is never missed, then a lookup when the name is created.
    private func waitBySubscribing(_ path: ObjectPath, target: ObjectName, deadline: ContinuousClock.Instant?,
                                   timedOut: () -> GedsError) async throws(GedsError) -> ObjectInfo {
        let subscription = try await subscribe(.key(path.key.rawValue, in: path.bucket.rawValue))
        defer { subscription.cancel() }
        while true {
            if let info = try await lookupIfSealed(path) { return info }
            // Not there yet: wait for a change that makes it (a deletion or a bucket event is no reason to look).
            while true {
                let remaining = deadline.map { $0 - ContinuousClock.now }
                if let remaining, remaining <= .zero { throw timedOut() }
                if Task.isCancelled { throw timedOut() }
                if let event = try await subscription.next(timeout: remaining), event.name == target,
                   [.created, .renamed, .copied].contains(event.kind) { break }
            }
        }
    }

    public func wait(bucket: String, key: String, timeout: Duration? = nil) async throws(GedsError) -> ObjectInfo {
        let key = try ObjectKey(key)
        return try await wait(ObjectPath(bucket: BucketName(bucket), key: key), timeout: timeout)
    }

    /// The object's record, or nil while it does not exist (no bucket, no key, or not sealed yet).
    private func lookupIfSealed(_ path: ObjectPath) async throws(GedsError) -> ObjectInfo? {
        do {
            return try await stat(path)
        } catch where [.noSuchObject, .objectNotSealed, .noSuchBucket].contains(error.code) {
            return nil
        }
    }
}
