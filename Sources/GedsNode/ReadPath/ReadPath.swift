import GedsCarrier
import GedsCore
import GedsTier0
import GedsWire
import Logging
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The read path: a copy of an object found (own tiers, a same-host file, a peer, S3), read over the carrier its
/// location calls for, and read again from the MDS's current locations when the copies moved meanwhile. Copies
/// fetched from peers go into tier 0 through the tier manager.
final class ReadPath: Sendable {
    private let tiers: TierManager
    private let carriers: CopyCarriers
    private let mds: MDSClient
    /// Lookups on callers' own threads (see `lookupOnCallerThread`); nil under TLS.
    private let direct: DirectCalls?
    private let nodeName: String
    private let hostID: String
    private let publishCachedCopies: Bool
    private let logger: Logger
    /// Set by `stop`: reads fail from then on, also of objects whose bytes a reader holds already.
    private let stopped = Atomic<Bool>(false)

    init(tiers: TierManager, carriers: CopyCarriers, mds: MDSClient, direct: DirectCalls?, configuration: NodeConfiguration,
         logger: Logger) {
        self.tiers = tiers
        self.carriers = carriers
        self.mds = mds
        self.direct = direct
        nodeName = configuration.name
        hostID = configuration.hostID
        publishCachedCopies = configuration.publishCachedCopies
        self.logger = logger
    }

    func stop() {
        stopped.store(true, ordering: .releasing)
    }

    func checkRunning() throws(GedsError) {
        if stopped.load(ordering: .acquiring) {
            throw GedsError(.invalidArgument, "the GEDS handle of this node is closed")
        }
    }

    /// Looks an object up on the caller's thread (see `DirectCalls`): nil when this node reaches the MDS over RDMA or
    /// TLS, or when the object is not in GEDS (its bucket's S3 store may have it: the event loop's `lookup` adopts it).
    func lookupOnCallerThread(bucket: String, key: String) throws(GedsError) -> ObjectInfo? {
        try checkRunning()
        guard mds.rdma?.active != true, let direct else { return nil }
        switch try direct.call(.lookup(bucket: bucket, key: key)) {
        case .object(let info): return info
        case .failure(let error) where error.code == .noSuchObject: return nil
        case .failure(let error): throw error
        case let reply: throw MDSClient.unexpected(reply)
        }
    }

    // MARK: Reading

    /// A zero-copy view of the whole object: our own copy (promoted from tier 1 when spilled), a same-host
    /// owner's tier-0 file, or a copy fetched from a peer into our tier 0 (and published as another location).
    func view(of info: ObjectInfo) async throws(GedsError) -> MappedBytes {
        try checkRunning()
        return try await followingMoves(info) { (info) throws(GedsError) -> MappedBytes in
            var failures: [(node: String, error: GedsError)] = []
            do throws(GedsError) {
                if let own = try await ownCopy(info.blob) {
                    tiers.opened(info.blob, own)
                    return own
                }
            } catch {
                failures.append((nodeName, error))
            }
            let locations = ordered(info.locations)
            for copy in locations.compactMap(mappable) {
                do throws(GedsError) {
                    return try Tier0Store.map(copy, of: info.blob, size: info.size)
                } catch {
                    failures.append((copy.node, error))
                }
            }
            let remote = locations.filter { mappable($0) == nil && $0.holder != nodeName }
            for (index, location) in remote.enumerated() {
                do throws(GedsError) {
                    let fetched = try await fetch(info.blob, size: info.size, from: location, publish: publishCachedCopies,
                                                  withAlternative: index < remote.count - 1)
                    tiers.opened(info.blob, fetched)
                    return fetched
                } catch {
                    failures.append((location.holder, error))
                }
            }
            throw unreachable(info, failures)
        }
    }

