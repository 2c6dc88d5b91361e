import GedsCore
import NIOCore

// Every field is written in a fixed order; strings and lists carry their length first and every length is
// checked against `WireLimits` before it is used, so a malformed payload fails cleanly without allocating.

extension ByteBuffer {
    @inlinable public mutating func writeWireString(_ value: String) {
        writeInteger(UInt32(value.utf8.count))
        writeString(value)
    }

    public mutating func readWireString() throws(GedsError) -> String {
        let count = try readCount(limit: WireLimits.maximumString, what: "string")
        guard let value = readString(length: count) else { throw WireDecodingError.truncated("string") }
        return value
    }

    public mutating func writeBlob(_ blob: BlobID) {
        writeInteger(blob.rawValue)
    }

    public mutating func readBlob(_ what: StaticString = "blob") throws(GedsError) -> BlobID {
        BlobID(try readWireInteger(what, as: UInt64.self))
    }

    public mutating func readWireInteger<T: FixedWidthInteger>(_ what: StaticString, as: T.Type = T.self) throws(GedsError) -> T {
        guard let value = readInteger(as: T.self) else { throw WireDecodingError.truncated(what) }
        return value
    }

    mutating func readCount(limit: Int, what: StaticString) throws(GedsError) -> Int {
        let count = Int(try readWireInteger(what, as: UInt32.self))
        guard count <= limit else {
            throw GedsError(.protocolViolation, "malformed message: \(what) count \(count) exceeds \(limit)")
        }
        guard count <= readableBytes else { throw WireDecodingError.truncated(what) }
        return count
    }

    mutating func writeEndpoint(_ endpoint: Endpoint) {
        writeWireString(endpoint.host)
        writeInteger(UInt16(truncatingIfNeeded: endpoint.port))
    }

    mutating func readEndpoint() throws(GedsError) -> Endpoint {
        let host = try readWireString()
        return Endpoint(host: host, port: Int(try readWireInteger("port", as: UInt16.self)))
    }

    /// A flag byte, then the endpoint when there is one (a transport a node may not offer).
    mutating func writeOptionalEndpoint(_ endpoint: Endpoint?) {
        writeBool(endpoint != nil)
        if let endpoint { writeEndpoint(endpoint) }
    }

    mutating func readOptionalEndpoint() throws(GedsError) -> Endpoint? {
        try readBool() ? try readEndpoint() : nil
    }

    /// A flag byte, then the bytes with their length (an object's inline contents).
    mutating func writeOptionalBytes(_ bytes: [UInt8]?) {
        writeBool(bytes != nil)
        guard let bytes else { return }
        writeInteger(UInt32(bytes.count))
        writeBytes(bytes)
    }

    /// Exactly `count` bytes (a nonce or a proof of the handshake).
    mutating func readFixedBytes(_ count: Int, _ what: StaticString) throws(GedsError) -> [UInt8] {
        guard let bytes = readBytes(length: count) else { throw WireDecodingError.truncated(what) }
        return bytes
    }

    mutating func readOptionalBytes() throws(GedsError) -> [UInt8]? {
        guard try readBool() else { return nil }
        let count = try readCount(limit: Int(InlineContents.maximumLimit), what: "contents")
        return readBytes(length: count)
    }

    public mutating func writeMetadata(_ metadata: [String: String]) {
        writeInteger(UInt32(metadata.count))
        for (name, value) in metadata.sorted(by: { $0.key < $1.key }) {
            writeWireString(name)
            writeWireString(value)
        }
    }

    public mutating func readMetadata() throws(GedsError) -> [String: String] {
        let count = try readList(what: "metadata")
        var metadata: [String: String] = [:]
        for _ in 0..<count { metadata[try readWireString()] = try readWireString() }
        return metadata
    }

    /// A list's element count; each element takes at least one byte, which bounds the count by the payload.
    mutating func readList(what: StaticString) throws(GedsError) -> Int {
        let count = Int(try readWireInteger(what, as: UInt32.self))
        guard count <= WireLimits.maximumElements, count <= readableBytes else {
            throw GedsError(.protocolViolation, "malformed message: \(what) list of \(count) elements in \(readableBytes) bytes")
        }
        return count
    }

    mutating func readTier() throws(GedsError) -> Tier {
        let raw = try readWireInteger("tier", as: UInt8.self)
        guard let tier = Tier(rawValue: raw) else { throw GedsError(.protocolViolation, "malformed message: tier \(raw)") }
        return tier
    }

    mutating func writePlacement(_ placement: BlobPlacement) {
        writeInteger(placement.node)
        writeInteger(placement.tier.rawValue)
        writeInteger(placement.rdmaAddress)
        writeInteger(placement.rkey)
        writeOptionalChecksum(placement.checksum)
        writeBool(placement.slot != nil)
        if let slot = placement.slot {
            writeInteger(slot.slab)
            writeInteger(slot.offset)
        }
    }

    mutating func readPlacement() throws(GedsError) -> BlobPlacement {
        BlobPlacement(node: try readWireInteger("node"), tier: try readTier(),
                      rdmaAddress: try readWireInteger("address"), rkey: try readWireInteger("rkey"),
                      checksum: try readOptionalChecksum(),
                      slot: try readBool() ? SlabSlot(slab: try readWireInteger("slab"), offset: try readWireInteger("slot offset")) : nil)
    }

