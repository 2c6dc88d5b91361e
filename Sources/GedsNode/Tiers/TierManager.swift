import GedsCore
import GedsTier0
import GedsTier1
import GedsWire
import Logging
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Moves tier-1 blobs on to S3 when tier 1 fills up: the persistence agent, which knows the buckets' S3 stores.
protocol Tier1Overflow: AnyObject, Sendable {
    /// Makes room for `size` more bytes in tier 1 by moving its oldest blobs to S3 (when their bucket has a store).
    func makeTier1Room(for size: UInt64) async throws(GedsError)
}

/// The tier-0 budget and the moves to and from tier 1 (the tier manager's state, under one lock).
struct TierState {
    /// nil when tier 0 has no configured capacity (it then takes what its folder takes, and never spills).
    var policy: SpillPolicy?
    /// Bytes promised to copies being received into tier 0 and not yet in its inventory.
    var reserved: UInt64 = 0
    /// The spill pass in progress (its result: bytes freed). One at a time, so two never pick the same blobs.
    var spill: Task<UInt64, Never>?
    /// Promotions in progress (their result: the error, if any): concurrent readers of one spilled blob wait
    /// for the same one.
    var promotions: [BlobID: Task<GedsError?, Never>] = [:]
    /// Blobs persisted to this node's tier 1 (`tier1` persistency): their tier-1 file is the durable copy, so it
    /// stays when they are promoted back into tier 0. In memory only: after a restart such files are taken for
    /// spilled copies and dropped at promotion.
    var persistedInTier1: Set<BlobID> = []
    /// Views of tier-0 blobs handed out here: a blob with a live one is open and not spilled (its memory would
    /// not be freed while the view maps it). Weak, since a view ends with its last reference, unannounced.
    var views: [BlobID: [WeakView]] = [:]

    struct WeakView {
        weak var mapping: MappedBytes?
    }

    /// The blobs with a live view; forgets the ended ones.
    mutating func openBlobs() -> Set<BlobID> {
        views = views.compactMapValues { list in
            let live = list.filter { $0.mapping != nil }
            return live.isEmpty ? nil : live
        }
        return Set(views.keys)
    }
}

/// The node's tiers: tier 0 and tier 1, the copies they hold and publish at the MDS (with their RDMA
/// registrations), the tier-0 budget, spills to tier 1 and promotions back. The only part of a node that adds
/// or removes its local copies; the others ask it.
final class TierManager: HeldCopies {
    let tier0: Tier0Store
    /// Where tier 0 spills to (nil: no tier 1).
    let tier1: Tier1Store?
    private let tiers: Mutex<TierState>
    /// Registers tier-0 copies for one-sided READs (nil: this node serves over TCP only).
    private let rdma: RDMADataPlane?
    private let mds: MDSClient
    /// This node's index and advertised address at the MDS, for the locations it publishes.
    private let session: MDSSession
    private let nodeName: String
    private let hostID: String
    private let logger: Logger
    /// The persistence agent, set once the node's parts are made (weak: it holds this manager).
    private let overflowAgent = Mutex<WeakOverflow>(WeakOverflow())

    private struct WeakOverflow {
        weak var agent: (any Tier1Overflow)?
    }

    init(tier0: Tier0Store, tier1: Tier1Store?, policy: SpillPolicy?, rdma: RDMADataPlane?, mds: MDSClient,
         session: MDSSession, nodeName: String, hostID: String, logger: Logger) {
        self.tier0 = tier0
        self.tier1 = tier1
        tiers = Mutex(TierState(policy: policy))
        self.rdma = rdma
        self.mds = mds
        self.session = session
        self.nodeName = nodeName
        self.hostID = hostID
        self.logger = logger
    }

    /// Where tier 1 overflows to when it fills up (see `makeTier1Room`).
    func overflow(to agent: any Tier1Overflow) {
        overflowAgent.withLock { $0.agent = agent }
    }

    /// Before `size` more bytes go into tier 1: the persistence agent moves older tier-1 blobs on to S3 if need be.
    private func makeTier1Room(for size: UInt64) async throws(GedsError) {
        try await overflowAgent.withLock { $0.agent }?.makeTier1Room(for: size)
    }

    // MARK: Publishing tier-0 copies

    /// Our tier-0 copy as a location for a peer to pull from (over RDMA when registered).
    func ownLocation(of blob: BlobID) -> Location {
        let (path, slot) = tier0.place(of: blob)
        return .node(NodeCopy(node: nodeName, hostID: hostID, tier: .tier0, tcp: session.advertised,
                              rdma: rdmaAccess(of: blob, path: path, slot: slot), path: path, offset: slot?.offset))
    }

