#if canImport(Glibc)
import Glibc
#endif
import GedsCore
import NIOCore
import SystemPackage

/// One journal file (`journal.N`), made at its full capacity. Records go in either copied into the file's mapping
/// (`everysec`, `never`: no system call; the kernel owns the pages, so a killed MDS loses nothing copied in) or written
/// with `pwrite` by the one thread that then syncs (`always`: an fdatasync after stores into a mapping took
/// 900–1000 µs, as each one write-protects the pages again). A written file is made with zeros written (not a hole,
/// not an unwritten extent): records overwrite blocks the file system has already allocated, so an fdatasync writes
/// them without a metadata commit (as PostgreSQL does for its WAL; 186 µs instead of 420–1060 µs for an append on the
/// VM's ext4). A mapped file is synced about once a second, so that does not pay for writing 16 MiB of zeros (3 % of
/// a busy `everysec` MDS's CPU): its blocks are reserved with `posix_fallocate` (so a store into the mapping cannot
/// fail for space on a full disk, a SIGBUS) and its pages made present and writable ahead of need (else each store
/// into a new page faults, inside the journal's critical section). Replay stops at the zeros after the last record.
final class JournalSegment: @unchecked Sendable {  // `used` and the mapping change only under MetadataJournal's lock; released once nothing goes in
    let generation: UInt64
    let path: String
    let capacity: Int
    private let file: SystemPackage.FileDescriptor
    private let base: UnsafeMutableRawPointer?
    /// The header and the records taken in so far (copied, or to be written).
    private(set) var used = JournalFormat.headerSize

    /// Creates journal `generation` durably (the file and its directory entry): its header, then `capacity` bytes,
    /// mapped when `mapped`. `filledAhead`: its zeros written (a written file) or its pages made present (a mapped
    /// one), slower to make and quicker to take records; else a hole (a written file: slower to sync) or blocks
    /// reserved only (a mapped file: each new page faults).
    init(in directory: StateDirectory, generation: UInt64, epoch: UInt32, capacity: Int, filledAhead: Bool, mapped: Bool) throws(GedsError) {
        let path = directory.journalPath(generation)
        let file = try StateDirectory.open(path, .readWrite, [.create, .truncate], failure: "creating \(path)")
        do throws(GedsError) {
            var bytes = ByteBuffer()
            JournalFormat.write(JournalFormat.Header(kind: .journal, epoch: epoch, generation: generation, revision: 0),
                                into: &bytes)
            let writesZeros = filledAhead && !mapped
            if writesZeros { bytes.writeRepeatingByte(0, count: capacity - bytes.readableBytes) }
            try StateDirectory.writeAll(file, bytes)
            if mapped {
                let reserved = posix_fallocate(file.rawValue, 0, off_t(capacity))
                guard reserved == 0 else { throw GedsError.io("reserving \(capacity) bytes for \(path)", errno: reserved) }
            } else if !writesZeros {
                guard ftruncate(file.rawValue, off_t(capacity)) == 0 else { throw GedsError.io("sizing \(path)", errno: errno) }
            }
            try StateDirectory.sync(file, path)
            try directory.syncDirectory()
            if mapped {
                let address = mmap(nil, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, file.rawValue, 0)
                guard let address, address != MAP_FAILED else { throw GedsError.io("mapping \(path)", errno: errno) }
                // Best effort (Linux 5.14 and later): a kernel without it faults each page in on its first store.
                if filledAhead { _ = madvise(address, capacity, MADV_POPULATE_WRITE) }
                base = address
            } else {
                base = nil
            }
        } catch {
            try? file.close()
            unlink(path)
            throw error
        }
        self.generation = generation
        self.path = path
        self.capacity = capacity
        self.file = file
    }

    func fits(_ count: Int) -> Bool { used + count <= capacity }

    /// Takes `bytes` after the records already in (the caller checked that they fit): copied when the file is mapped,
    /// else to be written at the offset returned.
    func append(_ bytes: ByteBuffer) -> Int {
        let offset = used
        used += bytes.readableBytes
        if let base { bytes.withUnsafeReadableBytes { (base + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        return offset
    }

    func write(_ bytes: ByteBuffer, at offset: Int) throws(GedsError) {
        do {
            try bytes.withUnsafeReadableBytes { bytes in _ = try file.writeAll(toAbsoluteOffset: Int64(offset), bytes) }
        } catch {
            throw GedsError.io("writing \(path)", error)
        }
    }

    func sync() throws(GedsError) { try StateDirectory.sync(file, path) }

    /// Unmaps and closes the file, cut to the records it holds when `truncating` (once nothing more goes in).
    func release(truncating: Bool) {
        if truncating { ftruncate(file.rawValue, off_t(used)) }
        if let base { munmap(base, capacity) }
        try? file.close()
    }
}