    /// A flag byte, then the CRC-32C when there is one.
    mutating func writeOptionalChecksum(_ checksum: UInt32?) {
        writeBool(checksum != nil)
        if let checksum { writeInteger(checksum) }
    }

    mutating func readOptionalChecksum() throws(GedsError) -> UInt32? {
        try readBool() ? try readWireInteger("checksum", as: UInt32.self) : nil
    }

    /// A location: a kind byte (0: a node's copy, 1: an S3 object), then the copy or the object.
    mutating func writeLocation(_ location: Location) {
        switch location {
        case .node(let copy):
            writeInteger(LocationKind.node.rawValue)
            writeNodeCopy(copy)
        case .s3(let object):
            writeInteger(LocationKind.s3.rawValue)
            writeS3Object(object)
        }
    }

    mutating func readLocation() throws(GedsError) -> Location {
        let raw = try readWireInteger("location kind", as: UInt8.self)
        switch LocationKind(rawValue: raw) {
        case .node: return .node(try readNodeCopy())
        case .s3: return .s3(try readS3Object())
        case nil: throw GedsError(.protocolViolation, "malformed message: unknown location kind \(raw)")
        }
    }

    private mutating func writeNodeCopy(_ copy: NodeCopy) {
        writeWireString(copy.node)
        writeWireString(copy.hostID)
        writeInteger(copy.tier.rawValue)
        writeEndpoint(copy.tcp)
        if let rdma = copy.rdma {
            writeInteger(UInt8(1))
            writeEndpoint(rdma.endpoint)
            writeInteger(rdma.address)
            writeInteger(rdma.rkey)
        } else {
            writeInteger(UInt8(0))
        }
        writeWireString(copy.path)
        writeBool(copy.offset != nil)
        if let offset = copy.offset { writeInteger(offset) }
        writeOptionalChecksum(copy.checksum)
    }

    private mutating func readNodeCopy() throws(GedsError) -> NodeCopy {
        let node = try readWireString()
        let hostID = try readWireString()
        let tier = try readTier()
        guard tier != .s3 else { throw GedsError(.protocolViolation, "a node's copy in tier s3") }
        let tcp = try readEndpoint()
        var rdma: RDMAAccess?
        if try readWireInteger("rdma flag", as: UInt8.self) != 0 {
            rdma = RDMAAccess(endpoint: try readEndpoint(), address: try readWireInteger("address"),
                              rkey: try readWireInteger("rkey"))
        }
        return NodeCopy(node: node, hostID: hostID, tier: tier, tcp: tcp, rdma: rdma, path: try readWireString(),
                        offset: try readBool() ? try readWireInteger("slot offset") : nil, checksum: try readOptionalChecksum())
    }

    public mutating func writeBool(_ value: Bool) { writeInteger(UInt8(value ? 1 : 0)) }
    public mutating func readBool() throws(GedsError) -> Bool { try readWireInteger("flag", as: UInt8.self) != 0 }
}

extension String {
    /// The longest prefix of whole Unicode scalars that fits in `limit` UTF-8 bytes.
    func truncatedToUTF8(_ limit: Int) -> String {
        guard utf8.count > limit else { return self }
        var result = String.UnicodeScalarView()
        var length = 0
        for scalar in unicodeScalars {
            length += UTF8.width(scalar)
            if length > limit { break }
            result.append(scalar)
        }
        return String(result)
    }
}

enum WireDecodingError {
    static func truncated(_ what: StaticString) -> GedsError {
        GedsError(.protocolViolation, "malformed message: truncated at \(what)")
    }
}

private enum RequestTag: UInt8, CaseIterable {
    case registerNode = 1, heartbeat, listNodes, createBucket, deleteBucket, listBuckets, createObject,
         sealObject, abortObject, lookup, list, deleteObject, deletePrefix, rename, copy, setMetadata,
         addLocation, removeLocation, readBlob, pullBlob, leave,
         setBucketStorage, bucketStorage, addS3Copy, s3Assignment, adoptS3Object, persistBlob, flush,
         claimS3Deletions, s3Deleted, abandonS3Upload, subscribe, drainNode, drainFailed, authenticate, prove,
         setBucketReplicas, bucketReplicas, placeCopies, reserveBlobs, sealNewObject, waitForObject
}

private enum ReplyTag: UInt8 {
    case ok = 1, failure, nodeRegistered, heartbeatAck, buckets, created, object, page, count, nodes, stream,
         s3Assignment, storage, s3Deletions, s3Move, subscribed, events, progress, subscriptionEnded, challenge
}

extension Request {
    /// The request's name in metrics and logs: `lookup`, `readBlob`, …
    public var kindName: String { String(describing: tag) }
    /// A small number per kind of request, below `Request.kindCount`: an index for per-kind tables.
    public var kindIndex: Int { Int(tag.rawValue) }
    public static var kindCount: Int { Int(RequestTag.allCases.map(\.rawValue).max()!) + 1 }
    /// The name of each kind index ("" for an index no request has).
    public static var kindNames: [String] {
        var names = [String](repeating: "", count: kindCount)
        for tag in RequestTag.allCases { names[Int(tag.rawValue)] = String(describing: tag) }
        return names
    }

