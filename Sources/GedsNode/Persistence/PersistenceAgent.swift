import GedsCarrier
import GedsCore
import GedsS3
import GedsTCP
import GedsWire
import Logging
import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A node's side of S3 persistence: its S3 clients, the write-back queue, write-through, read-through (lookups and
/// listings that take in the bucket's S3 store), the S3 side of renames, copies, metadata and deletions, and moving
/// tier-1 blobs on to S3 when tier 1 fills up.
///
/// Not yet: a bucket's S3 store changing the S3 copies already assigned; `copy` of an object whose write-back is
/// still pending shares the blob, so only the source's name reaches S3; a rename into a bucket without an S3
/// store, or to another S3 service, leaves the S3 object where it was (`CopyObject` works within one service);
/// while a server-side copy (rename or copy of an object only S3 holds) runs, that object has no readable copy; an
/// abandoned upload landing after a newer object's upload to the same S3 key can overwrite it (one `PUT` long);
/// a blob relocated away before its write-back upload ran is dropped from the queue (logged).
final class PersistenceAgent: Tier1Overflow {
    let s3Clients: S3Clients
    private let writeBack = Mutex<WriteBackQueue>(WriteBackQueue())
    /// Where the bytes to upload are, and where tier-1 blobs leave from.
    private let tiers: TierManager
    private let mds: MDSClient
    /// This node's index at the MDS, for the locations it withdraws.
    private let session: MDSSession
    /// Connections to other nodes, for the requests a hand-off and `flushEverywhere` send them.
    private let peers: ConnectionPool
    private let nodeName: String
    private let logger: Logger

    init(tiers: TierManager, mds: MDSClient, session: MDSSession, peers: ConnectionPool, nodeName: String, logger: Logger) {
        s3Clients = S3Clients(logger: logger)
        self.tiers = tiers
        self.mds = mds
        self.session = session
        self.peers = peers
        self.nodeName = nodeName
        self.logger = logger
    }

    func shutdown() async {
        await s3Clients.shutdown()
    }

    /// The write-back uploads not done yet (a level `/metrics` reports).
    var pendingUploads: Int { writeBack.withLock { $0.pending.count } }

    // MARK: S3 clients

    private func s3Client(for object: S3ObjectReference) throws(GedsError) -> S3Client {
        try s3Clients.client(for: object)
    }

    // MARK: Seal

    /// After a seal was published: makes the object as durable as its persistency says (`requested`, else its
    /// bucket's). A hand-off target holds the bytes, so it is the one asked to. Write-through failures are
    /// thrown, but the object stays published and is queued for upload, so it still reaches S3.
    func persistSealed(_ blob: BlobID, sealReply: Reply, requested: Persistency?,
                       holder target: NodeInfo?) async throws(GedsError) {
        var assignment: S3Assignment?
        if case .s3Assignment(let assigned) = sealReply { assignment = assigned }
        let persistency = requested ?? assignment?.persistency ?? .ephemeral
        guard persistency != .ephemeral else { return }
        guard let target else {
            return try await persist(blob, persistency, to: assignment?.object)
        }
        // The target uploads the whole object before it answers a write-through: allow for that.
        try await peers.ask(target, .persistBlob(blob: blob, persistency: persistency, object: assignment?.object),
                      timeout: .seconds(3600))
    }

    /// Makes a blob held here durable: tier 1 now, S3 now (write-through) or S3 soon (write-back).
    func persist(_ blob: BlobID, _ persistency: Persistency, to object: S3ObjectReference?) async throws(GedsError) {
        switch persistency {
        case .ephemeral:
            return
        case .tier1:
            try await tiers.persistInTier1(blob)
        case .writeThrough, .writeBack:
            guard let object else {
                throw GedsError(.invalidArgument, "persistency \(persistency) needs an S3 store for the bucket (geds bucket BUCKET --s3 ENDPOINT/BUCKET)")
            }
            if persistency == .writeBack { return queueWriteBack(blob, to: object) }
            do {
                try await upload(blob)
            } catch where error.code == .noSuchBlob {
                // Deleted since the seal: there is nothing left to make durable.
                return
            } catch {
                queueWriteBack(blob, to: object)
                throw GedsError(error.code, "write-through to \(object.url) failed; the object is sealed and readable "
                                + "in GEDS and queued for upload until S3 takes it: \(error.message)")
            }
        }
    }

