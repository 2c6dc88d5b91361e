import CVerbs
import GedsCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A protection domain (`ibv_pd`), deallocated when the last queue pair or registration using it is gone
/// (each holds a reference).
// @unchecked: the pointer is immutable and freed only in deinit; libibverbs calls taking a PD are thread-safe.
public final class ProtectionDomain: @unchecked Sendable {
    public let device: DeviceContext
    let pd: UnsafeMutablePointer<ibv_pd>

    public init(device: DeviceContext) throws(RDMAError) {
        guard let pd = ibv_alloc_pd(device.context) else {
            throw RDMAError.system("ibv_alloc_pd(\(device.name))", errno: cverbs_errno())
        }
        self.device = device
        self.pd = pd
    }

    deinit { ibv_dealloc_pd(pd) }
}

/// What a registration lets the local device and remote peers do with the memory.
public struct AccessFlags: OptionSet, Sendable, Hashable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let localWrite = AccessFlags(rawValue: Int32(IBV_ACCESS_LOCAL_WRITE.rawValue))
    public static let remoteRead = AccessFlags(rawValue: Int32(IBV_ACCESS_REMOTE_READ.rawValue))
    public static let remoteWrite = AccessFlags(rawValue: Int32(IBV_ACCESS_REMOTE_WRITE.rawValue))
}

/// Memory that can be registered: a base address and a length, owned by an object that keeps the memory
/// valid while it lives (a tier-0 mapping, a buffer). A registration keeps its memory's owner alive.
public protocol RegistrableMemory: AnyObject, Sendable {
    var registrableBytes: UnsafeMutableRawBufferPointer { get }
}

/// A registered memory region (`ibv_mr`). Deregistered in deinit, when the last reference goes; it keeps its
/// protection domain and its memory's owner alive until then, so the device never addresses freed memory.
// @unchecked: the pointers and keys are immutable; the region is deregistered only in deinit, when no
// reference (so no posted work request, which holds one) remains.
public final class MemoryRegion: @unchecked Sendable {
    public let protectionDomain: ProtectionDomain
    let mr: UnsafeMutablePointer<ibv_mr>
    /// Where the memory is in this process.
    public let base: UnsafeMutableRawPointer
    public let length: Int
    /// The address peers use for it (the base address, unless registered with an I/O virtual address).
    public let remoteAddress: UInt64
    public let lkey: UInt32
    public let rkey: UInt32
    public let access: AccessFlags
    private let owner: AnyObject?

    /// Registers `bytes` (non-empty). `owner` is kept alive as long as the registration.
    public init(_ protectionDomain: ProtectionDomain, bytes: UnsafeMutableRawBufferPointer, access: AccessFlags,
                ioVirtualAddress: UInt64? = nil, owner: AnyObject?) throws(RDMAError) {
        guard let base = bytes.baseAddress, bytes.count > 0 else {
            throw RDMAError(.invalidArgument, "cannot register an empty buffer")
        }
        let iova = ioVirtualAddress ?? UInt64(UInt(bitPattern: base))
        guard let mr = cverbs_reg_mr(protectionDomain.pd, base, bytes.count, iova, access.rawValue) else {
            let code = cverbs_errno()
            var error = RDMAError.system("ibv_reg_mr of \(bytes.count) bytes on \(protectionDomain.device.name)", errno: code)
            if code == EFAULT, let mapping = owner as? SharedMapping, !mapping.writable {
                // Linux before 6.2 pins non-writable registrations with FOLL_FORCE|FOLL_WRITE, which a shared
                // file mapping without write permission refuses.
                error = RDMAError(.system, error.message + ": this kernel cannot register a read-only shared file mapping;"
                                  + " map the file writable (MAP_SHARED from a descriptor opened for writing)", errno: code)
            }
            throw error
        }
        self.protectionDomain = protectionDomain
        self.mr = mr
        self.base = base
        self.length = bytes.count
        self.remoteAddress = iova
        self.lkey = mr.pointee.lkey
        self.rkey = mr.pointee.rkey
        self.access = access
        self.owner = owner
    }