    /// The tag that starts the request on the wire (`encode` writes it) and names it in metrics.
    private var tag: RequestTag {
        switch self {
        case .registerNode: .registerNode
        case .heartbeat: .heartbeat
        case .leave: .leave
        case .listNodes: .listNodes
        case .createBucket: .createBucket
        case .deleteBucket: .deleteBucket
        case .listBuckets: .listBuckets
        case .createObject: .createObject
        case .sealObject: .sealObject
        case .abortObject: .abortObject
        case .lookup: .lookup
        case .list: .list
        case .deleteObject: .deleteObject
        case .deletePrefix: .deletePrefix
        case .rename: .rename
        case .copy: .copy
        case .setMetadata: .setMetadata
        case .addLocation: .addLocation
        case .removeLocation: .removeLocation
        case .readBlob: .readBlob
        case .pullBlob: .pullBlob
        case .setBucketStorage: .setBucketStorage
        case .bucketStorage: .bucketStorage
        case .addS3Copy: .addS3Copy
        case .s3Assignment: .s3Assignment
        case .adoptS3Object: .adoptS3Object
        case .persistBlob: .persistBlob
        case .flush: .flush
        case .claimS3Deletions: .claimS3Deletions
        case .abandonS3Upload: .abandonS3Upload
        case .s3Deleted: .s3Deleted
        case .subscribe: .subscribe
        case .drainNode: .drainNode
        case .drainFailed: .drainFailed
        case .authenticate: .authenticate
        case .prove: .prove
        case .setBucketReplicas: .setBucketReplicas
        case .bucketReplicas: .bucketReplicas
        case .placeCopies: .placeCopies
        case .reserveBlobs: .reserveBlobs
        case .sealNewObject: .sealNewObject
        case .waitForObject: .waitForObject
        }
    }
}

