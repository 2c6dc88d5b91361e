import GedsCore
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Tier 0: a memory folder (tmpfs). A blob is written into a file of its own, named by blob id; at seal (or, for a
/// copy arriving from elsewhere, from the start) a blob of up to `packLimit` bytes goes into a slot of a slab
/// file shared with others of its size instead (see Slabs.swift), and its own file goes.
///
/// No file descriptor or mapping is kept for a blob beyond its use (a slab's mapping serves all its slots), so
/// the number of objects is bounded by memory, not by the process's file or mapping limits.
///
/// The files of dropped blobs that nobody else has open are kept in a bounded pool, and copies received later go
/// into them (see Recycling.swift).
public final class Tier0Store: Sendable {
    public let directory: String
    private let sealed = Mutex(Sealed())
    private let slabs: SlabAllocator
    private let recycled: Mutex<RecyclePool>
    /// The pool's bytes as of its last change, read without its lock: trimming an empty pool (every seal does) then
    /// takes no lock at all, which matters with many attached writers sealing at once.
    private let recycledBytes = Atomic<UInt64>(0)
    private let quarantine: Duration

    /// Blobs at most this big are packed into slab slots by default: above it a file of its own wastes at most
    /// 1/16 of a blob's bytes on its last page, and views of it in other processes are zero-copy.
    public static let defaultPackLimit = 64 << 10

    /// Sealed blobs and their sizes, the slots of the packed ones, and the memory they take (a packed blob's
    /// slot, another's size), kept alongside: capacity checks read it on every admission.
    private struct Sealed {
        var sizes: [BlobID: UInt64] = [:]
        var slots: [BlobID: PackedSlot] = [:]
        var bytes: UInt64 = 0
        /// Blobs whose file was opened for sending (see `markServed`), forgotten with the blob.
        var served: Set<BlobID> = []

        /// Records (or, with nil, forgets) a blob; returns the slot it had (to be let go outside the lock) and
        /// whether it had a file of its own.
        mutating func set(_ blob: BlobID, _ size: UInt64?, slot: PackedSlot? = nil) -> (slot: PackedSlot?, hadFile: Bool) {
            let oldSlot = slots[blob]
            if let old = sizes[blob] { bytes -= oldSlot.map { UInt64($0.slab.slotSize) } ?? old }
            let hadFile = sizes[blob] != nil && oldSlot == nil
            sizes[blob] = size
            slots[blob] = size == nil ? nil : slot
            if size == nil { served.remove(blob) }
            if let size { bytes += slot.map { UInt64($0.slab.slotSize) } ?? size }
            return (oldSlot, hadFile)
        }
    }

    /// Opens (and creates) the folder. Blob and slab files left there by an earlier process are removed: their
    /// locations were withdrawn at the MDS when that process's lease ended, so nobody can reach them.
    /// `quarantine`: how long a freed slot, or the recycled file of a blob that was served, waits before it is used
    /// again (longer than any read of it takes).
    /// `recycleBudget`: the most bytes the files of dropped blobs kept for later copies may take (0: none kept).
    public init(directory: String, packLimit: Int = Tier0Store.defaultPackLimit,
                quarantine: Duration = .seconds(5), recycleBudget: UInt64 = 0) throws(GedsError) {
        self.directory = directory
        slabs = SlabAllocator(directory: directory, packLimit: packLimit, quarantine: quarantine)
        recycled = Mutex(RecyclePool(budget: recycleBudget))
        self.quarantine = quarantine
        try Tier0Store.makeDirectories(directory)
        removeFiles {
            BlobID(fileName: $0) != nil || SlabSlot(fileName: $0) != nil || $0.hasSuffix(".partial")
                || RecyclePool.isRecycled(fileName: $0)
        }
    }

    private func removeFiles(named matching: (String) -> Bool) {
        guard let dir = opendir(directory) else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if matching(name) { unlink(directory + "/" + name) }
        }
    }

    public func path(of blob: BlobID) -> String { directory + "/" + blob.fileName }

    /// Where a sealed blob's copy is: its own file, or the slab file and slot it is packed into.
    public func place(of blob: BlobID) -> (path: String, slot: SlabSlot?) {
        guard let slot = sealed.withLock({ $0.slots[blob] })?.place else { return (path(of: blob), nil) }
        return (directory + "/" + slot.fileName, slot)
    }

    /// A packed blob's slot and the mapping of its whole slab (which lives as long as this store): what an RDMA
    /// registration made once per slab covers. Nil for a blob in a file of its own.
    public func packedSlab(of blob: BlobID) -> (slot: SlabSlot, slab: MappedBytes)? {
        sealed.withLock { $0.slots[blob] }.map { ($0.place, $0.slab.mapping) }
    }

    /// Blobs sealed here and their sizes.
    public var inventory: [BlobID: UInt64] { sealed.withLock { $0.sizes } }
    /// Sealed blobs and the tier-0 memory they take (a packed blob counts its whole slot).
    public var usage: (blobs: UInt64, bytes: UInt64) {
        sealed.withLock { (UInt64($0.sizes.count), $0.bytes) }
    }

    /// Files of dropped blobs kept to receive later copies into, and the memory they take (not in `usage`).
    public var recycledFiles: (files: Int, bytes: UInt64) { recycled.withLock { ($0.files.count, $0.bytes) } }

    public func contains(_ blob: BlobID) -> Bool { sealed.withLock { $0.sizes[blob] != nil } }
    public func size(of blob: BlobID) -> UInt64? { sealed.withLock { $0.sizes[blob] } }

    /// A new, empty, writable blob.
    public func create(_ blob: BlobID) throws(GedsError) -> WritableBlob {
        // A packed blob has no file of its own to collide with.
        guard !contains(blob) else { throw GedsError.io("cannot create \(path(of: blob)) in tier 0", errno: EEXIST) }
        return WritableBlob(store: self, blob: blob, descriptor: try Tier0Store.createFile(path(of: blob)))
    }

    /// A whole new blob (an id no blob here has: a put's, fresh from the MDS) from bytes in hand, sealed at once: a
    /// small one straight into a slab slot (no file to write and copy from, as a written blob's seal does), else a
    /// file of its own as `create`, `write` and `seal` make it.
    public func store(_ blob: BlobID, bytes: UnsafeRawBufferPointer) throws(GedsError) {
        let size = UInt64(bytes.count)
        if slabs.packs(size), let slot = try? slabs.allocate(size: size) {
            _ = slot.view(size: bytes.count).store(bytes, at: 0)  // the slot holds `size` bytes: always fits
            packed(blob, size: size, into: slot)
            return
        }
        let writable = try create(blob)
        try writable.write(bytes, at: 0)
        _ = try writable.seal()
    }

    /// A writable mapping of exactly `size` bytes, reserved up front so that a full folder is an error here
    /// and not a SIGBUS later; used to receive a copy from a peer straight into its final place: a slot of its
    /// own when it is small, else a file of its own, renamed into place at seal, so concurrent fetches of the
    /// same blob never truncate each other's mapping.
    public func receive(_ blob: BlobID, size: UInt64) throws(GedsError) -> ReceivingBlob {
        guard size <= UInt64(Int.max) else { throw GedsError(.invalidArgument, "object size \(size) is too large") }
        if slabs.packs(size) {
            let slot = try slabs.allocate(size: size)
            return ReceivingBlob(store: self, blob: blob, destination: .slot(slot), mapping: slot.view(size: Int(size)))
        }
        let path = path(of: blob) + ".\(UInt32.random(in: 0...UInt32.max)).partial"
        let fd: FileDescriptor
        if let recycled = reuseRecycledFile(as: path, size: size) { fd = recycled } else { fd = try createReserved(path, size: size) }
        defer { try? fd.close() }
        do {
            return ReceivingBlob(store: self, blob: blob, destination: .file(partialPath: path),
                                 mapping: try MappedBytes(descriptor: fd, size: Int(size), writable: true,
                                                          populate: Int(size) < PagePopulation.threshold))
        } catch {
            unlink(path)
            throw error
        }
    }

    /// A recycled file renamed to `path`, writable again (it kept its sealed blob's mode in the pool), cut to
    /// `size` bytes (its tail freed) and backed whole (a file written with holes gets them filled, so the mapping
    /// never faults on a full folder); nil when none fits.
    private func reuseRecycledFile(as path: String, size: UInt64) -> FileDescriptor? {
        guard size > 0, let file = changingRecyclePool({ $0.take(for: size, at: .now) }) else { return nil }
        guard rename(file.path, path) == 0 else {
            unlink(file.path)
            return nil
        }
        guard chmod(path, Tier0Store.filePermissions.rawValue) == 0,
              let fd = try? FileDescriptor.open(FilePath(path), .readWrite, options: .closeOnExec) else {
            unlink(path)
            return nil
        }
        guard (try? fd.resize(to: Int64(size))) != nil, posix_fallocate(fd.rawValue, 0, off_t(size)) == 0 else {
            try? fd.close()
            unlink(path)
            return nil
        }
        return fd
    }

    /// A new file at `path` with `size` bytes reserved; when the folder is full, the recycled files go first.
    private func createReserved(_ path: String, size: UInt64) throws(GedsError) -> FileDescriptor {
        let fd = try Tier0Store.createFile(path)
        var result = size > 0 ? posix_fallocate(fd.rawValue, 0, off_t(size)) : 0
        if result == ENOSPC, emptyRecyclePool() { result = posix_fallocate(fd.rawValue, 0, off_t(size)) }
        guard result == 0 else {
            try? fd.close()
            unlink(path)
            throw GedsError.io("cannot reserve \(size) bytes for a copy in tier 0 folder \(directory)", errno: result)
        }
        return fd
    }

    /// A blob's file mode: readable by the host's other processes (same-host nodes and attached ones map it).
    static let filePermissions: FilePermissions = [.ownerReadWrite, .groupRead, .otherRead]

    /// Creates `path`, which must not exist yet, for reading and writing.
    static func createFile(_ path: String, permissions: FilePermissions = filePermissions) throws(GedsError) -> FileDescriptor {
        do {
            return try FileDescriptor.open(FilePath(path), .readWrite, options: [.create, .exclusiveCreate, .closeOnExec],
                                           permissions: permissions)
        } catch {
            throw GedsError.io("cannot create \(path) in tier 0", error)
        }
    }

    /// Unlinks every recycled file (the folder is full); false when there was none.
    @discardableResult
    func emptyRecyclePool() -> Bool {
        unlinkRecycled { $0.evict(downTo: 0) }
    }

    /// Unlinks the recycled files `evict` takes out of the pool (under its lock); false when it took none.
    @discardableResult
    private func unlinkRecycled(_ evict: (inout RecyclePool) -> [RecyclePool.File]) -> Bool {
        let evicted = changingRecyclePool(evict)
        for file in evicted { unlink(file.path) }
        return !evicted.isEmpty
    }

    private func changingRecyclePool<Result>(_ change: (inout RecyclePool) -> Result) -> Result {
        recycled.withLock { pool in
            defer { recycledBytes.store(pool.bytes, ordering: .relaxed) }
            return change(&pool)
        }
    }

    /// Unlinks recycled files, oldest first, until tier 0's sealed blobs and the pool take at most `ceiling` bytes
    /// (under memory pressure, before any blob is spilled). `incoming`: a copy of that size is about to be received;
    /// the file it would go into is spared, and not counted (it is that copy's room).
    public func trimRecyclePool(under ceiling: UInt64, keepingFitFor incoming: UInt64? = nil) {
        guard recycledBytes.load(ordering: .relaxed) > 0 else { return }
        let blobBytes = usage.bytes
        unlinkRecycled { pool in
            let limit = ceiling > blobBytes ? ceiling - blobBytes : 0
            guard pool.bytes > limit else { return [] }
            return pool.evict(downTo: limit, sparing: incoming.flatMap { pool.bestFit(for: $0, at: .now) })
        }
    }

    /// Unlinks the recycled files that came into the pool before `cutoff` and were not reused since: a node whose
    /// fetches stopped gives their memory back.
    public func releaseRecycledFiles(keptBefore cutoff: ContinuousClock.Instant) {
        unlinkRecycled { $0.evict(keptBefore: cutoff) }
    }

    /// Recycles nothing from now on and unlinks the recycled files (at shutdown).
    public func stopRecycling() {
        changingRecyclePool { $0.stop() }
        emptyRecyclePool()
    }

    /// Takes a sealed file from another tier-0 folder on this host without copying (a hard link), falling
    /// back to nothing when the folders are on different file systems or the source is not the blob's own
    /// file (a packed copy's slab).
    public func adopt(_ blob: BlobID, linkingFrom source: String) -> Bool {
        guard source.hasSuffix("/" + blob.fileName), link(source, path(of: blob)) == 0 else { return false }
        var status = stat()
        guard stat(path(of: blob), &status) == 0 else { return false }
        markSealed(blob, size: UInt64(status.st_size))
        return true
    }

    /// A read-only, zero-copy view of a sealed blob (a packed one's view keeps its slot from reuse).
    public func map(_ blob: BlobID) throws(GedsError) -> MappedBytes {
        if let (slot, size) = sealed.withLock({ state in state.slots[blob].map { ($0, state.sizes[blob]!) } }) {
            return slot.view(size: Int(size))
        }
        return try Tier0Store.map(path: path(of: blob))
    }

    /// Maps any sealed tier-0 file, also another node's on the same host.
    public static func map(path: String) throws(GedsError) -> MappedBytes {
        let fd = try openSealed(path)
        defer { try? fd.close() }
        var status = stat()
        guard fstat(fd.rawValue, &status) == 0 else { throw GedsError.io("cannot stat \(path)", errno: errno) }
        return try MappedBytes(descriptor: fd, size: Int(status.st_size), writable: false)
    }

    /// A private copy of a blob packed into a slab file on this host (another process's slot can be reused once
    /// that process lets go of it, so its bytes are copied, not mapped): `noSuchBlob` unless the slot at
    /// `offset` names `blob` of `size` bytes before and after the copy.
    public static func copy(_ blob: BlobID, size: UInt64, packedIn path: String, at offset: UInt64) throws(GedsError) -> MappedBytes {
        guard size <= UInt64(Int.max - SlotHeader.size) else { throw GedsError(.noSuchBlob, "copy \(path) is gone") }
        let fd = try openSealed(path)
        defer { try? fd.close() }
        let copy = try MappedBytes(privateSize: SlotHeader.size + Int(size))
        var header = (UInt64(0), UInt64(0))
        let complete = withUnsafeMutableBytes(of: &header) { header in
            pread(fd.rawValue, copy.base, copy.count, off_t(offset)) == copy.count
                && SlotHeader.names(blob, size: size, at: copy.base!)
                && pread(fd.rawValue, header.baseAddress, SlotHeader.size, off_t(offset)) == SlotHeader.size
                && SlotHeader.names(blob, size: size, at: header.baseAddress!)
        }
        guard complete else { throw GedsError(.noSuchBlob, "copy of blob \(blob.fileName) in \(path) is gone") }
        return MappedBytes(slice: copy.base! + SlotHeader.size, count: Int(size), keeping: copy)
    }

    /// The bytes of a tier-0 copy on this host (another node's, or our own): its file mapped, or a checked copy of
    /// its slot when it is packed.
    public static func map(_ copy: NodeCopy, of blob: BlobID, size: UInt64) throws(GedsError) -> MappedBytes {
        guard let offset = copy.offset else { return try map(path: copy.path) }
        return try Tier0Store.copy(blob, size: size, packedIn: copy.path, at: offset)
    }

    /// A descriptor of a file holding exactly the blob's bytes, for another process to map: the blob's own file,
    /// or for a packed blob an unnamed file with a copy (its slot is not ours to lend: it is reused once we let go).
    /// The caller closes it.
    public func openForSharing(_ blob: BlobID) throws(GedsError) -> FileDescriptor {
        guard place(of: blob).slot != nil else { return try Tier0Store.openSealed(path(of: blob)) }
        return try unnamedFile(holding: try map(blob))
    }

    /// A new file in this folder, already unlinked (it goes with its last descriptor or mapping), holding a copy
    /// of `bytes`. The caller closes it.
    public func unnamedFile(holding bytes: MappedBytes) throws(GedsError) -> FileDescriptor {
        let path = directory + "/.\(UInt64.random(in: 0...UInt64.max)).partial"
        let fd = try Tier0Store.createFile(path, permissions: .ownerReadWrite)
        unlink(path)
        do {
            _ = try bytes.withBytes { bytes in try fd.writeAll(toAbsoluteOffset: 0, bytes) }
        } catch {
            try? fd.close()
            throw GedsError.io("cannot copy \(bytes.count) bytes into tier 0 folder \(directory)", error)
        }
        return fd
    }

    private static func openSealed(_ path: String) throws(GedsError) -> FileDescriptor {
        do {
            return try FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec)
        } catch Errno.noSuchFileOrDirectory {
            throw GedsError(.noSuchBlob, "copy \(path) is gone")
        } catch {
            throw GedsError.io("cannot open \(path)", error)
        }
    }

    /// Opens a sealed blob for sending (the caller closes the descriptor): its bytes are `size` bytes from `offset`
    /// (a packed blob's slab file is opened; no other blob is put into its slot meanwhile for the quarantine).
    public func openForReading(_ blob: BlobID) throws(GedsError) -> (descriptor: FileDescriptor, offset: UInt64, size: UInt64) {
        markServed(blob)
        let (path, slot) = place(of: blob)
        guard let size = size(of: blob) else { throw GedsError(.noSuchBlob, "blob \(blob.fileName) is not held here") }
        guard let fd = try? FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec) else {
            throw GedsError(.noSuchBlob, "blob \(blob.fileName) is not held here")
        }
        return (fd, slot.map { $0.offset + UInt64(SlotHeader.size) } ?? 0, size)
    }

    /// The blob's file is about to be sent to a peer (by `sendfile`, whose queued bytes refer to its pages after the
    /// descriptor is closed): recycled, it waits out the quarantine.
    private func markServed(_ blob: BlobID) {
        sealed.withLock { state in if state.sizes[blob] != nil { state.served.insert(blob) } }
    }

    /// Drops a blob. Its own file is kept for a later copy (see Recycling.swift) when nobody else on this host has
    /// it open or mapped and the pool has room with tier 0's sealed blobs and pool under `ceiling` bytes; else
    /// it is unlinked (its readers keep their bytes).
    public func remove(_ blob: BlobID, recyclingUnder ceiling: UInt64 = .max) {
        let (slot, hadFile, size, served) = sealed.withLock { state in
            let size = state.sizes[blob]
            let served = state.served.contains(blob)
            let (slot, hadFile) = state.set(blob, nil)
            return (slot, hadFile, size ?? 0, served)
        }
        withExtendedLifetime(slot) {}  // let go of outside the lock
        guard slot == nil else { return }
        let blobBytes = usage.bytes
        let limit = ceiling > blobBytes ? ceiling - blobBytes : 0
        // Files small enough for a slot are not worth keeping: copies of their size go into slots.
        guard hadFile, size > UInt64(slabs.packLimit),
              let destination = recycled.withLock({ $0.admits(size, limit: limit) ? $0.newPath(in: directory) : nil }) else {
            unlink(path(of: blob))
            return
        }
        guard RecycledFile.keepIfUnshared(path(of: blob), at: destination) else { return }
        // Bytes sent from a file may still sit in a socket's queue, referring to its pages, after the descriptor
        // was closed (sendfile does not copy): such a file waits out the quarantine before other bytes land in it.
        let usable = ContinuousClock.now + (served ? quarantine : .zero)
        unlinkRecycled { $0.add(RecyclePool.File(path: destination, size: size, usable: usable), limit: limit) }
    }

    /// Removes the slab files (at shutdown: the blobs in them were removed, and mappings outlive the files).
    public func removeSlabFiles() {
        removeFiles { SlabSlot(fileName: $0) != nil }
    }

    func markSealed(_ blob: BlobID, size: UInt64) {
        fchmodat(AT_FDCWD, path(of: blob), 0o444, 0)
        let old = sealed.withLock { $0.set(blob, size) }
        withExtendedLifetime(old) {}
    }

    /// A blob written here was sealed: a small one is copied from its file (`descriptor`) into a slot and the
    /// file goes; it stays a file when no slot can be had.
    func sealWritten(_ blob: BlobID, size: UInt64, descriptor: FileDescriptor) {
        guard slabs.packs(size), let slot = try? slabs.allocate(size: size),
              pread(descriptor.rawValue, slot.header + SlotHeader.size, Int(size), 0) == Int(size) else {
            markSealed(blob, size: size)
            return
        }
        packed(blob, size: size, into: slot)
        unlink(path(of: blob))
    }

    /// A slot now holds all of `blob`'s bytes: its header names the blob, and readers find it from here on.
    func packed(_ blob: BlobID, size: UInt64, into slot: PackedSlot) {
        SlotHeader.write(blob, size: size, at: slot.header)
        let (old, hadFile) = sealed.withLock { $0.set(blob, size, slot: slot) }
        withExtendedLifetime(old) {}
        if hadFile { unlink(path(of: blob)) }
    }

    /// Creates `path` and its missing parents (mode 0755); `what` names it in the error.
    public static func makeDirectories(_ path: String, what: String = "tier 0 folder") throws(GedsError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, 0o755) != 0, errno != EEXIST {
                throw GedsError.io("cannot create \(what) \(path)", errno: errno)
            }
        }
    }
}