    /// The placement that publishes our tier-0 copy: registered for one-sided READs first when this node
    /// runs over RDMA, so the MDS hands out its address and rkey.
    func tier0Placement(of blob: BlobID) -> BlobPlacement {
        let (path, slot) = tier0.place(of: blob)
        let access = rdmaAccess(of: blob, path: path, slot: slot)
        return BlobPlacement(node: session.index, tier: .tier0, rdmaAddress: access?.address ?? 0, rkey: access?.rkey ?? 0,
                             slot: slot)
    }

    /// Our tier-0 copy registered for one-sided READs (once; later calls reuse the registration; a packed copy's
    /// is its slab's, at its slot), nil when this node runs over TCP or the copy could not be registered.
    private func rdmaAccess(of blob: BlobID, path: String, slot: SlabSlot?) -> RDMAAccess? {
        guard let rdma else { return nil }
        guard slot != nil else {
            return rdma.register(blob, path: path).map { RDMAAccess(endpoint: rdma.responder.endpoint, address: $0.address, rkey: $0.rkey) }
        }
        guard let (slot, slab) = tier0.packedSlab(of: blob) else { return nil }  // deleted meanwhile
        return rdma.register(slab: slot.slab, mapping: slab).map {
            RDMAAccess(endpoint: rdma.responder.endpoint, address: $0.address + slot.offset, rkey: $0.rkey)
        }
    }

    /// Deletes our tier-0 copy once the MDS no longer hands it out (or never did), its RDMA registration first
    /// (its mapping would keep the file from being recycled).
    func discardTier0Copy(_ blob: BlobID) {
        rdma?.withdrawn(blob)
        tier0.remove(blob, recyclingUnder: recycleCeiling())
    }

    /// The most bytes tier 0's sealed blobs and recycled files may take together: what the high-water mark leaves
    /// beside the copies being received and `incoming` more bytes, so recycled files never cause a spill (.max
    /// when tier 0 has no capacity: the pool's budget alone bounds them).
    private func recycleCeiling(incoming: UInt64 = 0) -> UInt64 {
        tiers.withLock { state in
            guard let policy = state.policy else { return .max }
            let claimed = state.reserved + incoming
            return policy.highWater > claimed ? policy.highWater - claimed : 0
        }
    }

    /// Publishes a copy received into tier 0 (a pull or a cached read); the copy goes when the MDS refuses it.
    func publishTier0Copy(_ blob: BlobID) async throws(GedsError) {
        do {
            try await mds.expectOK(.addLocation(blob: blob, placement: tier0Placement(of: blob)))
        } catch {
            discardTier0Copy(blob)
            throw error
        }
    }

    /// Removes every tier-0 copy and the slab files (a node told to leave no tier 0 behind).
    func discardTier0() {
        for blob in tier0.inventory.keys { discardTier0Copy(blob) }
        tier0.removeSlabFiles()
    }

    // MARK: What the MDS session asks

    var usage: (blobs: UInt64, bytes: UInt64) { tier0.usage }

    /// How long the file of a dropped blob stays in the recycle pool unused before its memory goes back to the host.
    static let recycledFileIdleLimit: Duration = .seconds(10)

    func releaseIdleMemory() {
        tier0.releaseRecycledFiles(keptBefore: .now - TierManager.recycledFileIdleLimit)
    }

    /// Within tier 0's capacity (when it has one) and the free space of its folder's file system.
    var room: UInt64 {
        var fileSystem = statvfs()
        let free = statvfs(tier0.directory, &fileSystem) == 0 ? UInt64(fileSystem.f_bavail) * UInt64(fileSystem.f_frsize) : .max
        let (capacity, reserved) = tiers.withLock { ($0.policy?.capacity, $0.reserved) }
        guard let capacity else { return free }
        let used = tier0.usage.bytes + reserved
        return min(free, capacity > used ? capacity - used : 0)
    }

    /// After a (re)registration: offers the MDS the copies held here (it withdrew them with the earlier one).
    /// Tier-0 copies it refuses go; for tier 1 see `offerTier1Copies`.
    func offerBack(checkingFiles: Bool) async {
        for blob in tier0.inventory.keys {
            do {
                try await mds.expectOK(.addLocation(blob: blob, placement: tier0Placement(of: blob)))
            } catch {
                discardTier0Copy(blob)
            }
        }
        await offerTier1Copies(checkingFiles: checkingFiles)
    }