extension Request {
    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(tag.rawValue)
        switch self {
        case .registerNode(let registration):
            buffer.writeWireString(registration.name)
            buffer.writeWireString(registration.hostID)
            buffer.writeInteger(registration.role.rawValue)
            buffer.writeEndpoint(registration.tcp)
            buffer.writeWireString(registration.tier0Directory)
            buffer.writeOptionalEndpoint(registration.rdma)
        case .heartbeat(let node, let blobs, let bytes, let room):
            buffer.writeInteger(node)
            buffer.writeInteger(blobs)
            buffer.writeInteger(bytes)
            buffer.writeInteger(room)
        case .leave(let node):
            buffer.writeInteger(node)
        case .listNodes:
            break
        case .createBucket(let bucket):
            buffer.writeWireString(bucket)
        case .deleteBucket(let bucket, let force):
            buffer.writeWireString(bucket)
            buffer.writeBool(force)
        case .listBuckets:
            break
        case .createObject(let bucket, let key, let node, let exclusive, let replicas, let reserved):
            buffer.writeWireString(bucket)
            buffer.writeWireString(key)
            buffer.writeInteger(node)
            buffer.writeBool(exclusive)
            buffer.writeInteger(replicas)
            buffer.writeBlob(reserved)
        case .reserveBlobs(let node, let count):
            buffer.writeInteger(node)
            buffer.writeInteger(count)
        case .sealNewObject(let blob, let bucket, let key, let size, let metadata, let placement, let contents):
            buffer.writeBlob(blob)
            buffer.writeWireString(bucket)
            buffer.writeWireString(key)
            buffer.writeInteger(size)
            buffer.writeMetadata(metadata)
            buffer.writePlacement(placement)
            buffer.writeOptionalBytes(contents)
        case .sealObject(let blob, let size, let metadata, let placement, let contents):
            buffer.writeBlob(blob)
            buffer.writeInteger(size)
            buffer.writeMetadata(metadata)
            buffer.writePlacement(placement)
            buffer.writeOptionalBytes(contents)
        case .abortObject(let blob):
            buffer.writeBlob(blob)
        case .lookup(let bucket, let key):
            buffer.writeWireString(bucket)
            buffer.writeWireString(key)
        case .list(let bucket, let prefix, let delimiter, let startAfter, let maxKeys):
            buffer.writeWireString(bucket)
            buffer.writeWireString(prefix)
            buffer.writeWireString(delimiter)
            buffer.writeWireString(startAfter)
            buffer.writeInteger(maxKeys)
        case .deleteObject(let bucket, let key):
            buffer.writeWireString(bucket)
            buffer.writeWireString(key)
        case .deletePrefix(let bucket, let prefix):
            buffer.writeWireString(bucket)
            buffer.writeWireString(prefix)
        case .rename(let fromBucket, let fromKey, let toBucket, let toKey):
            for part in [fromBucket, fromKey, toBucket, toKey] { buffer.writeWireString(part) }
        case .copy(let fromBucket, let fromKey, let toBucket, let toKey):
            for part in [fromBucket, fromKey, toBucket, toKey] { buffer.writeWireString(part) }
        case .setMetadata(let bucket, let key, let metadata):
            buffer.writeWireString(bucket)
            buffer.writeWireString(key)
            buffer.writeMetadata(metadata)
        case .addLocation(let blob, let placement):
            buffer.writeBlob(blob)
            buffer.writePlacement(placement)
        case .removeLocation(let blob, let node):
            buffer.writeBlob(blob)
            buffer.writeInteger(node)
        case .readBlob(let blob, let offset, let length):
            buffer.writeBlob(blob)
            buffer.writeInteger(offset)
            buffer.writeInteger(length)
        case .pullBlob(let blob, let size, let source):
            buffer.writeBlob(blob)
            buffer.writeInteger(size)
            buffer.writeLocation(source)
        case .setBucketStorage(let bucket, let storage):
            buffer.writeWireString(bucket)
            buffer.writeOptionalBucketStorage(storage)
        case .bucketStorage(let bucket):
            buffer.writeWireString(bucket)
        case .addS3Copy(let blob):
            buffer.writeBlob(blob)
        case .s3Assignment(let blob):
            buffer.writeBlob(blob)
        case .adoptS3Object(let bucket, let key, let size, let metadata):
            buffer.writeWireString(bucket)
            buffer.writeWireString(key)
            buffer.writeInteger(size)
            buffer.writeMetadata(metadata)
        case .persistBlob(let blob, let persistency, let object):
            buffer.writeBlob(blob)
            buffer.writeInteger(persistency.rawValue)
            buffer.writeBool(object != nil)
            if let object { buffer.writeS3Object(object) }
        case .flush(let timeout):
            buffer.writeInteger(timeout)
        case .claimS3Deletions(let bucket, let keys):
            buffer.writeWireString(bucket)
            buffer.writeWireStrings(keys)
        case .s3Deleted(let objects):
            buffer.writeS3Objects(objects)
        case .abandonS3Upload(let object):
            buffer.writeS3Object(object)
        case .subscribe(let scope, let after):
            buffer.writeEventScope(scope)
            buffer.writeBool(after != nil)
            if let after { buffer.writeInteger(after) }
        case .waitForObject(let bucket, let key, let timeout):
            buffer.writeWireString(bucket)
            buffer.writeWireString(key)
            buffer.writeInteger(timeout)
        case .drainNode(let name):
            buffer.writeWireString(name)
        case .drainFailed(let node, let reason):
            buffer.writeInteger(node)
            buffer.writeWireString(reason.truncatedToUTF8(WireLimits.maximumString))
        case .authenticate(let nonce):
            buffer.writeBytes(nonce)
        case .prove(let proof):
            buffer.writeBytes(proof)
        case .setBucketReplicas(let bucket, let replicas):
            buffer.writeWireString(bucket)
            buffer.writeInteger(replicas)
        case .bucketReplicas(let bucket):
            buffer.writeWireString(bucket)
        case .placeCopies(let blob, let holder, let leaving):
            buffer.writeBlob(blob)
            buffer.writeInteger(holder)
            buffer.writeInteger(leaving)
        }
    }

    /// Decodes one whole request payload; trailing bytes are an error, so framing bugs show up at once.
    public static func decode(from payload: inout ByteBuffer) throws(GedsError) -> Request {
        let raw = try payload.readWireInteger("request tag", as: UInt8.self)
        guard let tag = RequestTag(rawValue: raw) else {
            throw GedsError(.protocolViolation, "malformed message: unknown request \(raw)")
        }
        let request: Request
        switch tag {
        case .registerNode:
            let name = try payload.readWireString()
            let hostID = try payload.readWireString()
            let rawRole = try payload.readWireInteger("role", as: UInt8.self)
            guard let role = NodeRole(rawValue: rawRole) else {
                throw GedsError(.protocolViolation, "malformed message: node role \(rawRole)")
            }
            request = .registerNode(NodeRegistration(name: name, hostID: hostID, role: role,
                                                     tcp: try payload.readEndpoint(),
                                                     tier0Directory: try payload.readWireString(),
                                                     rdma: try payload.readOptionalEndpoint()))
        case .heartbeat:
            request = .heartbeat(node: try payload.readWireInteger("node"), blobs: try payload.readWireInteger("blobs"),
                                 bytes: try payload.readWireInteger("bytes"), room: try payload.readWireInteger("room"))
        case .leave:
            request = .leave(node: try payload.readWireInteger("node"))
        case .listNodes:
            request = .listNodes
        case .createBucket:
            request = .createBucket(try payload.readWireString())
        case .deleteBucket:
            request = .deleteBucket(try payload.readWireString(), force: try payload.readBool())
        case .listBuckets:
            request = .listBuckets
        case .createObject:
            request = .createObject(bucket: try payload.readWireString(), key: try payload.readWireString(),
                                    node: try payload.readWireInteger("node"), exclusive: try payload.readBool(),
                                    replicas: try payload.readWireInteger("replicas"), reserved: try payload.readBlob("reserved"))
        case .reserveBlobs:
            request = .reserveBlobs(node: try payload.readWireInteger("node"), count: try payload.readWireInteger("count"))
        case .sealNewObject:
            request = .sealNewObject(blob: try payload.readBlob(), bucket: try payload.readWireString(), key: try payload.readWireString(),
                                     size: try payload.readWireInteger("size"), metadata: try payload.readMetadata(),
                                     placement: try payload.readPlacement(), contents: try payload.readOptionalBytes())
        case .sealObject:
            request = .sealObject(blob: try payload.readBlob(), size: try payload.readWireInteger("size"),
                                  metadata: try payload.readMetadata(), placement: try payload.readPlacement(),
                                  contents: try payload.readOptionalBytes())
        case .abortObject:
            request = .abortObject(blob: try payload.readBlob("blob"))
        case .lookup:
            request = .lookup(bucket: try payload.readWireString(), key: try payload.readWireString())
        case .list:
            request = .list(bucket: try payload.readWireString(), prefix: try payload.readWireString(),
                            delimiter: try payload.readWireString(), startAfter: try payload.readWireString(),
                            maxKeys: try payload.readWireInteger("max keys"))
        case .deleteObject:
            request = .deleteObject(bucket: try payload.readWireString(), key: try payload.readWireString())
        case .deletePrefix:
            request = .deletePrefix(bucket: try payload.readWireString(), prefix: try payload.readWireString())
        case .rename:
            request = .rename(fromBucket: try payload.readWireString(), fromKey: try payload.readWireString(),
                              toBucket: try payload.readWireString(), toKey: try payload.readWireString())
        case .copy:
            request = .copy(fromBucket: try payload.readWireString(), fromKey: try payload.readWireString(),
                            toBucket: try payload.readWireString(), toKey: try payload.readWireString())
        case .setMetadata:
            request = .setMetadata(bucket: try payload.readWireString(), key: try payload.readWireString(),
                                   metadata: try payload.readMetadata())
        case .addLocation:
            request = .addLocation(blob: try payload.readBlob("blob"), placement: try payload.readPlacement())
        case .removeLocation:
            request = .removeLocation(blob: try payload.readBlob(), node: try payload.readWireInteger("node"))
        case .readBlob:
            request = .readBlob(blob: try payload.readBlob(), offset: try payload.readWireInteger("offset"),
                                length: try payload.readWireInteger("length"))
        case .pullBlob:
            request = .pullBlob(blob: try payload.readBlob(), size: try payload.readWireInteger("size"),
                                source: try payload.readLocation())
        case .setBucketStorage:
            request = .setBucketStorage(bucket: try payload.readWireString(), storage: try payload.readOptionalBucketStorage())
        case .bucketStorage:
            request = .bucketStorage(bucket: try payload.readWireString())
        case .addS3Copy:
            request = .addS3Copy(blob: try payload.readBlob("blob"))
        case .s3Assignment:
            request = .s3Assignment(blob: try payload.readBlob("blob"))
        case .adoptS3Object:
            request = .adoptS3Object(bucket: try payload.readWireString(), key: try payload.readWireString(),
                                     size: try payload.readWireInteger("size"), metadata: try payload.readMetadata())
        case .persistBlob:
            let blob: BlobID = try payload.readBlob("blob")
            let persistency = try payload.readPersistency()
            request = .persistBlob(blob: blob, persistency: persistency,
                                   object: try payload.readBool() ? try payload.readS3Object() : nil)
        case .flush:
            request = .flush(timeoutMilliseconds: try payload.readWireInteger("timeout"))
        case .claimS3Deletions:
            request = .claimS3Deletions(bucket: try payload.readWireString(), keys: try payload.readWireStrings(what: "keys"))
        case .s3Deleted:
            request = .s3Deleted(try payload.readS3Objects())
        case .abandonS3Upload:
            request = .abandonS3Upload(try payload.readS3Object())
        case .subscribe:
            let scope = try payload.readEventScope()
            request = .subscribe(scope: scope, after: try payload.readBool() ? try payload.readWireInteger("revision") : nil)
        case .waitForObject:
            request = .waitForObject(bucket: try payload.readWireString(), key: try payload.readWireString(),
                                     timeoutMilliseconds: try payload.readWireInteger("timeout"))
        case .drainNode:
            request = .drainNode(name: try payload.readWireString())
        case .drainFailed:
            request = .drainFailed(node: try payload.readWireInteger("node"), reason: try payload.readWireString())
        case .authenticate:
            request = .authenticate(clientNonce: try payload.readFixedBytes(HandshakeSizes.nonce, "nonce"))
        case .prove:
            request = .prove(proof: try payload.readFixedBytes(HandshakeSizes.proof, "proof"))
        case .setBucketReplicas:
            request = .setBucketReplicas(bucket: try payload.readWireString(), replicas: try payload.readWireInteger("replicas"))
        case .bucketReplicas:
            request = .bucketReplicas(bucket: try payload.readWireString())
        case .placeCopies:
            request = .placeCopies(blob: try payload.readBlob(), holder: try payload.readWireInteger("holder"),
                                   leaving: try payload.readWireInteger("leaving"))
        }
        try payload.expectEnd()
        return request
    }
}

