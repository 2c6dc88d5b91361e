import GedsCore
import GedsTCP
import GedsTier0
import GedsWire
import Synchronization

/// The write path: objects created in tier 0, sealed at the MDS (their bytes inline when small; handed off to
/// another node first when asked), then made durable by the persistence agent; and relocation of sealed objects to
/// other nodes, which pull them.
final class WritePath: Sendable {
    private let tiers: TierManager
    private let persistence: PersistenceAgent
    /// For a relocation's source when this node holds no copy (the copy a reader would pick).
    private let readPath: ReadPath
    private let mds: MDSClient
    /// This node's index (the owner of what it creates) and the MDS's inline limit.
    private let session: MDSSession
    /// Connections to the nodes asked to pull.
    private let peers: ConnectionPool
    private let timeoutMilliseconds: Int64

    init(tiers: TierManager, persistence: PersistenceAgent, readPath: ReadPath, mds: MDSClient, session: MDSSession,
         peers: ConnectionPool, timeoutMilliseconds: Int64) {
        self.tiers = tiers
        self.persistence = persistence
        self.readPath = readPath
        self.mds = mds
        self.session = session
        self.peers = peers
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// Objects created without a round trip to the MDS (see `LocalCreates`).
    private let localCreates = Mutex(LocalCreates())

    /// `exclusive`: create-if-absent (`objectExists` now, or at the seal if another writer sealed the key first).
    /// `replicas`: the object's replication factor (nil: its bucket's).
    func create(bucket: String, key: String, exclusive: Bool, replicas: Int?) async throws(GedsError) -> WritableBlob {
        let blob = try await newBlob(bucket: bucket, key: key, exclusive: exclusive, replicas: replicas)
        do {
            return try tiers.tier0.create(blob)
        } catch {
            try? await forget(blob)
            throw error
        }
    }

    /// A whole object from bytes in hand, created and sealed in one step (as `create`, `write` and `seal`): a small
    /// one goes straight into a slab slot, with no file to write and read back.
    func put(bucket: String, key: String, bytes: [UInt8], metadata: [String: String], persistency: Persistency?,
             exclusive: Bool) async throws(GedsError) {
        try UserMetadata.validate(metadata)
        let blob = try await newBlob(bucket: bucket, key: key, exclusive: exclusive, replicas: nil)
        let stored = bytes.withUnsafeBytes { raw in Result { () throws(GedsError) in try tiers.tier0.store(blob, bytes: raw) } }
        do {
            try stored.get()
        } catch {
            try? await forget(blob)
            throw error
        }
        let size = UInt64(bytes.count)
        try await publish(blob, size: size, contents: keptInline(size) ? bytes : nil, metadata: metadata,
                          handingOffTo: nil, persistency: persistency, waitForReplicas: true)
    }

    /// The id of a new object: a plain create in a bucket a create here has found takes a reserved id and asks the
    /// MDS nothing (the seal announces it); any other asks the MDS.
    private func newBlob(bucket: String, key: String, exclusive: Bool, replicas: Int?) async throws(GedsError) -> BlobID {
        if let replicas { try Replicas.check(replicas) }
        if !exclusive, replicas == nil, let reserved = try await reservedBlob(for: ObjectName(bucket: bucket, key: key)) {
            return reserved
        }
        let reply = try await mds.call(.createObject(bucket: bucket, key: key, node: session.index, exclusive: exclusive,
                                                     replicas: UInt8(replicas ?? 0)))
        guard case .created(let created) = reply else { throw MDSClient.unexpected(reply) }
        localCreates.withLock { $0.bucketExists(bucket) }
        return created
    }

    /// A reserved id for a new object (reserving more when none is left); nil when the bucket is not known here yet.
    private func reservedBlob(for name: ObjectName) async throws(GedsError) -> BlobID? {
        while true {
            let index = session.index
            switch localCreates.withLock({ $0.take(for: name, node: index) }) {
            case .blob(let blob): return blob
            case .unknownBucket: return nil
            case .noIDs:
                let count = LocalCreates.reservation
                let reply = try await mds.call(.reserveBlobs(node: index, count: count))
                guard case .created(let first) = reply else { throw MDSClient.unexpected(reply) }
                localCreates.withLock { $0.reserved(first: first, count: count, node: index) }
            }
        }
    }

    /// A bucket this node deleted: creates there ask the MDS again.
    func bucketDeleted(_ bucket: String) {
        localCreates.withLock { $0.bucketGone(bucket) }
    }

    /// Seals an object: it becomes immutable and visible everywhere in one step at the MDS. With a target,
    /// the target takes the bytes first and the object is published with the target as its only copy, so
    /// a failed hand-off leaves nothing half-made (an older object under the key stays as it was). Then the
    /// object is made as durable as `persistency` (else its bucket's) says; see `PersistenceAgent.persistSealed`.
    /// A replicated object's other copies are pulled by the nodes the MDS names before the seal, so it is published
    /// with all of them; unless `waitForReplicas` is false: then it is published with one, and the MDS has the
    /// others made afterwards (re-replication).
    func seal(_ writable: WritableBlob, metadata: [String: String], handingOffTo target: NodeInfo?,
              persistency: Persistency?, waitForReplicas: Bool = true) async throws(GedsError) {
        try UserMetadata.validate(metadata)
        let contents = inlineContents(of: writable)
        let size = try writable.seal()
        try await publish(writable.blob, size: size, contents: contents, metadata: metadata, handingOffTo: target,
                          persistency: persistency, waitForReplicas: waitForReplicas)
    }

    /// Publishes a blob sealed in tier 0 (`contents`: its bytes for the MDS to keep inline, when they fit), then
    /// makes it as durable as `persistency` says; see `seal`.
    private func publish(_ blob: BlobID, size: UInt64, contents: [UInt8]?, metadata: [String: String], handingOffTo target: NodeInfo?,
                         persistency: Persistency?, waitForReplicas: Bool) async throws(GedsError) {
        NodeMetrics.writtenLocal.increment(by: Int64(size))
        tiers.pin(blob)  // not spilled while pending at the MDS
        defer { tiers.unpin(blob) }
        // Created here without the MDS: announced now, with the seal itself when nothing has to happen in between.
        let unannounced = localCreates.withLock { $0.announce(blob) }
        var known = unannounced == nil
        let sealReply: Reply
        do {
            let placement: BlobPlacement
            if let target {
                if let unannounced { try await announce(blob, as: unannounced) }
                known = true
                try await askToPull(blob, size: size, from: tiers.ownLocation(of: blob), to: target)
                placement = BlobPlacement(node: 0, tier: .tier0)
            } else {
                try await tiers.checkTier0Capacity(sealing: blob, size: size)
                placement = tiers.tier0Placement(of: blob)
            }
            let inline = contents?.count == Int(size) ? contents : nil
            if let unannounced, target == nil,
               let sealed = try await sealNew(blob, as: unannounced, size: size, metadata: metadata, placement: placement, contents: inline) {
                sealReply = sealed
            } else {
                known = true
                if waitForReplicas { try await placeReplicas(blob, size: size, keepingOwnCopy: target == nil) }
                sealReply = try await mds.call(.sealObject(blob: blob, size: size, metadata: metadata, placement: placement,
                                                           contents: inline))
            }
        } catch {
            tiers.discardTier0Copy(blob)
            if known { try? await mds.expectOK(.abortObject(blob: blob)) }
            throw error
        }
        if target != nil { tiers.discardTier0Copy(blob) } else { tiers.admitted(blob) }
        try await persistence.persistSealed(blob, sealReply: sealReply, requested: persistency, holder: target)
    }

    /// `sealNewObject`: its reply, or nil when the MDS only created the object (it wants copies placed first). A bucket
    /// it finds gone is no longer taken for known (the MDS forgot the object already).
    private func sealNew(_ blob: BlobID, as name: ObjectName, size: UInt64, metadata: [String: String], placement: BlobPlacement,
                         contents: [UInt8]?) async throws(GedsError) -> Reply? {
        let reply: Reply
        do {
            reply = try await mds.call(.sealNewObject(blob: blob, bucket: name.bucket, key: name.key, size: size, metadata: metadata,
                                                      placement: placement, contents: contents))
        } catch {
            if error.code == .noSuchBucket { bucketDeleted(name.bucket) }
            throw error
        }
        if case .created = reply { return nil }
        return reply
    }

    /// Makes an object created here known to the MDS as pending, under its reserved id (before a hand-off).
    private func announce(_ blob: BlobID, as name: ObjectName) async throws(GedsError) {
        let reply = try await mds.call(.createObject(bucket: name.bucket, key: name.key, node: session.index, reserved: blob))
        guard case .created = reply else { throw MDSClient.unexpected(reply) }
    }

    /// Has the nodes the MDS names pull the copies the object lacks beyond those placed (and our own, when we keep
    /// it), all at once from our copy; each publishes itself as a copy of the pending object.
    private func placeReplicas(_ blob: BlobID, size: UInt64, keepingOwnCopy: Bool) async throws(GedsError) {
        let targets = try await mds.nodes(.placeCopies(blob: blob, holder: keepingOwnCopy ? session.index : 0, leaving: 0))
        guard !targets.isEmpty else { return }
        let source = tiers.ownLocation(of: blob)
        let failures = await withTaskGroup(of: GedsError?.self) { group in
            for target in targets {
                group.addTask { [self] in
                    do throws(GedsError) {
                        try await askToPull(blob, size: size, from: source, to: target)
                        return nil
                    } catch {
                        return GedsError(error.code, "copy to \(target.name): \(error.message)")
                    }
                }
            }
            return await group.reduce(into: [GedsError]()) { failures, failure in if let failure { failures.append(failure) } }
        }
        if let first = failures.first { throw first }
    }

    /// Whether the MDS keeps an object of `size` bytes inline (within the limit it gave at registration).
    private func keptInline(_ size: UInt64) -> Bool { size > 0 && size <= UInt64(session.inlineLimit) }

    /// The bytes of an object about to be sealed, when it is small enough for the MDS to keep them inline.
    /// Nil when it cannot be read back (the seal then goes without: the node's copy serves reads).
    private func inlineContents(of writable: WritableBlob) -> [UInt8]? {
        let size = writable.size
        guard keptInline(size) else { return nil }
        let bytes = [UInt8](unsafeUninitializedCapacity: Int(size)) { buffer, count in
            count = (try? writable.read(into: UnsafeMutableRawBufferPointer(buffer), at: 0)) ?? 0
        }
        return bytes.count == Int(size) ? bytes : nil
    }

    /// Gives up an object being written: its file goes when the last reference to `writable` does, and the
    /// MDS forgets the blob (after this returns).
    func abandon(_ writable: WritableBlob) {
        let blob = writable.blob
        if localCreates.withLock({ $0.announce(blob) }) != nil { return }
        Task { try? await mds.expectOK(.abortObject(blob: blob)) }
    }

    /// As `abandon`, returning once the MDS forgot the blob.
    func abort(_ writable: WritableBlob) async throws(GedsError) {
        try await forget(writable.blob)
    }

    private func forget(_ blob: BlobID) async throws(GedsError) {
        if localCreates.withLock({ $0.announce(blob) }) != nil { return }
        try await mds.expectOK(.abortObject(blob: blob))
    }

    // MARK: Relocation

    /// Hands a sealed object to another node, which becomes its owner; our copy goes afterwards.
    func relocate(_ info: ObjectInfo, to target: NodeInfo) async throws(GedsError) {
        if tiers.holdsInTier1(info.blob) { try await tiers.promote(info.blob) }  // the target takes it from our tier 0
        let source = tiers.tier0.contains(info.blob) ? tiers.ownLocation(of: info.blob) : readPath.ordered(info.locations).first
        guard let source else { throw readPath.unreachable(info, []) }
        try await askToPull(info.blob, size: info.size, from: source, to: target)
        if tiers.tier0.contains(info.blob) {
            try? await mds.expectOK(.removeLocation(blob: info.blob, node: session.index))
            tiers.discardTier0Copy(info.blob)
        }
    }

    func askToPull(_ blob: BlobID, size: UInt64, from source: Location, to target: NodeInfo) async throws(GedsError) {
        // The target copies the whole object before it answers: allow for that beyond the usual deadline.
        try await peers.ask(target, .pullBlob(blob: blob, size: size, source: source),
                            timeout: .milliseconds(timeoutMilliseconds + Int64(size >> 20) * 100))
    }
}
