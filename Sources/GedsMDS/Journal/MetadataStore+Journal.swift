import GedsCore
import NIOCore

/// What the journal needs of the store: its changes as they are made, their replay, a snapshot of it, and what a
/// restart leaves to clean up.
extension MetadataStore {
    /// Keeps a change for the journal; call once it has succeeded, after its event (whose revision it carries).
    mutating func journal(_ change: @autoclosure () -> NamespaceChange) {
        guard journaling else { return }
        unjournaled.append(JournalFormat.Record(revision: events.revision, change: change()))
    }

    mutating func takeUnjournaled() -> [JournalFormat.Record] {
        defer { unjournaled = [] }
        return unjournaled
    }

    /// Makes a journaled change again, through the same operation that made it first.
    mutating func replay(_ record: JournalFormat.Record) throws(GedsError) {
        defer { events.advance(to: record.revision) }
        if case .s3DeletionsDone(let objects) = record.change {
            s3Deleted(objects)
            return
        }
        // Pending deletions of S3 objects are restored, but hold up no replayed change: it was made, so they were
        // done (or lapsed) by then.
        let pending = s3Deletions
        s3Deletions = [:]
        defer { s3Deletions.merge(pending) { ordered, _ in ordered } }
        switch record.change {
        case .createBucket(let name):
            try createBucket(name)
        case .deleteBucket(let name):
            try deleteBucket(name, force: true)
        case .setStorage(let bucket, let storage):
            try setStorage(bucket: bucket, storage)
        case .seal(let name, let blob, let size, let metadata, let modified):
            guard buckets[name.bucket] != nil else { throw GedsError.noSuchBucket(name.bucket) }
            _ = bindSealed(blob, as: name, size: size, metadata: metadata, placements: [], contents: nil, now: modified)
        case .delete(let name, let now):
            _ = try delete(bucket: name.bucket, key: name.key, now: now)
        case .deletePrefix(let bucket, let prefix):
            _ = try delete(bucket: bucket, prefix: prefix)
        case .rename(let from, let to, let now):
            _ = try rename(from: (from.bucket, from.key), to: (to.bucket, to.key), now: now)
        case .copy(let from, let to, let now, let blob):
            nextBlob = BlobID(blob.rawValue &- 1)
            _ = try copy(from: (from.bucket, from.key), to: (to.bucket, to.key), now: now)
        case .setMetadata(let name, let metadata):
            try setMetadata(bucket: name.bucket, key: name.key, metadata: metadata)
        case .storedInS3(let blob):
            try addS3Copy(blob: blob)
        case .adoptS3Object(let name, let blob, let size, let metadata, let now):
            nextBlob = BlobID(blob.rawValue &- 1)
            _ = try adoptS3Object(bucket: name.bucket, key: name.key, size: size, metadata: metadata, now: now)
            underReplicated.remove(blob)  // queued once nodes had time to offer their copies back (`dropLostObjects`)
        case .checksum(let blob, let checksum):
            blobs.setChecksum(checksum, of: blob)
        case .setReplicas(let bucket, let replicas):
            try Replicas.check(Int(replicas))
            guard buckets[bucket] != nil else { throw GedsError.noSuchBucket(bucket) }
            applyReplicas(replicas, toBucket: bucket, queue: false)
        case .replicas(let blob, let replicas):
            // Not queued for re-replication yet: nodes offer their copies back first (see `dropLostObjects`).
            setWantedCopies(replicas, of: blob, queue: false)
        case .ownReplicas(let blob, let replicas):
            guard blobs.contains(blob) else { break }
            ownReplicas[blob] = replicas
            setWantedCopies(replicas, of: blob, queue: false)
        case .s3DeletionsOrdered(let objects, let now):
            _ = orderDeletions(objects.map { s3Name(of: $0) }, now: now)
        case .s3DeletionsDone:
            break  // above
        case .object(let name, let blob, let size, let modified, let metadata, let checksum, let s3):
            guard buckets[name.bucket] != nil else { throw GedsError.noSuchBucket(name.bucket) }
            if blobs.contains(blob) {
                blobs.retain(blob)
            } else {
                blobs.insert(blob, size: size, placements: [])
                if let checksum { blobs.setChecksum(checksum, of: blob) }
                if let s3 {
                    let holder = s3Holders[s3Name(of: s3.object)]
                    assignS3Copy(of: s3.object, in: s3.bucket, to: blob, persistency: s3.persistency, stored: s3.stored)
                    if !s3.holder { s3Holders[s3Name(of: s3.object)] = holder }
                }
            }
            bind(bucket: name.bucket, key: name.key, to: Entry(blob: blob, modified: modified, metadata: metadata))
        }
    }