extension Reply {
    public func encode(into buffer: inout ByteBuffer) {
        switch self {
        case .ok:
            buffer.writeInteger(ReplyTag.ok.rawValue)
        case .failure(let error):
            buffer.writeInteger(ReplyTag.failure.rawValue)
            buffer.writeInteger(error.code.rawValue)
            buffer.writeWireString(error.message.truncatedToUTF8(WireLimits.maximumString))
        case .nodeRegistered(let node, let lease, let inlineLimit):
            buffer.writeInteger(ReplyTag.nodeRegistered.rawValue)
            buffer.writeInteger(node)
            buffer.writeInteger(lease)
            buffer.writeInteger(inlineLimit)
        case .heartbeatAck(let drop, let drain, let replicate):
            buffer.writeInteger(ReplyTag.heartbeatAck.rawValue)
            buffer.writeInteger(UInt32(drop.count))
            for blob in drop { buffer.writeBlob(blob) }
            buffer.writeBool(drain)
            buffer.writeInteger(UInt32(replicate.count))
            for order in replicate {
                buffer.writeBlob(order.blob)
                buffer.writeInteger(order.size)
                buffer.writeLocation(order.source)
            }
        case .buckets(let names):
            buffer.writeInteger(ReplyTag.buckets.rawValue)
            buffer.writeInteger(UInt32(names.count))
            for name in names { buffer.writeWireString(name) }
        case .created(let blob):
            buffer.writeInteger(ReplyTag.created.rawValue)
            buffer.writeBlob(blob)
        case .object(let info):
            buffer.writeInteger(ReplyTag.object.rawValue)
            buffer.writeWireString(info.bucket)
            buffer.writeWireString(info.key)
            buffer.writeBlob(info.blob)
            buffer.writeInteger(info.size)
            buffer.writeBool(info.sealed)
            buffer.writeInteger(info.modified)
            buffer.writeMetadata(info.metadata)
            buffer.writeInteger(UInt32(info.locations.count))
            for location in info.locations { buffer.writeLocation(location) }
            buffer.writeOptionalBytes(info.contents)
            buffer.writeInteger(UInt8(clamping: info.wantedCopies))
        case .page(let page):
            buffer.writeInteger(ReplyTag.page.rawValue)
            buffer.writeInteger(UInt32(page.objects.count))
            for entry in page.objects {
                buffer.writeWireString(entry.key)
                buffer.writeInteger(entry.size)
                buffer.writeInteger(entry.modified)
            }
            buffer.writeInteger(UInt32(page.commonPrefixes.count))
            for prefix in page.commonPrefixes { buffer.writeWireString(prefix) }
            buffer.writeBool(page.nextStartAfter != nil)
            if let next = page.nextStartAfter { buffer.writeWireString(next) }
        case .count(let count):
            buffer.writeInteger(ReplyTag.count.rawValue)
            buffer.writeInteger(count)
        case .nodes(let nodes):
            buffer.writeInteger(ReplyTag.nodes.rawValue)
            buffer.writeInteger(UInt32(nodes.count))
            for node in nodes {
                buffer.writeWireString(node.name)
                buffer.writeWireString(node.hostID)
                buffer.writeInteger(node.role.rawValue)
                buffer.writeEndpoint(node.tcp)
                buffer.writeOptionalEndpoint(node.rdma)
                buffer.writeBool(node.alive)
                buffer.writeInteger(node.blobs)
                buffer.writeInteger(node.bytes)
                buffer.writeBool(node.draining)
                buffer.writeBool(node.drainFailure != nil)
                if let failure = node.drainFailure { buffer.writeWireString(failure.truncatedToUTF8(WireLimits.maximumString)) }
            }
        case .stream(let length):
            buffer.writeInteger(ReplyTag.stream.rawValue)
            buffer.writeInteger(length)
        case .s3Assignment(let assignment):
            buffer.writeInteger(ReplyTag.s3Assignment.rawValue)
            buffer.writeS3Object(assignment.object)
            buffer.writeInteger(assignment.persistency.rawValue)
            buffer.writeMetadata(assignment.metadata)
            buffer.writeBool(assignment.stored)
        case .storage(let storage):
            buffer.writeInteger(ReplyTag.storage.rawValue)
            buffer.writeOptionalBucketStorage(storage)
        case .s3Deletions(let deleted, let objects):
            buffer.writeInteger(ReplyTag.s3Deletions.rawValue)
            buffer.writeInteger(deleted)
            buffer.writeS3Objects(objects)
        case .s3Move(let blob, let from, let to, let deleteSource):
            buffer.writeInteger(ReplyTag.s3Move.rawValue)
            buffer.writeBlob(blob)
            buffer.writeS3Object(from)
            buffer.writeS3Object(to)
            buffer.writeBool(deleteSource)
        case .subscribed(let revision):
            buffer.writeInteger(ReplyTag.subscribed.rawValue)
            buffer.writeInteger(revision)
        case .events(let events):
            buffer.writeInteger(ReplyTag.events.rawValue)
            buffer.writeInteger(UInt32(events.count))
            for event in events { buffer.writeEvent(event) }
        case .progress(let revision):
            buffer.writeInteger(ReplyTag.progress.rawValue)
            buffer.writeInteger(revision)
        case .subscriptionEnded(let end):
            buffer.writeInteger(ReplyTag.subscriptionEnded.rawValue)
            switch end {
            case .compacted(let oldest):
                buffer.writeInteger(UInt8(1))
                buffer.writeInteger(oldest)
            case .tooSlow(let last):
                buffer.writeInteger(UInt8(2))
                buffer.writeInteger(last)
            }
        case .challenge(let nonce, let proof):
            buffer.writeInteger(ReplyTag.challenge.rawValue)
            buffer.writeBytes(nonce)
            buffer.writeBytes(proof)
        }
    }

