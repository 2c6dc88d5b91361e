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
    /// A new object in the gedsd's tier 0, owned by this connection until sealed: answered `created(blob)`
    /// with the file's descriptor. A connection that closes first takes its unsealed objects with it.
    /// `replicas`: the object's replication factor and whether its seal waits for every copy (nil: the bucket's, waiting).
    case create(bucket: String, key: String, persistency: Persistency?, exclusive: Bool = false, replicas: Replicas? = nil)
    /// The client wrote `size` bytes into the file: the gedsd seals and publishes it (handing it off to the
    /// named node first when `handOffTo` is not empty).
    case seal(blob: BlobID, size: UInt64, metadata: [String: String], handOffTo: String)
    /// The sealed tier-0 file of the object, fetched into the gedsd's tier 0 first when it lives elsewhere:
    /// answered `count(size)` with a read-only descriptor.
    case view(ObjectInfo)
    /// Up to `length` bytes (at most `WireLimits.maximumDataPayload`) at `offset`: answered `stream(n)` and
    /// one data frame of n bytes. With an `info`, of that object; else of whatever `bucket/key` names now.
    case read(info: ObjectInfo?, bucket: String, key: String, offset: UInt64, length: UInt32)
    /// A whole small object (at most `maximumPutBytes`) in one request: the gedsd stores and seals it, answering
    /// `ok` once it is published (create + write + seal in one round trip; larger objects take that way).
    /// `persistency`: as `create`'s; `exclusive`: create-if-absent.
    case put(bucket: String, key: String, bytes: [UInt8], metadata: [String: String], persistency: Persistency?, exclusive: Bool)
    /// Moves the object to the named node (`GEDS.relocate`).
    case relocate(bucket: String, key: String, toNode: String)
    /// One of the API's metadata calls, in the MDS's own message (`createBucket`, `deleteBucket`, `listBuckets`,
    /// `setBucketStorage`, `bucketStorage`, `lookup`, `list`, `deleteObject`, `deletePrefix`, `rename`, `copy`,
    /// `setMetadata`, `listNodes`, `drainNode`, `flush`, `setBucketReplicas`, `bucketReplicas`): run as the gedsd's own API call (S3 follow-ups, read-through and
    /// merged listings included; `flush` waits for every node) and answered as that call.
    case call(Request)
}

private enum LocalRequestTag: UInt8 {
    case hello = 1, create, seal, view, read, relocate, call, put
}

extension LocalRequest {
    /// The largest object a `put` carries: the MDS's default inline limit, so its bytes go on with the seal.
    public static let maximumPutBytes = Int(InlineContents.defaultLimit)

    public func encode(into buffer: inout ByteBuffer) {
        switch self {
        case .hello(let pid, let mds):
            buffer.writeInteger(LocalRequestTag.hello.rawValue)
            buffer.writeInteger(pid)
            buffer.writeWireString(mds)
        case .create(let bucket, let key, let persistency, let exclusive, let replicas):
            buffer.writeInteger(LocalRequestTag.create.rawValue)
            buffer.writeWireStrings([bucket, key])
            buffer.writeOptionalPersistency(persistency)
            buffer.writeBool(exclusive)
            buffer.writeInteger(UInt8(replicas?.copies ?? 0))
            buffer.writeBool(replicas?.waitForAll ?? true)
        case .seal(let blob, let size, let metadata, let handOffTo):
            buffer.writeInteger(LocalRequestTag.seal.rawValue)
            buffer.writeBlob(blob)
            buffer.writeInteger(size)
            buffer.writeMetadata(metadata)
            buffer.writeWireString(handOffTo)
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
        case .put(let bucket, let key, let bytes, let metadata, let persistency, let exclusive):
            buffer.writeInteger(LocalRequestTag.put.rawValue)
            buffer.writeWireStrings([bucket, key])
            buffer.writeMetadata(metadata)
            buffer.writeOptionalPersistency(persistency)
            buffer.writeBool(exclusive)
            buffer.writeInteger(UInt32(bytes.count))
            buffer.writeBytes(bytes)
        case .relocate(let bucket, let key, let node):
            buffer.writeInteger(LocalRequestTag.relocate.rawValue)
            buffer.writeWireStrings([bucket, key, node])
        case .call(let request):
            buffer.writeInteger(LocalRequestTag.call.rawValue)
            request.encode(into: &buffer)
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
        case .create:
            let names = try payload.readNames(2)
            let persistency = try payload.readOptionalPersistency()
            let exclusive = try payload.readBool()
            let copies = try payload.readWireInteger("replicas", as: UInt8.self)
            let waitForAll = try payload.readBool()
            request = .create(bucket: names[0], key: names[1], persistency: persistency, exclusive: exclusive,
                              replicas: copies == 0 ? nil : try Replicas(copies: Int(copies), waitForAll: waitForAll))
        case .seal:
            request = .seal(blob: try payload.readBlob(), size: try payload.readWireInteger("size"),
                            metadata: try payload.readMetadata(), handOffTo: try payload.readWireString())
        case .view:
            request = .view(try payload.readObjectInfo())
        case .read:
            let names = try payload.readNames(2)
            let offset: UInt64 = try payload.readWireInteger("offset")
            let length: UInt32 = try payload.readWireInteger("length")
            let info = try payload.readBool() ? try payload.readObjectInfo() : nil
            request = .read(info: info, bucket: names[0], key: names[1], offset: offset, length: length)
        case .put:
            let names = try payload.readNames(2)
            let metadata = try payload.readMetadata()
            let persistency = try payload.readOptionalPersistency()
            let exclusive = try payload.readBool()
            let count = try payload.readCount(limit: LocalRequest.maximumPutBytes, what: "put bytes")
            request = .put(bucket: names[0], key: names[1], bytes: try payload.readFixedBytes(count, "put bytes"), metadata: metadata,
                           persistency: persistency, exclusive: exclusive)
        case .relocate:
            let names = try payload.readNames(3)
            request = .relocate(bucket: names[0], key: names[1], toNode: names[2])
        case .call:
            // The MDS message takes the rest of the payload (its decoder checks that it ends there).
            return .call(try Request.decode(from: &payload))
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
        FrameEncoder.append(kind: kind, id: id, to: &buffer, body: body)
        return Array(buffer.readableBytesView)
    }
}