    func drop(_ blob: BlobID) async {
        await dropLocalCopies(of: blob)
    }

    // MARK: Room in tier 0

    /// Runs `body`, which puts `size` more bytes into tier 0, once they fit under its capacity: spilling to
    /// tier 1 first when needed; an out-of-space error when nothing can make room.
    func withTier0Room<Result>(_ size: UInt64, for blob: BlobID,
                               _ body: () async throws(GedsError) -> Result) async throws(GedsError) -> Result {
        try await reserveTier0(size, for: blob)
        defer { tiers.withLock { $0.reserved -= size } }
        return try await body()
    }

    private enum ReserveStep {
        case reserved
        case wait(Task<UInt64, Never>)
        case full(used: UInt64, capacity: UInt64)
    }

    /// Before a blob written here is published: tier 0 must be within its capacity with it, which may take a
    /// spill of others. (The caller keeps it pinned until the MDS has it, so it is not spilled while pending.)
    func checkTier0Capacity(sealing blob: BlobID, size: UInt64) async throws(GedsError) {
        try await reserveTier0(0, for: blob, reporting: size)
    }

    /// Keeps a blob out of spill passes (a move or a seal in progress) until `unpin`.
    func pin(_ blob: BlobID) {
        tiers.withLock { state in state.policy?.pin(blob) }
    }

    func unpin(_ blob: BlobID) {
        tiers.withLock { state in state.policy?.unpin(blob) }
    }

    /// Reserves `size` bytes of tier 0 (spilling first when they do not fit); `reporting` is the size named
    /// in the out-of-space error (the blob's, when it is already counted as used).
    private func reserveTier0(_ size: UInt64, for blob: BlobID, reporting: UInt64? = nil) async throws(GedsError) {
        while true {
            // Recycled files give way first; the one this copy would go into is its room already.
            tier0.trimRecyclePool(under: recycleCeiling(incoming: size), keepingFitFor: size)
            let step: ReserveStep = tiers.withLock { state in
                guard var policy = state.policy else {
                    state.reserved += size
                    return .reserved
                }
                let used = tier0.usage.bytes + state.reserved
                if policy.fits(size, used: used) {
                    state.reserved += size
                    return .reserved
                }
                if let pass = state.spill { return .wait(pass) }
                guard tier1 != nil else { return .full(used: used, capacity: policy.capacity) }
                let victims = policy.victims(in: tier0.inventory, used: used, incoming: size, open: state.openBlobs())
                state.policy = policy
                guard !victims.isEmpty else { return .full(used: used, capacity: policy.capacity) }
                return .wait(startSpill(victims, state: &state))
            }
            switch step {
            case .reserved:
                return
            case .wait(let pass):
                // A pass that freed nothing (tier 1 full, every blob pinned) would be retried forever.
                if await pass.value == 0 { throw tier0Full(reporting ?? size, for: blob) }
            case .full(let used, let capacity):
                throw tier0Full(reporting ?? size, for: blob, used: used, capacity: capacity)
            }
        }
    }

    private func tier0Full(_ size: UInt64, for blob: BlobID, used: UInt64? = nil, capacity: UInt64? = nil) -> GedsError {
        let state = tiers.withLock { state in (state.policy?.capacity ?? 0, tier0.usage.bytes + state.reserved) }
        var spilling = "no tier 1 is configured to spill to"
        if let tier1 { spilling = "nothing more could be spilled to tier 1 (\(tier1.usage.reserved) of \(tier1.capacity) bytes used)" }
        return GedsError(.outOfSpace, "out of space: tier 0 of node \(nodeName) is full: blob \(blob.fileName) needs \(size) bytes, "
                         + "\(used ?? state.1) of \(capacity ?? state.0) are in use, and \(spilling)")
    }

    /// A blob entered tier 0 sealed (written, received or promoted): it is the most recently used, and tier 0
    /// may now be past its high-water mark, in which case a spill pass starts in the background.
    func admitted(_ blob: BlobID) {
        tier0.trimRecyclePool(under: recycleCeiling())
        tiers.withLock { state in
            state.policy?.touch(blob)
            spillIfPastHighWater(&state)
        }
    }