    public static func decode(from payload: inout ByteBuffer) throws(GedsError) -> Reply {
        let raw = try payload.readWireInteger("reply tag", as: UInt8.self)
        guard let tag = ReplyTag(rawValue: raw) else {
            throw GedsError(.protocolViolation, "malformed message: unknown reply \(raw)")
        }
        let reply: Reply
        switch tag {
        case .ok:
            reply = .ok
        case .failure:
            let rawCode = try payload.readWireInteger("error code", as: UInt16.self)
            let message = try payload.readWireString()
            reply = .failure(GedsError(GedsError.Code(rawValue: rawCode) ?? .internal, message))
        case .nodeRegistered:
            reply = .nodeRegistered(node: try payload.readWireInteger("node"),
                                    leaseMilliseconds: try payload.readWireInteger("lease"),
                                    inlineLimit: try payload.readWireInteger("inline limit"))
        case .heartbeatAck:
            let count = try payload.readList(what: "blobs")
            var drop: [BlobID] = []
            drop.reserveCapacity(count)
            for _ in 0..<count { drop.append(try payload.readBlob("blob")) }
            let drain = try payload.readBool()
            var replicate: [ReplicationOrder] = []
            for _ in 0..<(try payload.readList(what: "replication orders")) {
                replicate.append(ReplicationOrder(blob: try payload.readBlob("blob"), size: try payload.readWireInteger("size"),
                                                  source: try payload.readLocation()))
            }
            reply = .heartbeatAck(drop: drop, drain: drain, replicate: replicate)
        case .buckets:
            let count = try payload.readList(what: "buckets")
            var names: [String] = []
            for _ in 0..<count { names.append(try payload.readWireString()) }
            reply = .buckets(names)
        case .created:
            reply = .created(blob: try payload.readBlob("blob"))
        case .object:
            let bucket = try payload.readWireString()
            let key = try payload.readWireString()
            let blob: BlobID = try payload.readBlob("blob")
            let size: UInt64 = try payload.readWireInteger("size")
            let sealed = try payload.readBool()
            let modified: UInt64 = try payload.readWireInteger("modified")
            let metadata = try payload.readMetadata()
            let count = try payload.readList(what: "locations")
            var locations: [Location] = []
            for _ in 0..<count { locations.append(try payload.readLocation()) }
            let contents = try payload.readOptionalBytes()
            guard contents.map({ UInt64($0.count) == size }) ?? true else {  // a size past Int.max must not trap
                throw GedsError(.protocolViolation, "malformed message: \(contents?.count ?? 0) inline bytes of an object of \(size)")
            }
            reply = .object(ObjectInfo(bucket: bucket, key: key, blob: blob, size: size, sealed: sealed,
                                       modified: modified, metadata: metadata, locations: locations, contents: contents,
                                       wantedCopies: Int(try payload.readWireInteger("wanted copies", as: UInt8.self))))
        case .page:
            let objectCount = try payload.readList(what: "objects")
            var objects: [ListEntry] = []
            objects.reserveCapacity(objectCount)
            for _ in 0..<objectCount {
                objects.append(ListEntry(key: try payload.readWireString(), size: try payload.readWireInteger("size"),
                                         modified: try payload.readWireInteger("modified")))
            }
            let prefixCount = try payload.readList(what: "prefixes")
            var prefixes: [String] = []
            for _ in 0..<prefixCount { prefixes.append(try payload.readWireString()) }
            let next = try payload.readBool() ? try payload.readWireString() : nil
            reply = .page(ListPage(objects: objects, commonPrefixes: prefixes, nextStartAfter: next))
        case .count:
            reply = .count(try payload.readWireInteger("count"))
        case .nodes:
            let count = try payload.readList(what: "nodes")
            var nodes: [NodeInfo] = []
            for _ in 0..<count {
                let name = try payload.readWireString()
                let hostID = try payload.readWireString()
                let rawRole = try payload.readWireInteger("role", as: UInt8.self)
                guard let role = NodeRole(rawValue: rawRole) else {
                    throw GedsError(.protocolViolation, "malformed message: node role \(rawRole)")
                }
                nodes.append(NodeInfo(name: name, hostID: hostID, role: role,
                                      tcp: try payload.readEndpoint(), rdma: try payload.readOptionalEndpoint(),
                                      alive: try payload.readBool(),
                                      blobs: try payload.readWireInteger("blobs"), bytes: try payload.readWireInteger("bytes"),
                                      draining: try payload.readBool(),
                                      drainFailure: try payload.readBool() ? try payload.readWireString() : nil))
            }
            reply = .nodes(nodes)
        case .stream:
            reply = .stream(length: try payload.readWireInteger("length"))
        case .s3Assignment:
            reply = .s3Assignment(S3Assignment(object: try payload.readS3Object(), persistency: try payload.readPersistency(),
                                               metadata: try payload.readMetadata(), stored: try payload.readBool()))
        case .storage:
            reply = .storage(try payload.readOptionalBucketStorage())
        case .s3Deletions:
            reply = .s3Deletions(deleted: try payload.readWireInteger("deleted"), objects: try payload.readS3Objects())
        case .s3Move:
            reply = .s3Move(blob: try payload.readBlob("blob"), from: try payload.readS3Object(),
                            to: try payload.readS3Object(), deleteSource: try payload.readBool())
        case .subscribed:
            reply = .subscribed(revision: try payload.readWireInteger("revision"))
        case .events:
            let count = try payload.readList(what: "events")
            var events: [NamespaceEvent] = []
            events.reserveCapacity(count)
            for _ in 0..<count { events.append(try payload.readEvent()) }
            reply = .events(events)
        case .progress:
            reply = .progress(revision: try payload.readWireInteger("revision"))
        case .subscriptionEnded:
            let reason = try payload.readWireInteger("reason", as: UInt8.self)
            let revision: UInt64 = try payload.readWireInteger("revision")
            switch reason {
            case 1: reply = .subscriptionEnded(.compacted(oldest: revision))
            case 2: reply = .subscriptionEnded(.tooSlow(lastDelivered: revision))
            default: throw GedsError(.protocolViolation, "malformed message: subscription end \(reason)")
            }
        case .challenge:
            reply = .challenge(serverNonce: try payload.readFixedBytes(HandshakeSizes.nonce, "nonce"),
                               proof: try payload.readFixedBytes(HandshakeSizes.proof, "proof"))
        }
        try payload.expectEnd()
        return reply
    }
}