    /// Puts the blob's bytes (from tier 0, else tier 1) in S3, then tells the MDS, which lists the S3 copy from
    /// then on. The MDS is asked first where the copy goes now (the blob's key may have been renamed since it was
    /// assigned) and whether a deletion of that S3 object is under way: the upload waits for it, so that the
    /// deletion, ordered for an older object under the same name, cannot remove these bytes.
    func upload(_ blob: BlobID) async throws(GedsError) {
        let reply = try await callOnceNoDeletionPending(.s3Assignment(blob: blob))
        guard case .s3Assignment(let current) = reply else { throw MDSClient.unexpected(reply) }
        let (object, metadata) = (current.object, current.metadata)
        let client = try s3Client(for: object)
        let (descriptor, offset, size) = try tiers.openHeldCopy(blob)
        defer { try? descriptor.close() }
        try await client.upload(bucket: object.bucket, key: object.key, fileDescriptor: descriptor, offset: offset, length: size,
                                metadata: metadata)
        NodeMetrics.writtenS3.increment(by: Int64(size))
        do {
            try await mds.expectOK(.addS3Copy(blob: blob))
        } catch where error.code == .noSuchBlob {
            // Deleted while the bytes were on their way: they must not bring the key back.
            try await abandon(object)
            throw error
        }
        try await followRenameAndMetadata(of: blob, at: object, with: metadata)
    }

