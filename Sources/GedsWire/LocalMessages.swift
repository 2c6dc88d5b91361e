import GedsCore
import NIOCore

/// What a process attached to its host's `gedsd` asks it over the local (Unix domain) socket. Frames are the
/// same as on every other port (`FrameHeader`); the answers are `Reply` values. A tier-0 file travels beside
/// a reply as a passed file descriptor (`SCM_RIGHTS`): `create` answers `created` with the writable file,
/// `view` answers `count(size)` with the sealed file.
public enum LocalRequest: Sendable, Equatable {
    /// First on every connection: the client's process id and the MDS it expects ("" for any); answered
    /// `nodes([the gedsd])`, or a failure when the gedsd refuses the peer or serves another MDS.
    case hello(pid: Int32, mds: String)
    case createBucket(String)
    case deleteBucket(String, force: Bool)
    case listBuckets
    case setBucketStorage(bucket: String, storage: BucketStorage?)
    case bucketStorage(bucket: String)
    /// A new object in the gedsd's tier 0, owned by this connection until sealed: answered `created(blob)`
    /// with the file's descriptor. A connection that closes first takes its unsealed objects with it.
    case create(bucket: String, key: String, persistency: Persistency?)
    /// The client wrote `size` bytes into the file: the gedsd seals and publishes it (handing it off to the
    /// named node first when `handOffTo` is not empty).
    case seal(blob: BlobID, size: UInt64, metadata: [String: String], handOffTo: String)
    case lookup(bucket: String, key: String)
    /// The sealed tier-0 file of the object, fetched into the gedsd's tier 0 first when it lives elsewhere:
    /// answered `count(size)` with a read-only descriptor.
    case view(ObjectInfo)
    /// Up to `length` bytes (at most `WireLimits.maximumDataPayload`) at `offset`: answered `stream(n)` and
    /// one data frame of n bytes. With an `info`, of that object; else of whatever `bucket/key` names now.
    case read(info: ObjectInfo?, bucket: String, key: String, offset: UInt64, length: UInt32)
    case list(bucket: String, prefix: String, delimiter: String, startAfter: String, maxKeys: UInt32)
    case deleteObject(bucket: String, key: String)
    case deletePrefix(bucket: String, prefix: String)
    case rename(fromBucket: String, fromKey: String, toBucket: String, toKey: String)
    case copy(fromBucket: String, fromKey: String, toBucket: String, toKey: String)
    case setMetadata(bucket: String, key: String, metadata: [String: String])
    case listNodes
    case flush(timeoutMilliseconds: UInt64)
    case relocate(bucket: String, key: String, toNode: String)
}

private enum LocalRequestTag: UInt8 {
    case hello = 1, createBucket, deleteBucket, listBuckets, setBucketStorage, bucketStorage, create, seal, lookup,
         view, read, list, deleteObject, deletePrefix, rename, copy, setMetadata, listNodes, flush, relocate
}

