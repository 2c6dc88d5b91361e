import GedsCore
import NIOCore

// Events and scopes on the wire: an event is revision u64 | kind u8 | bucket | key | flag (+ source bucket,
// source key); a scope is kind u8 | bucket | prefix or key.

extension ByteBuffer {
    mutating func writeEvent(_ event: NamespaceEvent) {
        writeInteger(event.revision)
        writeInteger(event.kind.rawValue)
        writeWireString(event.bucket)
        writeWireString(event.key)
        writeBool(event.source != nil)
        if let source = event.source {
            writeWireString(source.bucket)
            writeWireString(source.key)
        }
    }

    mutating func readEvent() throws(GedsError) -> NamespaceEvent {
        let revision: UInt64 = try readWireInteger("revision")
        let raw = try readWireInteger("event kind", as: UInt8.self)
        guard let kind = NamespaceEvent.Kind(rawValue: raw) else {
            throw GedsError(.protocolViolation, "malformed message: event kind \(raw)")
        }
        let bucket = try readWireString()
        let key = try readWireString()
        let source = try readBool() ? ObjectName(bucket: try readWireString(), key: try readWireString()) : nil
        return NamespaceEvent(revision: revision, kind: kind, bucket: bucket, key: key, source: source)
    }

    mutating func writeEventScope(_ scope: EventScope) {
        writeInteger(scope.kind.rawValue)
        writeWireString(scope.bucket)
        writeWireString(scope.key)
    }

    mutating func readEventScope() throws(GedsError) -> EventScope {
        let raw = try readWireInteger("scope kind", as: UInt8.self)
        guard let kind = EventScope.Kind(rawValue: raw) else {
            throw GedsError(.protocolViolation, "malformed message: subscription scope \(raw)")
        }
        return EventScope(kind: kind, bucket: try readWireString(), key: try readWireString())
    }
}