/// A blob being written by its creator: writes and reads at any offset, truncate, then seal.
/// Writes go through `pwrite`, so a full memory folder returns ENOSPC instead of faulting in a mapping.
public final class WritableBlob: Sendable {
    public let blob: BlobID
    /// Nil for a file handed over by another process's tier 0 (an attached client's end of a `gedsd`'s file).
    private let store: Tier0Store?
    private let state: Mutex<State>

    struct State {
        /// Nil once sealed (and so closed).
        var descriptor: FileDescriptor?
        var size: UInt64
    }

    init(store: Tier0Store, blob: BlobID, descriptor: FileDescriptor) {
        self.store = store
        self.blob = blob
        state = Mutex(State(descriptor: descriptor, size: 0))
    }

    /// The writable end of a blob file that another process's tier 0 handed over (its descriptor, owned from
    /// now on): writes land in that file, and `seal` only closes it (the owner publishes it).
    public init(handedOver descriptor: FileDescriptor, blob: BlobID) {
        store = nil
        self.blob = blob
        state = Mutex(State(descriptor: descriptor, size: 0))
    }

    deinit {
        state.withLock { state in
            guard let descriptor = state.descriptor else { return }
            try? descriptor.close()
            if let store { unlink(store.path(of: blob)) }
        }
    }