    private func spillIfPastHighWater(_ state: inout TierState) {
        guard tier1 != nil, state.spill == nil, var policy = state.policy else { return }
        let used = tier0.usage.bytes + state.reserved
        guard used > policy.highWater else { return }  // checked first: the victim search copies the inventory
        let victims = policy.victims(in: tier0.inventory, used: used, open: state.openBlobs())
        state.policy = policy
        if !victims.isEmpty { _ = startSpill(victims, state: &state) }
    }

    /// A tier-0 blob was read or served: it moves to the back of the spill order.
    func touched(_ blob: BlobID) {
        tiers.withLock { state in state.policy?.touch(blob) }
    }

    /// A view of a blob in our tier 0 was handed out: the blob stays in tier 0 while the view lives.
    func opened(_ blob: BlobID, _ view: MappedBytes) {
        tiers.withLock { state in
            guard state.policy != nil else { return }
            state.views[blob, default: []].removeAll { $0.mapping == nil }
            state.views[blob, default: []].append(TierState.WeakView(mapping: view))
        }
    }

    // MARK: Spilling

    /// Starts a pass that moves `victims` to tier 1 in order; they stay pinned until it ends.
    private func startSpill(_ victims: [(blob: BlobID, size: UInt64)], state: inout TierState) -> Task<UInt64, Never> {
        for victim in victims { state.policy?.pin(victim.blob) }
        let task = Task { [self] () -> UInt64 in
            var freed: UInt64 = 0
            for victim in victims {
                do throws(GedsError) {
                    if try await spill(victim.blob) { freed += victim.size }
                } catch where error.code == .outOfSpace {
                    logger.warning("spill stopped: \(error.message)")
                    break
                } catch {
                    logger.warning("could not spill blob \(victim.blob.fileName) to tier 1: \(error.message)")
                }
            }
            logger.debug("spilled \(freed) bytes from tier 0 to tier 1")
            tiers.withLock { state in
                for victim in victims { state.policy?.unpin(victim.blob) }
                state.spill = nil
                // Admissions during the pass may have filled tier 0 again: go on (unless this pass was stuck).
                if freed > 0 { spillIfPastHighWater(&state) }
            }
            return freed
        }
        state.spill = task
        return task
    }

    /// Moves one sealed blob from tier 0 to tier 1: the bytes first, then the MDS learns the new tier (which
    /// replaces this node's tier-0 placement in one step), and only then does the tier-0 copy go. A reader that
    /// got the old location still finds the blob here: `readBlob` serves tier 1 too. False when the blob was
    /// no longer in tier 0.
    private func spill(_ blob: BlobID) async throws(GedsError) -> Bool {
        guard let tier1, tier0.contains(blob) else { return false }
        let mapping: MappedBytes
        do {
            mapping = try tier0.map(blob)
        } catch where error.code == .noSuchBlob {
            return false
        }
        // Written straight from the tier-0 pages (page-aligned, so O_DIRECT takes them without a bounce buffer);
        // a blob persisted to tier 1 at seal is there already.
        let stored: Tier1Object
        if let existing = tier1.object(blob) {
            stored = existing
        } else {
            try await makeTier1Room(for: UInt64(mapping.count))
            stored = try await tier1.write(blob, from: mapping.bytes)
        }
        withExtendedLifetime(mapping) {}
        do {
            // The MDS keeps the checksum: a restarted node checks its tier-1 files against it.
            try await mds.expectOK(.addLocation(blob: blob, placement: BlobPlacement(node: session.index, tier: .tier1,
                                                                                      checksum: stored.checksum)))
        } catch {
            _ = try? await tier1.remove(blob)
            if error.code == .noSuchBlob {  // deleted meanwhile: nothing to keep
                await dropLocalCopies(of: blob)
                return true
            }
            throw error
        }
        discardTier0Copy(blob)
        tiers.withLock { state in state.policy?.forget(blob) }
        NodeMetrics.spills.increment()
        return true
    }

    // MARK: Offering tier-1 copies back