    /// Reads a range into caller memory (`buffer.count` bytes from `offset`, clipped to the object's size).
    func read(_ info: ObjectInfo, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) async throws(GedsError) -> Int {
        try checkRunning()
        if let copied = info.copyContents(at: offset, into: buffer) {
            NodeMetrics.readInline.increment(by: Int64(copied))
            return copied
        }
        guard offset < info.size, buffer.count > 0 else { return 0 }
        let length = min(UInt64(buffer.count), info.size - offset)
        let destination = CallerBufferSink(destination: UnsafeMutableRawBufferPointer(rebasing: buffer[..<Int(length)]))
        return try await followingMoves(info) { (info) throws(GedsError) -> Int in
            var failures: [(node: String, error: GedsError)] = []
            do throws(GedsError) {
                if let own = try await ownCopy(info.blob) { return try copy(from: own, at: offset, into: destination) }
            } catch {
                failures.append((nodeName, error))
            }
            let others = ordered(info.locations).filter { $0.holder != nodeName }
            for (index, location) in others.enumerated() {
                do throws(GedsError) {
                    if let mapped = mappable(location) {
                        return try copy(from: try Tier0Store.map(mapped, of: info.blob, size: info.size), at: offset, into: destination)
                    }
                    let got = try await transfer(info.blob, objectSize: info.size, offset: offset, length: length, from: location,
                                                 into: destination, withAlternative: index < others.count - 1)
                    guard got == length else { throw GedsError(.protocolViolation, "\(location.holder) sent \(got) of \(length) bytes") }
                    return Int(length)
                } catch {
                    failures.append((location.holder, error))
                }
            }
            throw unreachable(info, failures)
        }
    }

    private func copy(from mapping: MappedBytes, at offset: UInt64, into sink: CallerBufferSink) throws(GedsError) -> Int {
        let length = try mapping.copy(at: offset, into: sink.destination)
        NodeMetrics.readLocal.increment(by: Int64(length))
        return length
    }

    /// Our own copy, mapped: tier 0 as it is, tier 1 promoted into tier 0 first; nil when we hold none.
    private func ownCopy(_ blob: BlobID) async throws(GedsError) -> MappedBytes? {
        if tiers.tier0.contains(blob), let mapping = try? tiers.tier0.map(blob) {
            tiers.touched(blob)
            return mapping
        }
        guard tiers.holdsInTier1(blob) else { return nil }
        do {
            try await tiers.promote(blob)
        } catch where error.code == .outOfSpace {
            // Both tiers full: map the tier-1 file where it is (through the page cache) rather than fail.
            guard let tier1 = tiers.tier1 else { throw error }
            return try Tier0Store.map(path: tier1.path(of: blob))
        }
        return try tiers.tier0.map(blob)
    }

    /// The copy a location names when its file can be mapped from here: a tier-0 copy on this host. Tier-1 files
    /// are read through their owner, which promotes them (and keeps the move order: MDS first, then the file).
    private func mappable(_ location: Location) -> NodeCopy? {
        guard case .node(let copy) = location, copy.tier == .tier0, copy.hostID == hostID else { return nil }
        return copy
    }

    /// Runs a read against `info`, and once more against the MDS's current locations when it failed because
    /// the copies moved meanwhile (spilled, promoted, relocated): a reader never sees a move.
    private func followingMoves<Result>(_ info: ObjectInfo,
                                        _ attempt: (ObjectInfo) async throws(GedsError) -> Result) async throws(GedsError) -> Result {
        var current = info
        var retries = 2
        while true {
            do {
                return try await attempt(current)
            } catch where retries > 0 && error.code == .noSuchBlob {
                retries -= 1
                guard let fresh = try? await mds.lookup(bucket: info.bucket, key: info.key),
                      fresh.blob == info.blob, fresh.locations != current.locations else { throw error }
                current = fresh
            }
        }
    }

    /// Copies a blob from a peer into our tier 0 (once there is room), straight into its mapping.
    private func fetch(_ blob: BlobID, size: UInt64, from location: Location, publish: Bool,
                       withAlternative: Bool) async throws(GedsError) -> MappedBytes {
        let mapping = try await tiers.withTier0Room(size, for: blob) { () throws(GedsError) -> MappedBytes in
            try await receive(blob, size: size, from: location, withAlternative: withAlternative)
        }
        if publish {
            do {
                try await mds.expectOK(.addLocation(blob: blob, placement: tiers.tier0Placement(of: blob)))
            } catch where error.code == .noSuchBlob {
                tiers.discardTier0Copy(blob)  // deleted while we copied; the mapping stays valid for this reader
            } catch {
                logger.debug("could not publish cached copy of \(blob.fileName): \(error.message)")
            }
        }
        if tiers.tier0.contains(blob) { tiers.admitted(blob) }
        return mapping
    }