    /// Rebuilds the namespace from a snapshot's bytes (into an empty store): its revision is the snapshot's, with no
    /// history before it.
    /// A snapshot is replaced whole (renamed into place), so one that fails its checks is damage, not a crash: an error.
    mutating func restore(snapshot bytes: ByteBuffer, revision: UInt64) throws(GedsError) {
        blobs.reserveCapacity(bytes.readableBytes / 64)  // about the smallest record of a key
        let valid = try JournalFormat.forEachRecord(in: bytes) { (record) throws(GedsError) in try replay(record) }
        guard valid == bytes.readableBytes else {
            throw GedsError(.checksumMismatch, "damaged at byte \(valid) of \(bytes.readableBytes)")
        }
        events = EventHistory(capacity: events.capacity)
        events.advance(to: revision)
    }

    /// The store as snapshot records: each bucket (and its S3 store), then each key. What is not durable (nodes,
    /// copies, unsealed objects, inline contents) is left out.
    func writeSnapshotRecords(into buffer: inout ByteBuffer) {
        let revision = events.revision
        for name in buckets.keys.sorted() {
            let bucket = buckets[name]!
            JournalFormat.append(JournalFormat.Record(revision: revision, change: .createBucket(name)), to: &buffer)
            if let storage = bucket.storage {
                JournalFormat.append(JournalFormat.Record(revision: revision, change: .setStorage(bucket: name, storage)), to: &buffer)
            }
            if bucket.replicas != 1 {
                JournalFormat.append(JournalFormat.Record(revision: revision, change: .setReplicas(bucket: name, bucket.replicas)), to: &buffer)
            }
            bucket.index.walk(from: []) { record, key in
                let entry = bucket.index[record]
                let s3 = s3Copies[entry.blob].map { copy in
                    NamespaceChange.S3CopyState(object: object(of: copy), bucket: copy.bucket, persistency: copy.persistency,
                                                stored: copy.stored, holder: s3Holders[S3Name(store: copy.store, key: copy.key)] == entry.blob)
                }
                let change = NamespaceChange.object(ObjectName(bucket: name, key: String(decoding: key, as: UTF8.self)), blob: entry.blob,
                                                    size: blobs.size(of: entry.blob) ?? 0, modified: entry.modified,
                                                    metadata: bucket.metadata[record] ?? [:], checksum: blobs.checksum(of: entry.blob), s3: s3)
                JournalFormat.append(JournalFormat.Record(revision: revision, change: change), to: &buffer)
                if let replicas = ownReplicas[entry.blob] {
                    JournalFormat.append(JournalFormat.Record(revision: revision, change: .ownReplicas(entry.blob, replicas)), to: &buffer)
                } else if let replicas = replicated[entry.blob] {
                    JournalFormat.append(JournalFormat.Record(revision: revision, change: .replicas(entry.blob, replicas)), to: &buffer)
                }
                return .next
            }
        }
        for (name, lapse) in s3Deletions {
            let change = NamespaceChange.s3DeletionsOrdered([object(of: name)], now: lapse - MetadataStore.s3DeletionLapseMilliseconds)
            JournalFormat.append(JournalFormat.Record(revision: revision, change: change), to: &buffer)
        }
    }

    /// After a restore: new blob ids in this run's epoch, and node numbers no node of an earlier run holds (a node
    /// that has not noticed the restart must be told it is unknown, not be taken for another).
    /// Restored deletions of S3 objects get a fresh lapse from `now` (MDS time): the node told to delete one may still
    /// be at it, and until it confirms no upload goes there and read-through does not bring the key back.
    mutating func beginRun(epoch: UInt32, now: UInt64) {
        nextBlob = BlobID(UInt64(epoch & 0xFFFFF) << 44)
        nextNode = ((epoch & 0xFFF) << 20) | 1
        for name in s3Deletions.keys { s3Deletions[name] = now + MetadataStore.s3DeletionLapseMilliseconds }
    }

    /// Objects restored from the journal that no node offered back and that have no S3 copy: their bytes are gone.
    /// Deleted (and journaled as deleted); returns how many.
    mutating func dropLostObjects(now: UInt64) -> Int {
        var lost: [ObjectName] = []
        for (name, bucket) in buckets {
            bucket.index.walk(from: []) { record, key in
                let blob = bucket.index[record].blob
                if blobs.placements(of: blob).isEmpty, s3Copies[blob]?.stored != true {
                    lost.append(ObjectName(bucket: name, key: String(decoding: key, as: UTF8.self)))
                }
                return .next
            }
        }
        for name in lost { _ = try? delete(bucket: name.bucket, key: name.key, now: now) }
        findUnderReplicated()
        return lost.count
    }
}
