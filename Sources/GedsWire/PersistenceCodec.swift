import GedsCore
import NIOCore

// The fields of the S3 persistence messages, in the same style as Codec.swift: fixed order, every string
// length-checked.

extension ByteBuffer {
    public mutating func writeS3Object(_ object: S3ObjectReference) {
        writeWireString(object.endpoint)
        writeWireString(object.bucket)
        writeWireString(object.key)
        writeWireString(object.region)
    }

    public mutating func readS3Object() throws(GedsError) -> S3ObjectReference {
        S3ObjectReference(endpoint: try readWireString(), bucket: try readWireString(), key: try readWireString(),
                          region: try readWireString())
    }

    public mutating func writeS3Objects(_ objects: [S3ObjectReference]) {
        writeInteger(UInt32(objects.count))
        for object in objects { writeS3Object(object) }
    }

    public mutating func readS3Objects() throws(GedsError) -> [S3ObjectReference] {
        let count = try readList(what: "S3 objects")
        var objects: [S3ObjectReference] = []
        for _ in 0..<count { objects.append(try readS3Object()) }
        return objects
    }

    mutating func writeWireStrings(_ strings: [String]) {
        writeInteger(UInt32(strings.count))
        for string in strings { writeWireString(string) }
    }

    mutating func readWireStrings(what: StaticString) throws(GedsError) -> [String] {
        let count = try readList(what: what)
        var strings: [String] = []
        for _ in 0..<count { strings.append(try readWireString()) }
        return strings
    }

    /// A persistency that may be absent (the bucket's then): a presence flag, then the value.
    mutating func readOptionalPersistency() throws(GedsError) -> Persistency? {
        try readBool() ? try readPersistency() : nil
    }

    mutating func writeOptionalPersistency(_ persistency: Persistency?) {
        writeBool(persistency != nil)
        if let persistency { writeInteger(persistency.rawValue) }
    }

    public mutating func readPersistency() throws(GedsError) -> Persistency {
        let raw = try readWireInteger("persistency", as: UInt8.self)
        guard let persistency = Persistency(rawValue: raw) else {
            throw GedsError(.protocolViolation, "malformed message: persistency \(raw)")
        }
        return persistency
    }

    /// A flag byte, then the storage when there is one.
    public mutating func writeOptionalBucketStorage(_ storage: BucketStorage?) {
        writeBool(storage != nil)
        guard let storage else { return }
        writeWireString(storage.endpoint)
        writeWireString(storage.bucket)
        writeWireString(storage.prefix)
        writeWireString(storage.region)
        writeInteger(storage.persistency.rawValue)
    }

    public mutating func readOptionalBucketStorage() throws(GedsError) -> BucketStorage? {
        guard try readBool() else { return nil }
        return BucketStorage(endpoint: try readWireString(), bucket: try readWireString(), prefix: try readWireString(),
                             region: try readWireString(), persistency: try readPersistency())
    }
}
