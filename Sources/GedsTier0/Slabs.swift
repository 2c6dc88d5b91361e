import GedsCore
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// Small blobs share slab files: a file of their own would cost a whole page each (4× for 1 KiB objects).
//
// A slab file holds equal slots of one size class, is mapped once for its life, and its pages are backed
// (`posix_fallocate`, so a full memory folder is an error and not a SIGBUS) a chunk at a time as its slots are
// first used. A slot starts with a `SlotHeader` naming the blob it holds.
//
// Why a reused slot never hands out another object's bytes unnoticed (the slab counterpart of "an rkey never
// outlives its object": a slab is registered for RDMA once, and its rkey lives as long as the slab, so a slot's
// published address and rkey outlive the blob in it):
// - in this process a slot is a `PackedSlot` object: views hold it, and it returns to its free list only when
//   the store and the last view let go of it; its header is cleared at that moment;
// - a freed slot waits out a quarantine (the node's timeout) before it is used again, so a READ or a sendfile
//   that started while it was valid ends before other bytes land there;
// - readers that found the slot through a location (a mapping on the same host, or an RDMA READ, which fetches
//   the header with the bytes) check the header (the blob and its size) against what they expect, and fail with
//   `noSuchBlob` when it names anything else; a freed slot's header names no blob.

/// The first bytes of every slot: the blob it holds and the blob's size.
public enum SlotHeader {
    public static let size = 16

    static func write(_ blob: BlobID, size: UInt64, at header: UnsafeMutableRawPointer) {
        header.storeBytes(of: size.littleEndian, toByteOffset: 8, as: UInt64.self)
        header.storeBytes(of: blob.rawValue.littleEndian, as: UInt64.self)
    }

    /// A free slot names no blob of any size.
    static func clear(at header: UnsafeMutableRawPointer) {
        header.storeBytes(of: 0, as: UInt64.self)
        header.storeBytes(of: UInt64.max, toByteOffset: 8, as: UInt64.self)
    }

    /// Whether the header at `header` names `blob` of `size` bytes.
    public static func names(_ blob: BlobID, size: UInt64, at header: UnsafeRawPointer) -> Bool {
        UInt64(littleEndian: header.loadUnaligned(as: UInt64.self)) == blob.rawValue
            && UInt64(littleEndian: header.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) == size
    }
}

enum SlotSizes {
    /// Slot sizes (header included, multiples of 8) for blobs of up to `packLimit` bytes. A blob takes the smallest
    /// slot it fits in, and each slot is at most 1.25× the smallest blob that takes it (for blobs of 103 bytes and
    /// more; smaller ones share the smallest slot, 128 bytes). Every power of two has a slot of its own (a 1 KiB
    /// blob takes 1040 bytes).
    static func classes(upTo packLimit: Int) -> [Int] {
        var sizes: Set<Int> = []
        var slot = 128
        while slot - SlotHeader.size < packLimit {
            sizes.insert(slot)
            let smallestNext = slot - SlotHeader.size + 1
            slot = max(slot + 8, smallestNext * 5 / 4 & ~7)
        }
        sizes.insert(roundUp(packLimit + SlotHeader.size, to: 8))
        var power = 128
        while power <= packLimit {
            sizes.insert(power + SlotHeader.size)
            power *= 2
        }
        return sizes.sorted()
    }

    static func roundUp(_ value: Int, to multiple: Int) -> Int { (value + multiple - 1) / multiple * multiple }
}

/// A slab file, mapped (writable, shared) for the store's life.
final class Slab: Sendable {
    let id: UInt32
    let path: String
    let slotSize: Int
    let slotCount: Int
    let mapping: MappedBytes

    /// Each slab file's size (its pages are backed only as its slots are used, or all at once when it is
    /// registered for RDMA, which pins it whole): big enough for few files and mappings, small enough that a
    /// registered slab wastes little.
    static let bytes = 4 << 20
    /// How much more of a slab is backed at a time.
    static let backingChunk = 64 << 10

    init(id: UInt32, path: String, slotSize: Int, slotCount: Int, mapping: MappedBytes) {
        self.id = id
        self.path = path
        self.slotSize = slotSize
        self.slotCount = slotCount
        self.mapping = mapping
    }

    func header(of index: Int) -> UnsafeMutableRawPointer { mapping.base! + index * slotSize }
}

/// A slot holding (or receiving) one blob. It goes back to its free list, after the quarantine, when the last
/// reference goes: the store's, and those of views handed out.
public final class PackedSlot: Sendable {
    let slab: Slab
    let index: Int
    let sizeClass: SlabClass

    init(slab: Slab, index: Int, sizeClass: SlabClass) {
        self.slab = slab
        self.index = index
        self.sizeClass = sizeClass
    }

    deinit {
        SlotHeader.clear(at: header)
        sizeClass.release(slab: slab, index: index)
    }

    var header: UnsafeMutableRawPointer { slab.header(of: index) }
    var place: SlabSlot { SlabSlot(slab: slab.id, offset: UInt64(index * slab.slotSize)) }

    /// The slot's blob bytes (after the header), `size` long, as a view that keeps the slot.
    func view(size: Int) -> MappedBytes {
        MappedBytes(slice: header + SlotHeader.size, count: size, keeping: self)
    }
}

