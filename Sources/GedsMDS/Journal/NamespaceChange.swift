import GedsCore
import GedsWire
import NIOCore

/// One durable change of the namespace, as the journal keeps it: enough to make the same change again on the
/// state it was made on (replay calls the store's own operations, so a replayed change cannot differ from the
/// original). Copies on nodes are not in it: nodes offer them again when they register with a restarted MDS.
/// Inline contents are not either: after a restart small objects are read from their copies.
enum NamespaceChange: Equatable, Sendable {
    case createBucket(String)
    case deleteBucket(String)
    case setStorage(bucket: String, BucketStorage?)
    /// A sealed object: `modified` is its time, `blob` its id.
    case seal(ObjectName, blob: BlobID, size: UInt64, metadata: [String: String], modified: UInt64)
    case delete(ObjectName, now: UInt64)
    case deletePrefix(bucket: String, prefix: String)
    case rename(from: ObjectName, to: ObjectName, now: UInt64)
    /// `blob`: the id a copy into an S3 bucket gives its new blob (unused otherwise).
    case copy(from: ObjectName, to: ObjectName, now: UInt64, blob: BlobID)
    case setMetadata(ObjectName, [String: String])
    case storedInS3(BlobID)
    case adoptS3Object(ObjectName, blob: BlobID, size: UInt64, metadata: [String: String], now: UInt64)
    /// The CRC-32C a tier-1 copy reported for the blob's bytes (a node that restarts checks its files against it).
    case checksum(BlobID, UInt32)
    /// A bucket's replication factor: of the objects sealed after it, and of those in it without a factor of their own.
    case setReplicas(bucket: String, UInt8)
    /// A sealed blob's replication factor taken from its bucket, when more than 1 (after its seal record, and its
    /// key's in a snapshot).
    case replicas(BlobID, UInt8)
    /// A sealed blob's own replication factor (its object was created with one; also 1): its bucket's does not apply.
    case ownReplicas(BlobID, UInt8)
    /// Deletions of S3 objects ordered by no journaled change (`claimS3Deletions`, `abandonS3Upload`, the delete of a
    /// key only S3 has; those a deletion, rename or copy orders are made again by its replay), at MDS time `now`; in a
    /// snapshot, each one still pending.
    case s3DeletionsOrdered([S3ObjectReference], now: UInt64)
    /// A node deleted these S3 objects (`s3Deleted`).
    case s3DeletionsDone([S3ObjectReference])
    /// A snapshot's record of one key: its blob is created by the first key naming it, shared by the others.
    case object(ObjectName, blob: BlobID, size: UInt64, modified: UInt64, metadata: [String: String],
                checksum: UInt32?, s3: S3CopyState?)

    /// A blob's S3 copy as a snapshot keeps it (`MetadataStore.S3Copy` with its store spelled out).
    struct S3CopyState: Equatable, Sendable {
        var object: S3ObjectReference
        var bucket: String
        var persistency: Persistency
        var stored: Bool
        /// Whether the blob is the one whose bytes belong in that S3 object (the last one assigned it).
        var holder: Bool
    }

    private enum Kind: UInt8 {
        case createBucket = 1, deleteBucket, setStorage, seal, delete, deletePrefix, rename, copy, setMetadata, storedInS3,
             adoptS3Object, checksum, object, setReplicas, replicas, ownReplicas, s3DeletionsOrdered, s3DeletionsDone
    }

    func encode(into buffer: inout ByteBuffer) {
        switch self {
        case .createBucket(let bucket):
            buffer.writeInteger(Kind.createBucket.rawValue)
            buffer.writeWireString(bucket)
        case .deleteBucket(let bucket):
            buffer.writeInteger(Kind.deleteBucket.rawValue)
            buffer.writeWireString(bucket)
        case .setStorage(let bucket, let storage):
            buffer.writeInteger(Kind.setStorage.rawValue)
            buffer.writeWireString(bucket)
            buffer.writeOptionalBucketStorage(storage)
        case .seal(let name, let blob, let size, let metadata, let modified):
            buffer.writeInteger(Kind.seal.rawValue)
            buffer.writeObjectName(name)
            buffer.writeBlob(blob)
            buffer.writeInteger(size)
            buffer.writeMetadata(metadata)
            buffer.writeInteger(modified)
        case .delete(let name, let now):
            buffer.writeInteger(Kind.delete.rawValue)
            buffer.writeObjectName(name)
            buffer.writeInteger(now)
        case .deletePrefix(let bucket, let prefix):
            buffer.writeInteger(Kind.deletePrefix.rawValue)
            buffer.writeWireString(bucket)
            buffer.writeWireString(prefix)
        case .rename(let from, let to, let now):
            buffer.writeInteger(Kind.rename.rawValue)
            buffer.writeObjectName(from)
            buffer.writeObjectName(to)
            buffer.writeInteger(now)
        case .copy(let from, let to, let now, let blob):
            buffer.writeInteger(Kind.copy.rawValue)
            buffer.writeObjectName(from)
            buffer.writeObjectName(to)
            buffer.writeInteger(now)
            buffer.writeBlob(blob)
        case .setMetadata(let name, let metadata):
            buffer.writeInteger(Kind.setMetadata.rawValue)
            buffer.writeObjectName(name)
            buffer.writeMetadata(metadata)
        case .storedInS3(let blob):
            buffer.writeInteger(Kind.storedInS3.rawValue)
            buffer.writeBlob(blob)
        case .adoptS3Object(let name, let blob, let size, let metadata, let now):
            buffer.writeInteger(Kind.adoptS3Object.rawValue)
            buffer.writeObjectName(name)
            buffer.writeBlob(blob)
            buffer.writeInteger(size)
            buffer.writeMetadata(metadata)
            buffer.writeInteger(now)
        case .checksum(let blob, let checksum):
            buffer.writeInteger(Kind.checksum.rawValue)
            buffer.writeBlob(blob)
            buffer.writeInteger(checksum)
        case .setReplicas(let bucket, let replicas):
            buffer.writeInteger(Kind.setReplicas.rawValue)
            buffer.writeWireString(bucket)
            buffer.writeInteger(replicas)
        case .replicas(let blob, let replicas):
            buffer.writeInteger(Kind.replicas.rawValue)
            buffer.writeBlob(blob)
            buffer.writeInteger(replicas)
        case .ownReplicas(let blob, let replicas):
            buffer.writeInteger(Kind.ownReplicas.rawValue)
            buffer.writeBlob(blob)
            buffer.writeInteger(replicas)
        case .s3DeletionsOrdered(let objects, let now):
            buffer.writeInteger(Kind.s3DeletionsOrdered.rawValue)
            buffer.writeS3Objects(objects)
            buffer.writeInteger(now)
        case .s3DeletionsDone(let objects):
            buffer.writeInteger(Kind.s3DeletionsDone.rawValue)
            buffer.writeS3Objects(objects)
        case .object(let name, let blob, let size, let modified, let metadata, let checksum, let s3):
            buffer.writeInteger(Kind.object.rawValue)
            buffer.writeObjectName(name)
            buffer.writeBlob(blob)
            buffer.writeInteger(size)
            buffer.writeInteger(modified)
            buffer.writeMetadata(metadata)
            buffer.writeBool(checksum != nil)
            if let checksum { buffer.writeInteger(checksum) }
            buffer.writeBool(s3 != nil)
            if let s3 {
                buffer.writeS3Object(s3.object)
                buffer.writeWireString(s3.bucket)
                buffer.writeInteger(s3.persistency.rawValue)
                buffer.writeBool(s3.stored)
                buffer.writeBool(s3.holder)
            }
        }
    }