    /// Registers all of `memory`, keeping it alive.
    public convenience init(_ protectionDomain: ProtectionDomain, memory: some RegistrableMemory, access: AccessFlags,
                            ioVirtualAddress: UInt64? = nil) throws(RDMAError) {
        try self.init(protectionDomain, bytes: memory.registrableBytes, access: access,
                      ioVirtualAddress: ioVirtualAddress, owner: memory)
    }

    deinit { ibv_dereg_mr(mr) }

    /// Whether [pointer, pointer + count) lies inside this region.
    func contains(_ pointer: UnsafeMutableRawPointer, count: Int) -> Bool {
        let start = UInt(bitPattern: pointer), first = UInt(bitPattern: base)
        return start >= first && UInt(count) <= UInt(length) - (start - first)
    }

    /// The local address of `offset` inside the region, as work requests take it.
    func localAddress(at offset: Int) -> UInt64 { UInt64(UInt(bitPattern: base)) + UInt64(offset) }
}

/// A `MAP_SHARED` mapping of a file, the shape of a tier-0 object (a file in a memory file system such as
/// /dev/shm): registering it pins the file's pages, so a peer's READ sees the file's current bytes.
/// Unmapped in deinit.
// @unchecked: the pointer is set once at init and unmapped only in deinit; the bytes are shared memory whose
// writers coordinate as with any file.
public final class SharedMapping: RegistrableMemory, @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let count: Int
    public let writable: Bool

    /// Maps all of the file at `path` (which must not be empty). `populate` faults every page in at once
    /// (tmpfs allocates pages lazily).
    public convenience init(path: String, writable: Bool, populate: Bool = true) throws(RDMAError) {
        let descriptor = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)
        guard descriptor >= 0 else { throw RDMAError.system("open \(path)", errno: cverbs_errno()) }
        defer { close(descriptor) }
        try self.init(descriptor: descriptor, writable: writable, populate: populate, name: path)
    }

    /// Maps all of an open file (the descriptor may be closed afterwards). To register a sealed tier-0
    /// object on kernels before 6.2, map it writable from the writer's descriptor (see `MemoryRegion`).
    public init(descriptor: Int32, writable: Bool, populate: Bool = true, name: String = "file") throws(RDMAError) {
        let path = name
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw RDMAError.system("fstat \(path)", errno: cverbs_errno()) }
        guard status.st_size > 0 else { throw RDMAError(.invalidArgument, "cannot map the empty file \(path)") }
        let protection = writable ? (PROT_READ | PROT_WRITE) : PROT_READ
        let flags = MAP_SHARED | (populate ? MAP_POPULATE : 0)
        let address = mmap(nil, Int(status.st_size), protection, flags, descriptor, 0)
        guard let address, address != MAP_FAILED else { throw RDMAError.system("mmap \(path)", errno: cverbs_errno()) }
        base = address
        count = Int(status.st_size)
        self.writable = writable
    }

    deinit { munmap(base, count) }

    public var registrableBytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: base, count: count) }
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}

/// Page-aligned memory of this process (for destinations and message buffers), freed in deinit.
// @unchecked: the pointer is immutable and freed only in deinit; users write disjoint ranges or synchronize.
public final class AlignedBuffer: RegistrableMemory, @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let count: Int

    public init(count: Int) {
        precondition(count > 0, "AlignedBuffer needs at least one byte")
        let page = max(Int(sysconf(Int32(_SC_PAGESIZE))), 4096)
        base = UnsafeMutableRawPointer.allocate(byteCount: (count + page - 1) / page * page, alignment: page)
        self.count = count
    }

    deinit { base.deallocate() }

    public var registrableBytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: base, count: count) }
    public var bytes: UnsafeMutableRawBufferPointer { registrableBytes }
}