    public var size: UInt64 { state.withLock { $0.size } }
    public var path: String { store?.path(of: blob) ?? "" }
    private var folder: String { store?.directory ?? "the gedsd's tier 0" }

    /// Calls `body` with the open descriptor (nil once sealed), e.g. to hand it to an attached process; it stays
    /// this blob's (`body` must not close it).
    public func withDescriptor<Result>(_ body: (FileDescriptor?) -> Result) -> Result {
        state.withLock { body($0.descriptor) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(GedsError) {
        try WritableBlob.checkRange(offset, UInt64(bytes.count))
        try state.withLock { (state) throws(GedsError) in
            guard let descriptor = state.descriptor else {
                throw GedsError(.objectSealed, "object is sealed; it can no longer be written")
            }
            do {
                do {
                    try descriptor.writeAll(toAbsoluteOffset: Int64(offset), bytes)
                } catch let error as Errno where error == .noSpace && store?.emptyRecyclePool() == true {
                    // The recycled files' memory was what the folder lacked.
                    try descriptor.writeAll(toAbsoluteOffset: Int64(offset), bytes)
                }
            } catch {
                // Give back what a partial write allocated beyond the old end.
                try? descriptor.resize(to: Int64(state.size))
                throw GedsError.io("cannot write to tier 0 folder \(folder)", error)
            }
            state.size = max(state.size, offset + UInt64(bytes.count))
        }
    }

    /// Files are addressed with signed 64-bit offsets; anything beyond is refused, not trapped on.
    static func checkRange(_ offset: UInt64, _ count: UInt64) throws(GedsError) {
        let (end, overflow) = offset.addingReportingOverflow(count)
        guard !overflow, end <= UInt64(Int64.max) else {
            throw GedsError(.invalidArgument, "offset \(offset) + \(count) bytes is beyond the largest object size")
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(GedsError) -> Int {
        try state.withLock { (state) throws(GedsError) in
            guard offset < state.size else { return 0 }
            guard let descriptor = state.descriptor else { throw GedsError.io("cannot read tier 0 file", errno: EBADF) }
            let wanted = min(buffer.count, Int(state.size - offset))
            var done = 0
            while done < wanted {
                let got: Int
                do {
                    got = try descriptor.read(fromAbsoluteOffset: Int64(offset) + Int64(done),
                                              into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<wanted]))
                } catch {
                    throw GedsError.io("cannot read tier 0 file", error)
                }
                if got == 0 { break }
                done += got
            }
            return done
        }
    }

    public func truncate(to size: UInt64) throws(GedsError) {
        try WritableBlob.checkRange(size, 0)
        try state.withLock { (state) throws(GedsError) in
            guard let descriptor = state.descriptor?.rawValue else {
                throw GedsError(.objectSealed, "object is sealed; it can no longer be truncated")
            }
            guard ftruncate(descriptor, off_t(size)) == 0 else {
                throw GedsError.io("cannot truncate tier 0 file", errno: errno)
            }
            state.size = size
        }
    }

    /// Makes the blob immutable (a small one moves into a slab slot) and closes its file; returns its size.
    public func seal() throws(GedsError) -> UInt64 {
        let (size, descriptor) = try state.withLock { (state) throws(GedsError) -> (UInt64, FileDescriptor) in
            guard let descriptor = state.descriptor else { throw GedsError(.objectSealed, "object is already sealed") }
            state.descriptor = nil
            return (state.size, descriptor)
        }
        defer { try? descriptor.close() }
        store?.sealWritten(blob, size: size, descriptor: descriptor)
        return size
    }
}

/// A copy arriving from a peer: bytes are written into its mapping at their offsets, then it is sealed.
public final class ReceivingBlob: Sendable {
    public let blob: BlobID
    public let mapping: MappedBytes
    private let store: Tier0Store
    private let destination: Destination
    private let finished = Mutex(false)
    /// A copy is written whole, so its file's pages (reserved, but zeroed only at their first fault) are mapped
    /// before the bytes land rather than one fault per page in the receiving copy: a small copy's with the
    /// mapping (`MAP_POPULATE`), a large one's by another thread while the bytes arrive (`MAP_POPULATE` took
    /// 93 ms for 256 MiB here, half the transfer's time, before the transfer could start).
    private let population: PagePopulation?

    enum Destination {
        /// A file of its own, renamed into place at seal.
        case file(partialPath: String)
        /// A slab slot (free again if the copy is never sealed).
        case slot(PackedSlot)
    }

    init(store: Tier0Store, blob: BlobID, destination: Destination, mapping: MappedBytes) {
        self.store = store
        self.blob = blob
        self.destination = destination
        self.mapping = mapping
        if case .file = destination, let base = mapping.base {
            population = PagePopulation.start(UnsafeMutableRawBufferPointer(start: base, count: mapping.count),
                                              onlyWhenPagesAreAbsent: false)
        } else {
            population = nil
        }
    }

    deinit {
        population?.finish()
        if case .file(let partialPath) = destination, !finished.withLock({ $0 }) { unlink(partialPath) }
    }

    /// Puts the complete copy into place (atomically replacing a copy another fetch finished first).
    public func seal() throws(GedsError) {
        population?.finish()
        switch destination {
        case .file(let partialPath):
            guard rename(partialPath, store.path(of: blob)) == 0 else {
                throw GedsError.io("cannot move a received copy into place in \(store.directory)", errno: errno)
            }
            finished.withLock { $0 = true }
            store.markSealed(blob, size: UInt64(mapping.count))
        case .slot(let slot):
            store.packed(blob, size: UInt64(mapping.count), into: slot)
        }
    }
}

/// A mapping of a file, unmapped when the last reference goes. Views handed out keep it alive, so a view
/// stays valid even if the blob is deleted meanwhile (the memory file system frees the pages after unmap).
/// A view of a packed blob is a slice of its slab's mapping that keeps the slot (see Slabs.swift).
// @unchecked: the pointer is set once at init and unmapped only in deinit; concurrent access is to the
// mapped bytes, whose ownership rules (read-only once sealed; disjoint ranges while receiving) callers keep.
public final class MappedBytes: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer?
    public let count: Int
    /// What keeps `base` valid when this is a slice of another mapping (nil: this owns its mapping).
    private let keeping: (any AnyObject & Sendable)?

    /// Maps `size` bytes of the open file `descriptor` (which may be closed afterwards), with every page mapped
    /// up front when `populate` (`MAP_POPULATE`).
    public init(descriptor: FileDescriptor, size: Int, writable: Bool, populate: Bool = false) throws(GedsError) {
        count = size
        keeping = nil
        guard size > 0 else {
            base = nil
            return
        }
        let protection = writable ? (PROT_READ | PROT_WRITE) : PROT_READ
        let address = mmap(nil, size, protection, populate ? (MAP_SHARED | MAP_POPULATE) : MAP_SHARED, descriptor.rawValue, 0)
        guard let address, address != MAP_FAILED else { throw GedsError.io("cannot map tier 0 file", errno: errno) }
        base = address
    }

    /// Private, zeroed memory of `size` bytes (a copy of a packed blob made for a reader in another process).
    init(privateSize size: Int) throws(GedsError) {
        count = size
        keeping = nil
        guard size > 0 else {
            base = nil
            return
        }
        let address = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let address, address != MAP_FAILED else { throw GedsError.io("cannot map \(size) bytes", errno: errno) }
        base = address
    }

    /// `count` bytes at `base` inside a mapping that `keeping` keeps alive.
    init(slice base: UnsafeMutableRawPointer, count: Int, keeping: any AnyObject & Sendable) {
        self.base = base
        self.count = count
        self.keeping = keeping
    }

    deinit {
        if keeping == nil, let base { munmap(base, count) }
    }

    /// The mapped bytes. Valid only while this object is alive: use `withBytes`, or keep a reference.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Copies `destination.count` bytes from `offset` into caller memory; `noSuchBlob` when the mapping ends before
    /// them (a copy shorter than the object it was taken for).
    public func copy(at offset: UInt64, into destination: UnsafeMutableRawBufferPointer) throws(GedsError) -> Int {
        let length = destination.count
        guard offset <= UInt64(count), count - Int(offset) >= length else {
            throw GedsError(.noSuchBlob, "copy is shorter than the object")
        }
        guard length > 0 else { return 0 }
        withBytes { bytes in destination.baseAddress!.copyMemory(from: bytes.baseAddress! + Int(offset), byteCount: length) }
        return length
    }

    /// Calls `body` with the bytes, keeping the mapping alive until it returns.
    public func withBytes<Result, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        defer { withExtendedLifetime(self) {} }
        return try body(bytes)
    }

    /// Copies `source` into the mapping at `offset` (bounds checked: a peer cannot write outside it).
    public func store(_ source: UnsafeRawBufferPointer, at offset: Int) -> Bool {
        guard let base, offset >= 0, source.count <= count - offset else { return source.isEmpty }
        base.advanced(by: offset).copyMemory(from: source.baseAddress!, byteCount: source.count)
        return true
    }
}