extension ByteBuffer {
    public mutating func expectEnd() throws(GedsError) {
        guard readableBytes == 0 else {
            throw GedsError(.protocolViolation, "malformed message: \(readableBytes) unexpected trailing bytes")
        }
    }
}

/// Frames a message for sending: header and payload in one buffer.
public enum FrameEncoder {
    public static func frame(_ request: Request, id: UInt64, allocator: ByteBufferAllocator) -> ByteBuffer {
        frame(kind: .request, id: id, allocator: allocator) { request.encode(into: &$0) }
    }

    public static func frame(_ reply: Reply, id: UInt64, allocator: ByteBufferAllocator) -> ByteBuffer {
        frame(kind: .reply, id: id, allocator: allocator) { reply.encode(into: &$0) }
    }

    public static func dataHeader(id: UInt64, length: UInt32, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: FrameHeader.size)
        FrameHeader(kind: .data, requestID: id, length: length).write(to: &buffer)
        return buffer
    }

    /// Appends the framed request to `buffer`, after what it holds (no buffer of its own: a caller reusing one
    /// allocates nothing).
    public static func append(_ request: Request, id: UInt64, to buffer: inout ByteBuffer) {
        append(kind: .request, id: id, to: &buffer) { request.encode(into: &$0) }
    }

    /// Appends the framed reply to `buffer`, as above (a server gathers a read's replies into one write).
    public static func append(_ reply: Reply, id: UInt64, to buffer: inout ByteBuffer) {
        append(kind: .reply, id: id, to: &buffer) { reply.encode(into: &$0) }
    }

    private static func frame(kind: FrameHeader.Kind, id: UInt64, allocator: ByteBufferAllocator,
                              body: (inout ByteBuffer) -> Void) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 64)
        append(kind: kind, id: id, to: &buffer, body: body)
        return buffer
    }

    static func append(kind: FrameHeader.Kind, id: UInt64, to buffer: inout ByteBuffer, body: (inout ByteBuffer) -> Void) {
        let start = buffer.writerIndex
        buffer.writeRepeatingByte(0, count: FrameHeader.size)  // the header, once the payload's length is known
        body(&buffer)
        FrameHeader(kind: kind, requestID: id, length: UInt32(buffer.writerIndex - start - FrameHeader.size)).set(in: &buffer, at: start)
    }
}