    /// Offers this node's tier-1 copies to the MDS, after a registration (the MDS withdrew them with the
    /// earlier one). Files left by an earlier process (`checkingFiles`) are read whole first: their bytes must
    /// match the checksum recorded beside them, and the MDS compares that with the one it kept for the blob. A
    /// copy that fails either check, or whose blob the MDS no longer knows, is deleted; one the MDS did not
    /// answer for (unreachable, timed out) is kept, unpublished, until the next registration offers it again.
    /// A restarted MDS with state (`geds-mds --state`) knows the blobs again and takes the copies back; one without
    /// knows none, so then every leftover file goes.
    private func offerTier1Copies(checkingFiles: Bool) async {
        guard let tier1 else { return }
        var offered = 0
        var removed = 0
        for object in tier1.objects where !tier0.contains(object.blob) {
            do throws(GedsError) {
                let checksum = checkingFiles ? try await tier1.verifiedChecksum(of: object.blob) : object.checksum
                try await mds.expectOK(.addLocation(blob: object.blob, placement: BlobPlacement(node: session.index, tier: .tier1,
                                                                                             checksum: checksum)))
                offered += 1
            } catch where [.noSuchBlob, .checksumMismatch, .io].contains(error.code) {
                if error.code != .noSuchBlob {
                    logger.warning("removing the tier-1 copy of blob \(object.blob.fileName): \(error.message)")
                }
                _ = try? await tier1.remove(object.blob)
                removed += 1
            } catch {
                logger.warning("could not offer the tier-1 copy of blob \(object.blob.fileName) back: \(error.message); kept for the next registration")
            }
        }
        if checkingFiles && offered + removed > 0 {
            logger.info("tier 1: offered back \(offered) object(s) left by an earlier process; removed \(removed) that the MDS no longer knows or whose bytes failed their checksum")
        }
    }

    // MARK: Promotion

    /// Whether this node holds `blob` in tier 1 (and not in tier 0).
    func holdsInTier1(_ blob: BlobID) -> Bool {
        !tier0.contains(blob) && tier1?.object(blob) != nil
    }

    /// Brings a spilled blob back into tier 0 (its checksum checked on the way), tells the MDS, then frees its
    /// tier-1 copy. Concurrent callers for one blob share one promotion.
    func promote(_ blob: BlobID) async throws(GedsError) {
        let task = tiers.withLock { (state) -> Task<GedsError?, Never>? in
            if let running = state.promotions[blob] { return running }
            guard !tier0.contains(blob), tier1?.object(blob) != nil else { return nil }
            state.policy?.pin(blob)
            let task = Task { [self] () -> GedsError? in
                var failure: GedsError?
                do throws(GedsError) {
                    try await moveToTier0(blob)
                    NodeMetrics.promotions.increment()
                } catch where error.code == .checksumMismatch {
                    failure = error
                    await withdrawCorruptCopy(of: blob, error)
                } catch {
                    failure = error
                    logger.debug("could not promote blob \(blob.fileName) from tier 1: \(error.message)")
                }
                tiers.withLock { state in
                    state.promotions[blob] = nil
                    state.policy?.unpin(blob)
                }
                return failure
            }
            state.promotions[blob] = task
            return task
        }
        if let failure = await task?.value { throw failure }
        guard tier0.contains(blob) else { throw GedsError(.noSuchBlob, "blob \(blob.fileName) is not held here") }
    }

    /// Opens a tier-1 file for reading in place (through the page cache): for when it cannot be promoted
    /// because both tiers are full. Only its size is checked then, as for any ranged tier-1 read.
    func openTier1ForReading(_ blob: BlobID) throws(GedsError) -> (descriptor: FileDescriptor, offset: UInt64, size: UInt64) {
        guard let tier1, let object = tier1.object(blob) else {
            throw GedsError(.noSuchBlob, "blob \(blob.fileName) is not held here")
        }
        guard let descriptor = try? FileDescriptor.open(FilePath(tier1.path(of: blob)), .readOnly, options: .closeOnExec) else {
            throw GedsError(.noSuchBlob, "blob \(blob.fileName) is not held here")
        }
        return (descriptor, 0, object.size)
    }

    private func moveToTier0(_ blob: BlobID) async throws(GedsError) {
        guard let tier1, let object = tier1.object(blob) else { return }
        try await withTier0Room(object.size, for: blob) { () throws(GedsError) in
            let receiving = try tier0.receive(blob, size: object.size)
            if object.size > 0 {
                _ = try await tier1.read(blob, into: UnsafeMutableRawBufferPointer(start: receiving.mapping.base,
                                                                                   count: receiving.mapping.count))
            }
            try receiving.seal()
        }
        do {
            try await mds.expectOK(.addLocation(blob: blob, placement: tier0Placement(of: blob)))
        } catch where error.code == .noSuchBlob {
            await dropLocalCopies(of: blob)
            return
        } catch {
            // The MDS still says tier 1, and tier 1 still has it: keep that, give the tier-0 room back.
            discardTier0Copy(blob)
            throw error
        }
        if !tiers.withLock({ $0.persistedInTier1.contains(blob) }) { _ = try? await tier1.remove(blob) }
        admitted(blob)
    }