extension LocalRequest {
    public func encode(into buffer: inout ByteBuffer) {
        switch self {
        case .hello(let pid, let mds):
            buffer.writeInteger(LocalRequestTag.hello.rawValue)
            buffer.writeInteger(pid)
            buffer.writeWireString(mds)
        case .createBucket(let bucket):
            buffer.writeInteger(LocalRequestTag.createBucket.rawValue)
            buffer.writeWireString(bucket)
        case .deleteBucket(let bucket, let force):
            buffer.writeInteger(LocalRequestTag.deleteBucket.rawValue)
            buffer.writeWireString(bucket)
            buffer.writeBool(force)
        case .listBuckets:
            buffer.writeInteger(LocalRequestTag.listBuckets.rawValue)
        case .setBucketStorage(let bucket, let storage):
            buffer.writeInteger(LocalRequestTag.setBucketStorage.rawValue)
            buffer.writeWireString(bucket)
            buffer.writeOptionalBucketStorage(storage)
        case .bucketStorage(let bucket):
            buffer.writeInteger(LocalRequestTag.bucketStorage.rawValue)
            buffer.writeWireString(bucket)
        case .create(let bucket, let key, let persistency):
            buffer.writeInteger(LocalRequestTag.create.rawValue)
            buffer.writeWireStrings([bucket, key])
            buffer.writeBool(persistency != nil)
            if let persistency { buffer.writeInteger(persistency.rawValue) }
        case .seal(let blob, let size, let metadata, let handOffTo):
            buffer.writeInteger(LocalRequestTag.seal.rawValue)
            buffer.writeInteger(blob)
            buffer.writeInteger(size)
            buffer.writeMetadata(metadata)
            buffer.writeWireString(handOffTo)
        case .lookup(let bucket, let key):
            buffer.writeInteger(LocalRequestTag.lookup.rawValue)
            buffer.writeWireStrings([bucket, key])
        case .view(let info):
            buffer.writeInteger(LocalRequestTag.view.rawValue)
            buffer.writeObjectInfo(info)
        case .read(let info, let bucket, let key, let offset, let length):
            buffer.writeInteger(LocalRequestTag.read.rawValue)
            buffer.writeWireStrings([bucket, key])
            buffer.writeInteger(offset)
            buffer.writeInteger(length)
            buffer.writeBool(info != nil)
            if let info { buffer.writeObjectInfo(info) }
        case .list(let bucket, let prefix, let delimiter, let startAfter, let maxKeys):
            buffer.writeInteger(LocalRequestTag.list.rawValue)
            buffer.writeWireStrings([bucket, prefix, delimiter, startAfter])
            buffer.writeInteger(maxKeys)
        case .deleteObject(let bucket, let key):
            buffer.writeInteger(LocalRequestTag.deleteObject.rawValue)
            buffer.writeWireStrings([bucket, key])
        case .deletePrefix(let bucket, let prefix):
            buffer.writeInteger(LocalRequestTag.deletePrefix.rawValue)
            buffer.writeWireStrings([bucket, prefix])
        case .rename(let fromBucket, let fromKey, let toBucket, let toKey):
            buffer.writeInteger(LocalRequestTag.rename.rawValue)
            buffer.writeWireStrings([fromBucket, fromKey, toBucket, toKey])
        case .copy(let fromBucket, let fromKey, let toBucket, let toKey):
            buffer.writeInteger(LocalRequestTag.copy.rawValue)
            buffer.writeWireStrings([fromBucket, fromKey, toBucket, toKey])
        case .setMetadata(let bucket, let key, let metadata):
            buffer.writeInteger(LocalRequestTag.setMetadata.rawValue)
            buffer.writeWireStrings([bucket, key])
            buffer.writeMetadata(metadata)
        case .listNodes:
            buffer.writeInteger(LocalRequestTag.listNodes.rawValue)
        case .flush(let timeout):
            buffer.writeInteger(LocalRequestTag.flush.rawValue)
            buffer.writeInteger(timeout)
        case .relocate(let bucket, let key, let node):
            buffer.writeInteger(LocalRequestTag.relocate.rawValue)
            buffer.writeWireStrings([bucket, key, node])
        }
    }

    public static func decode(from payload: inout ByteBuffer) throws(GedsError) -> LocalRequest {
        let raw = try payload.readWireInteger("tag", as: UInt8.self)
        guard let tag = LocalRequestTag(rawValue: raw) else {
            throw GedsError(.protocolViolation, "malformed message: unknown local request tag \(raw)")
        }
        let request: LocalRequest
        switch tag {
        case .hello:
            request = .hello(pid: try payload.readWireInteger("pid"), mds: try payload.readWireString())
        case .createBucket:
            request = .createBucket(try payload.readWireString())
        case .deleteBucket:
            request = .deleteBucket(try payload.readWireString(), force: try payload.readBool())
        case .listBuckets:
            request = .listBuckets
        case .setBucketStorage:
            request = .setBucketStorage(bucket: try payload.readWireString(), storage: try payload.readOptionalBucketStorage())
        case .bucketStorage:
            request = .bucketStorage(bucket: try payload.readWireString())
        case .create:
            let names = try payload.readNames(2)
            request = .create(bucket: names[0], key: names[1], persistency: try payload.readBool() ? try payload.readPersistency() : nil)
        case .seal:
            request = .seal(blob: try payload.readWireInteger("blob"), size: try payload.readWireInteger("size"),
                            metadata: try payload.readMetadata(), handOffTo: try payload.readWireString())
        case .lookup:
            let names = try payload.readNames(2)
            request = .lookup(bucket: names[0], key: names[1])
        case .view:
            request = .view(try payload.readObjectInfo())
        case .read:
            let names = try payload.readNames(2)
            let offset: UInt64 = try payload.readWireInteger("offset")
            let length: UInt32 = try payload.readWireInteger("length")
            let info = try payload.readBool() ? try payload.readObjectInfo() : nil
            request = .read(info: info, bucket: names[0], key: names[1], offset: offset, length: length)
        case .list:
            let names = try payload.readNames(4)
            request = .list(bucket: names[0], prefix: names[1], delimiter: names[2], startAfter: names[3],
                            maxKeys: try payload.readWireInteger("maxKeys"))
        case .deleteObject:
            let names = try payload.readNames(2)
            request = .deleteObject(bucket: names[0], key: names[1])
        case .deletePrefix:
            let names = try payload.readNames(2)
            request = .deletePrefix(bucket: names[0], prefix: names[1])
        case .rename:
            let names = try payload.readNames(4)
            request = .rename(fromBucket: names[0], fromKey: names[1], toBucket: names[2], toKey: names[3])
        case .copy:
            let names = try payload.readNames(4)
            request = .copy(fromBucket: names[0], fromKey: names[1], toBucket: names[2], toKey: names[3])
        case .setMetadata:
            let names = try payload.readNames(2)
            request = .setMetadata(bucket: names[0], key: names[1], metadata: try payload.readMetadata())
        case .listNodes:
            request = .listNodes
        case .flush:
            request = .flush(timeoutMilliseconds: try payload.readWireInteger("timeout"))
        case .relocate:
            let names = try payload.readNames(3)
            request = .relocate(bucket: names[0], key: names[1], toNode: names[2])
        }
        try payload.expectEnd()
        return request
    }
}

