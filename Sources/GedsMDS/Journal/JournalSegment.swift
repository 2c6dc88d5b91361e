#if canImport(Glibc)
import Glibc
#endif
import GedsCore
import NIOCore
import SystemPackage

/// One journal file (`journal.N`) mapped into memory, records copied into it with no system call. It is made at its
/// full capacity with zeros written (not a hole, not an unwritten extent), so the records overwrite blocks the file
/// system has already allocated and an fdatasync writes them without a metadata commit (as PostgreSQL does for its
/// WAL). The kernel owns the mapped pages: a killed MDS loses nothing copied in; a machine crash loses what no
/// fdatasync reached. Replay stops at the zeros after the last record.
final class JournalSegment: @unchecked Sendable {  // the mapping is written only under MetadataJournal's lock, and released once no one copies into it
    let generation: UInt64
    let path: String
    let capacity: Int
    private let file: SystemPackage.FileDescriptor
    private let base: UnsafeMutableRawPointer
    /// The header and the records copied in so far.
    private(set) var used = JournalFormat.headerSize

    /// Creates journal `generation` durably (the file and its directory entry): its header, then zeros up to
    /// `capacity`, written when `zeroFilled` (else a hole: quicker to make, slower to sync).
    init(in directory: StateDirectory, generation: UInt64, epoch: UInt32, capacity: Int, zeroFilled: Bool) throws(GedsError) {
        let path = directory.journalPath(generation)
        let file = try StateDirectory.open(path, .readWrite, [.create, .truncate], failure: "creating \(path)")
        do throws(GedsError) {
            var bytes = ByteBuffer()
            JournalFormat.write(JournalFormat.Header(kind: .journal, epoch: epoch, generation: generation, revision: 0),
                                into: &bytes)
            if zeroFilled { bytes.writeRepeatingByte(0, count: capacity - bytes.readableBytes) }
            try StateDirectory.writeAll(file, bytes)
            guard zeroFilled || ftruncate(file.rawValue, off_t(capacity)) == 0 else { throw GedsError.io("sizing \(path)", errno: errno) }
            try StateDirectory.sync(file, path)
            try directory.syncDirectory()
            let address = mmap(nil, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, file.rawValue, 0)
            guard let address, address != MAP_FAILED else { throw GedsError.io("mapping \(path)", errno: errno) }
            base = address
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

    /// Copies `bytes` after the records already in (the caller checked that they fit).
    func append(_ bytes: ByteBuffer) {
        bytes.withUnsafeReadableBytes { source in
            (base + used).copyMemory(from: source.baseAddress!, byteCount: source.count)
            used += source.count
        }
    }

    func sync() throws(GedsError) { try StateDirectory.sync(file, path) }

    /// Unmaps and closes the file, cut to the records it holds when `truncating` (once nothing more goes in).
    func release(truncating: Bool) {
        if truncating { ftruncate(file.rawValue, off_t(used)) }
        munmap(base, capacity)
        try? file.close()
    }
}