    /// A tier-1 file whose bytes fail their checksum: readers must not be sent there again, so the MDS withdraws
    /// the location first (other copies, if any, serve from then on), then the file goes.
    private func withdrawCorruptCopy(of blob: BlobID, _ error: GedsError) async {
        logger.error("withdrawing the corrupt tier-1 copy of blob \(blob.fileName): \(error.message)")
        do {
            try await mds.expectOK(.removeLocation(blob: blob, node: session.index))
        } catch {
            logger.warning("could not withdraw the location of blob \(blob.fileName): \(error.message)")
        }
        forgetTier1Copy(of: blob)
        _ = try? await tier1?.remove(blob)
    }

    /// Deletes every local copy of a blob (the MDS withdrew it).
    func dropLocalCopies(of blob: BlobID) async {
        discardTier0Copy(blob)
        tiers.withLock { state in state.policy?.forget(blob) }
        forgetTier1Copy(of: blob)
        _ = try? await tier1?.remove(blob)
    }

    /// The blob's tier-1 file is about to go: it is no longer the persisted copy.
    private func forgetTier1Copy(of blob: BlobID) {
        tiers.withLock { state in _ = state.persistedInTier1.remove(blob) }
    }

    // MARK: For the persistence agent

    /// The `tier1` persistency: a copy in this node's tier 1 besides the tier-0 one (a later spill then only
    /// drops the tier-0 file, and a promotion keeps it).
    func persistInTier1(_ blob: BlobID) async throws(GedsError) {
        guard let tier1 else {
            throw GedsError(.invalidArgument, "persistency tier1: node \(nodeName) has no tier 1 (gedsd --tier1 DIR --tier1-capacity SIZE)")
        }
        tiers.withLock { state in _ = state.persistedInTier1.insert(blob) }
        guard tier1.object(blob) == nil else { return }
        let mapping = try tier0.map(blob)
        try await makeTier1Room(for: UInt64(mapping.count))
        do {
            _ = try await tier1.write(blob, from: mapping.bytes)
        } catch {
            forgetTier1Copy(of: blob)
            throw error
        }
        withExtendedLifetime(mapping) {}
    }

    /// The copy held here opened for reading: the tier-0 one, else the tier-1 one (without promoting it).
    func openHeldCopy(_ blob: BlobID) throws(GedsError) -> (descriptor: FileDescriptor, offset: UInt64, size: UInt64) {
        tier0.contains(blob) ? try tier0.openForReading(blob) : try openTier1ForReading(blob)
    }

    /// Tier-1 blobs (not also in tier 0), oldest first: a tier-1 file is written when its blob is spilled and goes
    /// when it is promoted, so its age is its time since last use.
    func tier1OldestFirst() -> [BlobID] {
        guard let tier1 else { return [] }
        var aged: [(blob: BlobID, seconds: Int, nanoseconds: Int)] = []
        for object in tier1.objects where !tier0.contains(object.blob) {
            var status = stat()
            guard stat(tier1.path(of: object.blob), &status) == 0 else { continue }
            aged.append((object.blob, status.st_mtim.tv_sec, status.st_mtim.tv_nsec))
        }
        return aged.sorted { ($0.seconds, $0.nanoseconds) < ($1.seconds, $1.nanoseconds) }.map(\.blob)
    }

    /// Moves a tier-1 blob out of this node: `withdraw` puts it elsewhere (S3) and withdraws this node's tier-1
    /// location at the MDS, and only then does the file go. It runs as the blob's promotion entry, so a reader
    /// promoting it meanwhile waits and then finds it gone (and looks it up again). Nothing happens when the blob is
    /// being promoted or is not (only) in tier 1.
    func moveOutOfTier1(_ blob: BlobID,
                        _ withdraw: @escaping @Sendable () async throws(GedsError) -> Void) async throws(GedsError) {
        let task = tiers.withLock { (state) -> Task<GedsError?, Never>? in
            guard state.promotions[blob] == nil, !tier0.contains(blob), tier1?.object(blob) != nil else { return nil }
            let task = Task { [self] () -> GedsError? in
                var failure: GedsError?
                do throws(GedsError) {
                    try await withdraw()
                    forgetTier1Copy(of: blob)
                    _ = try? await tier1?.remove(blob)
                } catch {
                    failure = error
                }
                tiers.withLock { state in state.promotions[blob] = nil }
                return failure
            }
            state.promotions[blob] = task
            return task
        }
        if let failure = await task?.value { throw failure }
    }
}