extension ByteBuffer {
    /// Exactly `count` strings written by `writeWireStrings`.
    mutating func readNames(_ count: Int) throws(GedsError) -> [String] {
        let names = try readWireStrings(what: "names")
        guard names.count == count else {
            throw GedsError(.protocolViolation, "malformed message: \(names.count) names where \(count) belong")
        }
        return names
    }

    /// An object record, carried as the `Reply.object` encoding with its length first (one codec for it).
    mutating func writeObjectInfo(_ info: ObjectInfo) {
        var encoded = ByteBuffer()
        Reply.object(info).encode(into: &encoded)
        writeInteger(UInt32(encoded.readableBytes))
        writeBuffer(&encoded)
    }

    mutating func readObjectInfo() throws(GedsError) -> ObjectInfo {
        let count = try readCount(limit: Int(WireLimits.maximumMessagePayload), what: "object record")
        var encoded = readSlice(length: count)!
        guard case .object(let info) = try Reply.decode(from: &encoded) else {
            throw GedsError(.protocolViolation, "malformed message: not an object record")
        }
        return info
    }
}

/// Frames for the local socket, carried on a byte stream: the header, then the payload.
public enum LocalFrame {
    public static func bytes(_ request: LocalRequest, id: UInt64) -> [UInt8] {
        framed(kind: .request, id: id) { request.encode(into: &$0) }
    }

    public static func bytes(_ reply: Reply, id: UInt64) -> [UInt8] {
        framed(kind: .reply, id: id) { reply.encode(into: &$0) }
    }

    /// A reply followed by one data frame holding `data` (an answer to `read`).
    public static func bytes(_ reply: Reply, id: UInt64, data: UnsafeRawBufferPointer) -> [UInt8] {
        var frame = bytes(reply, id: id)
        var header = ByteBuffer()
        FrameHeader(kind: .data, requestID: id, length: UInt32(data.count)).write(to: &header)
        frame += header.readableBytesView
        frame += data
        return frame
    }

    /// The header at the start of `bytes` (16 of them), checked as on every port.
    public static func header(_ bytes: [UInt8]) throws(GedsError) -> FrameHeader {
        var buffer = ByteBuffer(bytes: bytes)
        guard let header = try FrameHeader.read(from: &buffer) else {
            throw GedsError(.protocolViolation, "a frame header of \(bytes.count) bytes is too short")
        }
        return header
    }

    public static func request(from payload: [UInt8]) throws(GedsError) -> LocalRequest {
        var buffer = ByteBuffer(bytes: payload)
        return try LocalRequest.decode(from: &buffer)
    }

    public static func reply(from payload: [UInt8]) throws(GedsError) -> Reply {
        var buffer = ByteBuffer(bytes: payload)
        return try Reply.decode(from: &buffer)
    }

    private static func framed(kind: FrameHeader.Kind, id: UInt64, body: (inout ByteBuffer) -> Void) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeRepeatingByte(0, count: FrameHeader.size)
        body(&buffer)
        FrameHeader(kind: kind, requestID: id, length: UInt32(buffer.readableBytes - FrameHeader.size)).set(in: &buffer, at: 0)
        return Array(buffer.readableBytesView)
    }
}