    /// Serves `pullBlob`: take the blob from the source (a hard link on the same host, else a network copy)
    /// and publish ourselves as a location.
    func pull(_ blob: BlobID, size: UInt64, from source: Location) async throws(GedsError) {
        let tier0 = tiers.tier0
        if !tier0.contains(blob) {
            try await tiers.withTier0Room(size, for: blob) { () throws(GedsError) in
                let linked = mappable(source).map { tier0.adopt(blob, linkingFrom: $0.path) } ?? false
                if !linked { _ = try await receive(blob, size: size, from: source) }
            }
        }
        try await tiers.publishTier0Copy(blob)
        tiers.admitted(blob)
    }

    /// Receives a blob from a peer into tier 0 (room for it already reserved).
    private func receive(_ blob: BlobID, size: UInt64, from location: Location,
                         withAlternative: Bool = false) async throws(GedsError) -> MappedBytes {
        let receiving = try tiers.tier0.receive(blob, size: size)
        if size > 0 {
            let got = try await transfer(blob, objectSize: size, offset: 0, length: size, from: location,
                                         into: MappingSink(mapping: receiving.mapping), withAlternative: withAlternative)
            guard got == size else {
                throw GedsError(.protocolViolation, "\(location.holder) sent \(got) of \(size) bytes")
            }
        }
        try receiving.seal()
        return receiving.mapping
    }

    /// Reads a range of a copy over the carrier its location and its peer's state call for (see `CopyCarriers`);
    /// `withAlternative`: another copy remains, so a silent peer is given up sooner.
    private func transfer(_ blob: BlobID, objectSize: UInt64, offset: UInt64, length: UInt64, from location: Location,
                          into sink: any ReadSink, withAlternative: Bool) async throws(GedsError) -> UInt64 {
        let range = CopyRange(blob: blob, objectSize: objectSize, offset: offset, length: length)
        return try await carriers.reader(for: location, length: length, withAlternative: withAlternative).read(range, into: sink)
    }

    /// The copies in the order this node tries them (see `Location.readingOrder`).
    func ordered(_ locations: [Location]) -> [Location] {
        Location.readingOrder(locations, node: nodeName, hostID: hostID, overRDMA: carriers.rdma != nil)
    }

    /// The error of a read that found no copy. When every copy tried was simply gone (moved between tiers or
    /// nodes since the lookup) it is `noSuchBlob`, which `followingMoves` answers with a fresh lookup.
    func unreachable(_ info: ObjectInfo, _ failures: [(node: String, error: GedsError)]) -> GedsError {
        if info.locations.isEmpty {
            return GedsError(.objectLost, "object \(info.bucket)/\(info.key) has no copy left (its nodes are gone)")
        }
        let moved = !failures.isEmpty && failures.allSatisfy { $0.error.code == .noSuchBlob }
        return GedsError(moved ? .noSuchBlob : .peerUnreachable, "no copy of \(info.bucket)/\(info.key) could be read: "
                         + failures.map { "\($0.node): \($0.error.message)" }.joined(separator: "; "))
    }

    /// A descriptor of the file a view of `info` maps on this host (after `view(of:)`): our tier-0 copy's, else
    /// a same-host node's tier-0 file; for a packed copy (whose slot is not ours to lend) an unnamed file holding
    /// the view's bytes. The caller closes it.
    func descriptor(ofViewed info: ObjectInfo, _ view: MappedBytes) throws(GedsError) -> FileDescriptor {
        let tier0 = tiers.tier0
        if tier0.contains(info.blob), let own = try? tier0.openForSharing(info.blob) { return own }
        for copy in info.locations.compactMap(mappable) {
            if copy.offset != nil { return try tier0.unnamedFile(holding: view) }
            if let fd = try? FileDescriptor.open(FilePath(copy.path), .readOnly, options: .closeOnExec) { return fd }
        }
        throw GedsError(.noSuchBlob, "no tier-0 file of \(info.bucket)/\(info.key) on this host to hand over "
                        + "(tier 0 full and the object read from tier 1)")
    }
}

/// A copy arriving into tier 0: the mapping is kept alive by the sink until the read returns.
struct MappingSink: ReadSink {
    let mapping: MappedBytes

    var destination: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: mapping.base, count: mapping.count)
    }
}

// @unchecked: the caller's buffer outlives the awaited read, and only the transport writes it meanwhile.
struct CallerBufferSink: ReadSink, @unchecked Sendable {
    let destination: UnsafeMutableRawBufferPointer
}