    static func decode(from buffer: inout ByteBuffer) throws(GedsError) -> NamespaceChange {
        let raw = try buffer.readWireInteger("change", as: UInt8.self)
        guard let kind = Kind(rawValue: raw) else {
            throw GedsError(.protocolViolation, "journal record of unknown kind \(raw)")
        }
        let change: NamespaceChange
        switch kind {
        case .createBucket:
            change = .createBucket(try buffer.readWireString())
        case .deleteBucket:
            change = .deleteBucket(try buffer.readWireString())
        case .setStorage:
            change = .setStorage(bucket: try buffer.readWireString(), try buffer.readOptionalBucketStorage())
        case .seal:
            change = .seal(try buffer.readObjectName(), blob: try buffer.readBlob(), size: try buffer.readWireInteger("size"),
                           metadata: try buffer.readMetadata(), modified: try buffer.readWireInteger("modified"))
        case .delete:
            change = .delete(try buffer.readObjectName(), now: try buffer.readWireInteger("time"))
        case .deletePrefix:
            change = .deletePrefix(bucket: try buffer.readWireString(), prefix: try buffer.readWireString())
        case .rename:
            change = .rename(from: try buffer.readObjectName(), to: try buffer.readObjectName(), now: try buffer.readWireInteger("time"))
        case .copy:
            change = .copy(from: try buffer.readObjectName(), to: try buffer.readObjectName(), now: try buffer.readWireInteger("time"),
                           blob: try buffer.readBlob())
        case .setMetadata:
            change = .setMetadata(try buffer.readObjectName(), try buffer.readMetadata())
        case .storedInS3:
            change = .storedInS3(try buffer.readBlob())
        case .adoptS3Object:
            change = .adoptS3Object(try buffer.readObjectName(), blob: try buffer.readBlob(), size: try buffer.readWireInteger("size"),
                                    metadata: try buffer.readMetadata(), now: try buffer.readWireInteger("time"))
        case .checksum:
            change = .checksum(try buffer.readBlob(), try buffer.readWireInteger("checksum"))
        case .setReplicas:
            change = .setReplicas(bucket: try buffer.readWireString(), try buffer.readWireInteger("replicas"))
        case .replicas:
            change = .replicas(try buffer.readBlob(), try buffer.readWireInteger("replicas"))
        case .ownReplicas:
            change = .ownReplicas(try buffer.readBlob(), try buffer.readWireInteger("replicas"))
        case .s3DeletionsOrdered:
            change = .s3DeletionsOrdered(try buffer.readS3Objects(), now: try buffer.readWireInteger("time"))
        case .s3DeletionsDone:
            change = .s3DeletionsDone(try buffer.readS3Objects())
        case .object:
            let name = try buffer.readObjectName()
            let blob = try buffer.readBlob()
            let size: UInt64 = try buffer.readWireInteger("size")
            let modified: UInt64 = try buffer.readWireInteger("modified")
            let metadata = try buffer.readMetadata()
            let checksum: UInt32? = try buffer.readBool() ? try buffer.readWireInteger("checksum") : nil
            var s3: S3CopyState?
            if try buffer.readBool() {
                s3 = S3CopyState(object: try buffer.readS3Object(), bucket: try buffer.readWireString(),
                                 persistency: try buffer.readPersistency(), stored: try buffer.readBool(), holder: try buffer.readBool())
            }
            change = .object(name, blob: blob, size: size, modified: modified, metadata: metadata, checksum: checksum, s3: s3)
        }
        try buffer.expectEnd()
        return change
    }
}

extension ByteBuffer {
    fileprivate mutating func writeObjectName(_ name: ObjectName) {
        writeWireString(name.bucket)
        writeWireString(name.key)
    }

    fileprivate mutating func readObjectName() throws(GedsError) -> ObjectName {
        ObjectName(bucket: try readWireString(), key: try readWireString())
    }
}