/// A frame carried whole as one message (RDMA send/receive): the header, then exactly the payload it
/// announces. The header is checked with the same bounds as on a byte stream; a message that holds more or
/// less than its header announces is malformed.
public enum WholeFrame {
    public static func bytes(_ request: Request, id: UInt64) -> [UInt8] {
        Array(FrameEncoder.frame(request, id: id, allocator: ByteBufferAllocator()).readableBytesView)
    }

    public static func bytes(_ reply: Reply, id: UInt64) -> [UInt8] {
        Array(FrameEncoder.frame(reply, id: id, allocator: ByteBufferAllocator()).readableBytesView)
    }

    public static func request(from message: [UInt8]) throws(GedsError) -> (id: UInt64, request: Request) {
        var (id, payload) = try payload(of: message, kind: .request)
        return (id, try Request.decode(from: &payload))
    }

    public static func reply(from message: [UInt8]) throws(GedsError) -> (id: UInt64, reply: Reply) {
        var (id, payload) = try payload(of: message, kind: .reply)
        return (id, try Reply.decode(from: &payload))
    }

    private static func payload(of message: [UInt8], kind: FrameHeader.Kind) throws(GedsError) -> (UInt64, ByteBuffer) {
        var buffer = ByteBuffer(bytes: message)
        guard let header = try FrameHeader.read(from: &buffer) else {
            throw GedsError(.protocolViolation, "a message of \(message.count) bytes is shorter than a frame header")
        }
        guard header.kind == kind else {
            throw GedsError(.protocolViolation, "expected a \(kind) frame, got a \(header.kind) frame")
        }
        guard buffer.readableBytes == Int(header.length) else {
            throw GedsError(.protocolViolation,
                            "a frame announcing \(header.length) payload bytes came in a message carrying \(buffer.readableBytes)")
        }
        return (header.requestID, buffer)
    }
}

/// The first byte of a location on the wire.
enum LocationKind: UInt8 {
    case node = 0
    case s3 = 1
}