/// The slabs of one slot size, with their free list.
final class SlabClass: Sendable {
    let slotSize: Int
    private let folder: SlabFolder
    private let state = Mutex(State())

    private struct State {
        var free: [(slab: Slab, index: Int)] = []
        /// Freed slots in the order they were freed, each with when it may be used again.
        var quarantined: [(slab: Slab, index: Int, until: ContinuousClock.Instant)] = []
        var quarantinedStart = 0
        /// The slab whose never-used slots are handed out next, with its descriptor (to back more of it).
        var growing: Growing?
    }

    private struct Growing {
        let slab: Slab
        let descriptor: FileDescriptor
        var nextSlot = 0
        var backedEnd = 0
    }

    init(slotSize: Int, folder: SlabFolder) {
        self.slotSize = slotSize
        self.folder = folder
    }

    deinit {
        state.withLock { state in try? state.growing?.descriptor.close() }
    }

    func allocate() throws(GedsError) -> PackedSlot {
        try state.withLock { (state) throws(GedsError) -> PackedSlot in
            let now = ContinuousClock.now
            while state.quarantinedStart < state.quarantined.count, state.quarantined[state.quarantinedStart].until <= now {
                let slot = state.quarantined[state.quarantinedStart]
                state.free.append((slot.slab, slot.index))
                state.quarantinedStart += 1
            }
            if state.quarantinedStart > 64, state.quarantinedStart * 2 > state.quarantined.count {
                state.quarantined.removeFirst(state.quarantinedStart)
                state.quarantinedStart = 0
            }
            if let (slab, index) = state.free.popLast() { return PackedSlot(slab: slab, index: index, sizeClass: self) }
            if state.growing == nil || state.growing!.nextSlot == state.growing!.slab.slotCount {
                try? state.growing?.descriptor.close()
                state.growing = nil
                let (slab, descriptor) = try folder.createSlab(slotSize: slotSize)
                state.growing = Growing(slab: slab, descriptor: descriptor)
            }
            var growing = state.growing!
            let end = (growing.nextSlot + 1) * slotSize
            if end > growing.backedEnd {
                let newEnd = min(SlotSizes.roundUp(end, to: Slab.backingChunk), growing.slab.slotCount * slotSize)
                let result = posix_fallocate(growing.descriptor.rawValue, off_t(growing.backedEnd), off_t(newEnd - growing.backedEnd))
                guard result == 0 else {
                    throw GedsError.io("cannot back more of slab \(growing.slab.path) in tier 0", errno: result)
                }
                growing.backedEnd = newEnd
            }
            let index = growing.nextSlot
            growing.nextSlot += 1
            state.growing = growing
            return PackedSlot(slab: growing.slab, index: index, sizeClass: self)
        }
    }

    fileprivate func release(slab: Slab, index: Int) {
        let until = ContinuousClock.now + folder.quarantine
        state.withLock { $0.quarantined.append((slab, index, until)) }
    }
}

/// Where the slabs of a store live, how they are named, and how long a freed slot waits before reuse.
final class SlabFolder: Sendable {
    let directory: String
    let quarantine: Duration
    private let nextID = Atomic<UInt32>(1)

    init(directory: String, quarantine: Duration) {
        self.directory = directory
        self.quarantine = quarantine
    }

    /// A new slab file (slots of `slotSize`), mapped, and its open descriptor (the caller closes it).
    func createSlab(slotSize: Int) throws(GedsError) -> (Slab, FileDescriptor) {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let path = directory + "/" + SlabSlot(slab: id, offset: 0).fileName
        let slotCount = max(Slab.bytes / slotSize, 1)
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(FilePath(path), .readWrite, options: [.create, .truncate, .closeOnExec],
                                         permissions: Tier0Store.filePermissions)
        } catch {
            throw GedsError.io("cannot create slab \(path) in tier 0", error)
        }
        do throws(GedsError) {
            do {
                try fd.resize(to: Int64(slotCount * slotSize))
            } catch {
                throw GedsError.io("cannot size slab \(path) in tier 0", error)
            }
            let mapping = try MappedBytes(descriptor: fd, size: slotCount * slotSize, writable: true)
            return (Slab(id: id, path: path, slotSize: slotSize, slotCount: slotCount, mapping: mapping), fd)
        } catch {
            try? fd.close()
            unlink(path)
            throw error
        }
    }
}

/// The size classes of one store.
final class SlabAllocator: Sendable {
    let packLimit: Int
    private let classes: [SlabClass]

    init(directory: String, packLimit: Int, quarantine: Duration) {
        self.packLimit = packLimit
        let folder = SlabFolder(directory: directory, quarantine: quarantine)
        classes = packLimit > 0 ? SlotSizes.classes(upTo: packLimit).map { SlabClass(slotSize: $0, folder: folder) } : []
    }

    /// Whether a blob of `size` bytes goes into a slot (empty blobs stay files: they cost no page).
    func packs(_ size: UInt64) -> Bool { size > 0 && size <= UInt64(packLimit) }

    /// A slot for a blob of `size` bytes (one that `packs`).
    func allocate(size: UInt64) throws(GedsError) -> PackedSlot {
        let needed = Int(size) + SlotHeader.size
        var low = 0
        var high = classes.count - 1
        while low < high {
            let middle = (low + high) / 2
            if classes[middle].slotSize >= needed { high = middle } else { low = middle + 1 }
        }
        return try classes[low].allocate()
    }
}