/// Registrations of READ destinations, reused: registering is expensive (it pins and maps pages), and a
/// reader reads into the same buffers again and again. An entry is found by its owner object and an address
/// range inside the owner's memory; entries hold their owners, so the memory cannot be unmapped (and another
/// mapping appear at the same address) while a registration of it is cached. Least recently used entries
/// go first when the cache is over its limits; a region still in use by a READ stays registered until that
/// READ ends (the READ holds it).
public final class RegistrationCache: Sendable {
    public let protectionDomain: ProtectionDomain
    public let maxEntries: Int
    public let maxBytes: Int

    private struct Entry {
        let owner: any AnyObject & Sendable
        let region: MemoryRegion
        var lastUse: UInt64
    }

    private struct State: ~Copyable {
        var entries: [Entry] = []
        var bytes = 0
        var clock: UInt64 = 0
        var hits = 0
        var misses = 0
    }

    private let state = Mutex(State())

    public init(protectionDomain: ProtectionDomain, maxEntries: Int = 1024, maxBytes: Int = 16 << 30) {
        self.protectionDomain = protectionDomain
        self.maxEntries = maxEntries
        self.maxBytes = maxBytes
    }

    /// A registration (with local write access) covering `bytes`, which must lie in memory that `owner` keeps
    /// valid. Registers all of the owner's memory when it is `RegistrableMemory`, so later reads into other
    /// parts of it hit the cache.
    public func region(for bytes: UnsafeMutableRawBufferPointer, owner: some AnyObject & Sendable) throws(RDMAError) -> MemoryRegion {
        guard let start = bytes.baseAddress, bytes.count > 0 else {
            throw RDMAError(.invalidArgument, "an empty destination needs no registration")
        }
        if let hit = state.withLock({ state -> MemoryRegion? in
            state.clock += 1
            guard let index = state.entries.firstIndex(where: { $0.owner === owner && $0.region.contains(start, count: bytes.count) })
            else { state.misses += 1; return nil }
            state.entries[index].lastUse = state.clock
            state.hits += 1
            return state.entries[index].region
        }) {
            return hit
        }
        var whole = bytes
        if let memory = owner as? any RegistrableMemory {
            let all = memory.registrableBytes
            if let base = all.baseAddress, UInt(bitPattern: start) >= UInt(bitPattern: base),
               UInt(bytes.count) <= UInt(all.count) - (UInt(bitPattern: start) - UInt(bitPattern: base)) {
                whole = all
            }
        }
        let region = try MemoryRegion(protectionDomain, bytes: whole, access: [.localWrite], owner: owner)
        var evicted: [MemoryRegion] = []
        state.withLock { state in
            state.clock += 1
            state.entries.append(Entry(owner: owner, region: region, lastUse: state.clock))
            state.bytes += region.length
            while state.entries.count > 1, state.entries.count > maxEntries || state.bytes > maxBytes {
                let oldest = state.entries.indices.min(by: { state.entries[$0].lastUse < state.entries[$1].lastUse })!
                let entry = state.entries.remove(at: oldest)
                state.bytes -= entry.region.length
                evicted.append(entry.region)
            }
        }
        _ = evicted  // deregistered here, outside the lock, unless a READ still holds them
        return region
    }

    /// Forgets every registration of `owner`'s memory (call before reusing its address range otherwise).
    public func evict(owner: AnyObject) {
        let removed = state.withLock { state -> [MemoryRegion] in
            let gone = state.entries.filter { $0.owner === owner }.map(\.region)
            state.entries.removeAll { $0.owner === owner }
            state.bytes -= gone.reduce(0) { $0 + $1.length }
            return gone
        }
        _ = removed
    }

    /// Entries, cached bytes, hits and misses so far.
    public var statistics: (entries: Int, bytes: Int, hits: Int, misses: Int) {
        state.withLock { ($0.entries.count, $0.bytes, $0.hits, $0.misses) }
    }
}