    /// Asks the MDS, again every 20 ms while it answers `s3DeletionPending` (an S3 object this request would write
    /// is being deleted; the order lapses within a minute even when its node died).
    private func callOnceNoDeletionPending(_ request: Request) async throws(GedsError) -> Reply {
        while true {
            do {
                return try await mds.call(request)
            } catch where error.code == .s3DeletionPending {
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    /// Deletes an S3 object this node put there for a blob that no longer goes there, unless a newer blob holds it.
    private func abandon(_ object: S3ObjectReference) async throws(GedsError) {
        let reply = try await mds.call(.abandonS3Upload(object))
        guard case .s3Deletions(_, let objects) = reply else { throw MDSClient.unexpected(reply) }
        try await deleteS3Objects(objects)
    }

    /// The blob's bytes are at `object` with `metadata` (nil: not known): makes S3 follow what GEDS says now. A
    /// rename since the upload started moves them (server-side copy, the old object abandoned), and metadata set
    /// since is rewritten in place. A few rounds at most, each answering a change made during the one before.
    func followRenameAndMetadata(of blob: BlobID, at object: S3ObjectReference,
                                 with metadata: [String: String]?) async throws(GedsError) {
        var object = object
        var metadata = metadata
        for _ in 0..<4 {
            let current: S3Assignment
            do throws(GedsError) {
                let reply = try await mds.call(.s3Assignment(blob: blob))
                guard case .s3Assignment(let assignment) = reply else { throw MDSClient.unexpected(reply) }
                current = assignment
            } catch where error.code == .noSuchBlob || error.code == .s3DeletionPending {
                return  // deleted (its S3 object went with it), or renamed right now (that rename moves it)
            }
            if current.object == object, current.metadata == metadata { return }
            try await s3Client(for: current.object).copyObject(fromBucket: object.bucket, fromKey: object.key,
                                                               toBucket: current.object.bucket, toKey: current.object.key,
                                                               metadata: current.metadata)
            if current.object != object { try await abandon(object) }
            object = current.object
            metadata = current.metadata
        }
    }

    // MARK: Renaming and metadata

    /// Renames in GEDS; in a bucket with an S3 store the S3 object follows (a server-side copy, then the old one
    /// is deleted), so S3 lists the new name only. An object not in S3 yet is uploaded to the new name.
    func rename(bucket: String, key: String, toBucket: String, toKey: String) async throws(GedsError) {
        try await followInS3(.rename(fromBucket: bucket, fromKey: key, toBucket: toBucket, toKey: toKey),
                             "\(bucket)/\(key) was renamed")
    }

    /// Copies in GEDS; into a bucket with an S3 store, an object in S3 already is copied there server-side (a new
    /// object whose copy is that S3 object), so S3 has both names. Otherwise the copy shares the sealed bytes.
    func copy(bucket: String, key: String, toBucket: String, toKey: String) async throws(GedsError) {
        try await followInS3(.copy(fromBucket: bucket, fromKey: key, toBucket: toBucket, toKey: toKey),
                             "\(bucket)/\(key) was copied")
    }

    /// A rename or copy at the MDS, then the S3 side it answers (`s3Move`): the server-side copy, its report, the
    /// old object's deletion for a rename, and the confirmation that lets uploads to both names go ahead.
    private func followInS3(_ request: Request, _ done: String) async throws(GedsError) {
        let reply = try await callOnceNoDeletionPending(request)
        if case .ok = reply { return }
        guard case .s3Move(let blob, let from, let to, let deleteSource) = reply else { throw MDSClient.unexpected(reply) }
        var failure: GedsError?
        do throws(GedsError) {
            try await s3Client(for: to).copyObject(fromBucket: from.bucket, fromKey: from.key, toBucket: to.bucket,
                                                   toKey: to.key)
            do {
                try await mds.expectOK(.addS3Copy(blob: blob))
            } catch where error.code == .noSuchBlob {
                // Deleted under its new name meanwhile: the copy must not bring that key back.
                try await abandon(to)
            }
            if deleteSource { try await s3Client(for: from).deleteObject(bucket: from.bucket, key: from.key) }
        } catch {
            failure = GedsError(error.code, "\(done) in GEDS, but its S3 object \(from.url) could not be copied to "
                                + "\(to.url): \(error.message)")
        }
        try await mds.expectOK(.s3Deleted(deleteSource ? [from, to] : [to]))
        if let failure { throw failure }
    }

    /// Replaces an object's user metadata; in S3 too when the object is there already (its `x-amz-meta-*`
    /// rewritten in place by a server-side copy).
    func setMetadata(bucket: String, key: String, _ metadata: [String: String]) async throws(GedsError) {
        try await mds.expectOK(.setMetadata(bucket: bucket, key: key, metadata: metadata))
        guard try await bucketStorage(bucket) != nil else { return }
        let info = try await mds.lookup(bucket: bucket, key: key)
        guard let object = info.locations.lazy.compactMap(\.s3Object).first else { return }
        try await followRenameAndMetadata(of: info.blob, at: object, with: nil)
    }

    // MARK: Write-back

    func queueWriteBack(_ blob: BlobID, to object: S3ObjectReference) {
        writeBack.withLock { queue in
            guard queue.add(blob, to: object), queue.uploaders < PersistenceAgent.maximumUploaders else { return }
            queue.uploaders += 1
            Task { [self] in await drainWriteBack() }
        }
    }

    /// Write-back uploads in flight at once per node (S3 answers each request after a round trip or more).
    static let maximumUploaders = 4

    /// One uploader: takes the first queued blob nobody uploads yet, until there is none; a failure puts the blob
    /// at the back and waits (doubling from 100 ms up to 5 s), so an S3 outage costs retries, never an object.
    private func drainWriteBack() async {
        var delay = 100
        while true {
            let next = writeBack.withLock { queue -> (blob: BlobID, object: S3ObjectReference)? in
                guard let entry = queue.take() else {
                    queue.uploaders -= 1
                    return nil
                }
                return entry
            }
            guard let (blob, object) = next else { return }
            var done = true
            do {
                try await upload(blob)
                delay = 100
            } catch where error.code == .noSuchBlob {
                logger.warning("write-back of \(object.url) dropped: the object was deleted, or this node no longer holds it")
            } catch {
                done = false
                logger.warning("write-back of \(object.url) failed, retrying in \(delay) ms: \(error.message)")
                writeBack.withLock { $0.lastError = error.message }
                NodeMetrics.s3UploadFailures.increment()
            }
            writeBack.withLock { queue in queue.finish(blob, done: done) }
            if !done {
                try? await Task.sleep(for: .milliseconds(delay))
                delay = min(delay * 2, 5_000)
            }
        }
    }

    /// Waits until every queued write-back upload is done; `timedOut` (saying how many are left and why) after
    /// `timeoutMilliseconds`.
    func flush(timeoutMilliseconds: UInt64) async throws(GedsError) {
        let start = NIODeadline.now()
        while true {
            let (left, lastError) = writeBack.withLock { ($0.pending.count, $0.lastError) }
            if left == 0 { return }
            if NIODeadline.now() - start > .milliseconds(Int64(clamping: timeoutMilliseconds)) {
                throw GedsError(.timedOut, "node \(nodeName) still has \(left) write-back uploads pending after "
                                + "\(timeoutMilliseconds) ms (last error: \(lastError ?? "none"))")
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// `flush` here and then on every other live node (each over its own port).
    func flushEverywhere(timeoutMilliseconds: UInt64) async throws(GedsError) {
        try await flush(timeoutMilliseconds: timeoutMilliseconds)
        for peer in try await mds.nodes() where peer.alive && peer.name != nodeName {
            try await peers.ask(peer, .flush(timeoutMilliseconds: timeoutMilliseconds),
                          timeout: .milliseconds(Int64(clamping: timeoutMilliseconds) + 10_000))
        }
    }

    /// A clean shutdown: queued write-backs go first (for at most five minutes, then the rest is logged).
    func flushBeforeLeaving() async {
        do {
            try await flush(timeoutMilliseconds: 300_000)
        } catch {
            logger.error("leaving with objects not in S3: \(error.message)")
        }
    }

    /// Answers the node requests of persistence: `persistBlob` (from a node that handed a sealed object to this
    /// one) and `flush`.
    func respond(to request: Request) -> Response {
        .deferred { [self] () async -> Reply in
            do throws(GedsError) {
                switch request {
                case .persistBlob(let blob, let persistency, let object):
                    try await persist(blob, persistency, to: object)
                case .flush(let timeout):
                    try await flush(timeoutMilliseconds: timeout)
                default:
                    throw GedsError(.invalidArgument, "not a persistence request")
                }
                return .ok
            } catch {
                return .failure(error)
            }
        }
    }

    // MARK: Deleting

    /// Deletes a key, and in a bucket with an S3 store its S3 object too (the MDS says which objects may go: not
    /// one a newer object holds). A key only S3 has is deleted there; `noSuchObject` when neither has it.
    func delete(bucket: String, key: String) async throws(GedsError) {
        let reply = try await mds.call(.deleteObject(bucket: bucket, key: key))
        if case .ok = reply { return }
        guard case .s3Deletions(let deleted, let objects) = reply else { throw MDSClient.unexpected(reply) }
        var inS3 = false
        if deleted == 0 {
            for object in objects {
                do {
                    _ = try await s3Client(for: object).headObject(bucket: object.bucket, key: object.key)
                    inS3 = true
                } catch where error.code == .noSuchObject {
                } catch {
                    try? await mds.expectOK(.s3Deleted(objects))
                    throw GedsError(error.code, "\(bucket)/\(key) is not in GEDS, and its S3 store could not be asked: \(error.message)")
                }
            }
        }
        try await deleteS3Objects(objects)
        if deleted == 0, !inS3 { throw GedsError.noSuchObject(bucket, key) }
    }

    /// Deletes every key under `prefix` in GEDS and, in a bucket with an S3 store, every S3 object under it that no
    /// object sealed meanwhile holds. Returns how many keys GEDS had.
    func delete(bucket: String, prefix: String) async throws(GedsError) -> UInt64 {
        let deleted = try await mds.count(.deletePrefix(bucket: bucket, prefix: prefix))
        guard let storage = try await bucketStorage(bucket) else { return deleted }
        try await deleteS3Objects(of: bucket, storage, under: prefix)
        return deleted
    }

    /// Deletes an empty bucket, or with `force` every object in it first, S3 objects under its store's prefix
    /// included (the S3 bucket itself stays: it may hold other things).
    func deleteBucket(_ bucket: String, force: Bool) async throws(GedsError) {
        if force, let storage = try await bucketStorage(bucket) {
            _ = try await mds.count(.deletePrefix(bucket: bucket, prefix: ""))
            try await deleteS3Objects(of: bucket, storage, under: "")
        }
        try await mds.expectOK(.deleteBucket(bucket, force: force))
    }

    /// The S3 side of deleting a prefix: page by page, the MDS claims the listed keys GEDS does not have (those it
    /// just deleted and those only S3 had) and this node deletes them.
    private func deleteS3Objects(of bucket: String, _ storage: BucketStorage, under prefix: String) async throws(GedsError) {
        let any = S3ObjectReference(endpoint: storage.endpoint, bucket: storage.bucket, key: "", region: storage.region)
        let client = try s3Client(for: any)
        var startAfter: String?
        while true {
            let page: S3ListPage
            do {
                page = try await client.listObjects(bucket: storage.bucket, prefix: storage.prefix + prefix,
                                                    startAfter: startAfter, maxKeys: Int(WireLimits.maximumListKeys))
            } catch {
                throw GedsError(error.code, "\(bucket)/\(prefix) was deleted in GEDS, but its S3 store could not be listed: \(error.message)")
            }
            let keys = page.objects.compactMap { storage.gedsKey(forS3Key: $0.key) }
            if !keys.isEmpty {
                let reply = try await mds.call(.claimS3Deletions(bucket: bucket, keys: keys))
                guard case .s3Deletions(_, let objects) = reply else { throw MDSClient.unexpected(reply) }
                try await deleteS3Objects(objects)
            }
            guard page.isTruncated, let last = page.objects.last?.key else { return }
            startAfter = last
        }
    }

    /// Deletes S3 objects the MDS ordered deleted, then tells it they are gone (also when one failed: this node will
    /// not try again, so uploads to them need not wait any longer).
    func deleteS3Objects(_ objects: [S3ObjectReference]) async throws(GedsError) {
        guard !objects.isEmpty else { return }
        var failure: GedsError?
        for object in objects {
            do {
                try await s3Client(for: object).deleteObject(bucket: object.bucket, key: object.key)
            } catch {
                failure = GedsError(error.code, "deleted in GEDS, but \(object.url) could not be deleted from S3: \(error.message)")
            }
        }
        try await mds.expectOK(.s3Deleted(objects))
        if let failure { throw failure }
    }

    // MARK: Read-through from S3

    /// The object under a key, read through from the bucket's S3 store when GEDS does not have it: the S3 object
    /// becomes a GEDS object whose one copy is in S3 (a whole-object read then caches it in tier 0).
    func lookup(bucket: String, key: String) async throws(GedsError) -> ObjectInfo {
        do {
            return try await mds.lookup(bucket: bucket, key: key)
        } catch where error.code == .noSuchObject {
            guard let storage = try await bucketStorage(bucket) else { throw error }
            let object = storage.object(forKey: key)
            let attributes: S3ObjectAttributes
            do {
                attributes = try await s3Client(for: object).headObject(bucket: object.bucket, key: object.key)
            } catch where error.code == .noSuchObject {
                throw GedsError.noSuchObject(bucket, key)
            } catch {
                throw GedsError(error.code, "no object \(bucket)/\(key) in GEDS, and its S3 store could not be asked: \(error.message)")
            }
            let reply = try await mds.call(.adoptS3Object(bucket: bucket, key: key, size: attributes.size,
                                                          metadata: attributes.metadata))
            guard case .object(let info) = reply else { throw MDSClient.unexpected(reply) }
            return info
        }
    }

    func bucketStorage(_ bucket: String) async throws(GedsError) -> BucketStorage? {
        let reply = try await mds.call(.bucketStorage(bucket: bucket))
        guard case .storage(let storage) = reply else { throw MDSClient.unexpected(reply) }
        return storage
    }

    // MARK: Listing

    /// One page of a bucket's keys: GEDS's merged with its S3 store's (keys under the store's prefix, without it),
    /// each side asked for a page after `startAfter` (see `ListingMerge`).
    func list(bucket: String, prefix: String, delimiter: String, startAfter: String,
                     maxKeys: UInt32) async throws(GedsError) -> ListPage {
        let page = try await mds.list(bucket: bucket, prefix: prefix, delimiter: delimiter, startAfter: startAfter,
                                      maxKeys: maxKeys)
        guard let storage = try await bucketStorage(bucket) else { return page }
        let limit = Int(min(max(maxKeys, 1), WireLimits.maximumListKeys))
        let any = S3ObjectReference(endpoint: storage.endpoint, bucket: storage.bucket, key: "", region: storage.region)
        let s3: S3ListPage
        do {
            s3 = try await s3Client(for: any).listObjects(
                bucket: storage.bucket, prefix: storage.prefix + prefix, delimiter: delimiter,
                startAfter: startAfter.isEmpty ? nil : storage.prefix + startAfter, maxKeys: limit)
        } catch {
            throw GedsError(error.code, "bucket \(bucket) cannot be listed: its S3 store did not answer: \(error.message)")
        }
        var s3Objects: [ListEntry] = []
        for object in s3.objects {
            guard let key = storage.gedsKey(forS3Key: object.key) else { continue }
            s3Objects.append(ListEntry(key: key, size: object.size, modified: parseS3Date(object.lastModified)))
        }
        return ListingMerge.merge(geds: page, s3Objects: s3Objects,
                                  s3Prefixes: s3.commonPrefixes.compactMap { storage.gedsKey(forS3Key: $0) },
                                  s3Truncated: s3.isTruncated, startAfter: startAfter, limit: limit)
    }

    // MARK: Spilling tier 1 to S3

    /// Before `size` more bytes go into tier 1: when they would take it past its high-water mark (90 %), the
    /// oldest tier-1 blobs whose bucket has an S3 store move there until it is under its low-water mark (75 %)
    /// with them. Blobs without an S3 store stay; tier 1 then fills up and its writes fail as before.
    func makeTier1Room(for size: UInt64) async throws(GedsError) {
        guard let tier1 = tiers.tier1 else { return }
        let incoming = tier1.allocation(forSize: size)
        guard tier1.usage.reserved + incoming > tier1.capacity / 10 * 9 else { return }
        let target = tier1.capacity / 4 * 3
        for victim in tiers.tier1OldestFirst() {
            guard tier1.usage.reserved + incoming > target else { return }
            // No S3 store for its bucket (or deleted meanwhile): it stays.
            guard case .s3Assignment(let assignment)? = try? await mds.call(.s3Assignment(blob: victim)) else { continue }
            do {
                try await moveToS3(victim, to: assignment.object, alreadyThere: assignment.stored)
            } catch {
                // S3 refused or is down: the next blob would cost the same retries. The tier-1 write goes ahead
                // and fails with out of space if there is still no room.
                logger.warning("tier 1 of node \(nodeName) cannot spill on to S3: \(error.message)")
                return
            }
        }
    }

    /// Moves one blob from tier 1 to S3: the upload and the MDS's S3 location first, then this node's tier-1
    /// location is withdrawn, and only then does the file go (see `TierManager.moveOutOfTier1`).
    /// `alreadyThere`: a node put it in S3 already (write-through, write-back): no second upload.
    private func moveToS3(_ blob: BlobID, to object: S3ObjectReference, alreadyThere: Bool) async throws(GedsError) {
        try await tiers.moveOutOfTier1(blob) { [self] () throws(GedsError) in
            if !alreadyThere { try await upload(blob) }
            // In S3 now: a write-back still queued for it has nothing left to do.
            writeBack.withLock { queue in queue.forget(blob) }
            try await mds.expectOK(.removeLocation(blob: blob, node: session.index))
            logger.debug("moved blob \(blob.fileName) from tier 1 to \(object.url)")
        }
    }

    /// Refuses a persistency that needs an S3 store in a bucket without one, before anything is written.
    func checkPersistency(_ persistency: Persistency?, bucket: String) async throws(GedsError) {
        if let persistency, persistency.uploadsToS3, try await bucketStorage(bucket) == nil {
            throw GedsError(.invalidArgument, "persistency \(persistency) needs an S3 store, and bucket \(bucket) has none "
                            + "(geds bucket \(bucket) --s3 ENDPOINT/BUCKET)")
        }
    }
}

/// An S3 `LastModified` (`2026-11-25T21:56:07.000Z`) as milliseconds since 1970; 0 when it does not parse.
func parseS3Date(_ text: String) -> UInt64 {
    let digits = text.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
    guard digits.count >= 6 else { return 0 }
    var parts = tm()
    parts.tm_year = Int32(digits[0] - 1900)
    parts.tm_mon = Int32(digits[1] - 1)
    parts.tm_mday = Int32(digits[2])
    parts.tm_hour = Int32(digits[3])
    parts.tm_min = Int32(digits[4])
    parts.tm_sec = Int32(digits[5])
    let seconds = timegm(&parts)
    let milliseconds = digits.count > 6 ? UInt64(digits[6] % 1000) : 0
    return seconds < 0 ? 0 : UInt64(seconds) * 1000 + milliseconds
}

extension BucketStorage {
    /// A store at `address` (`http(s)://HOST[:PORT]/BUCKET[/PREFIX]`, as `geds bucket --s3` takes it); `prefix`,
    /// when given, replaces the address's.
    public init(address: String, prefix: String? = nil, region: String = "us-east-1",
                persistency: Persistency) throws(GedsError) {
        let parsed = try S3BucketAddress(parsing: address)
        self.init(endpoint: parsed.endpoint, bucket: parsed.bucket, prefix: prefix ?? parsed.prefix, region: region,
                  persistency: persistency)
    }
}
