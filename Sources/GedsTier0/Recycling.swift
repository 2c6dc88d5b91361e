import CLinux
import GedsCore
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// A copy received into tier 0 spends most of its time in the kernel allocating and zeroing fresh memory-file
// pages (MAP_POPULATE of 65,536 new pages takes longer than the copy of 256 MiB into them). So the files of
// dropped blobs are kept in a bounded pool, and a copy received later goes into one of them: its pages exist.
//
// Why a recycled file never changes bytes that someone still sees: a dropped blob's file may still be open or
// mapped on this host (a view outlives a delete; same-host nodes and attached processes map tier-0 files by
// path, and descriptors are handed to attached processes). A file is taken into the pool only when a write
// lease on it is granted, which the kernel does only while no other open file description of it exists
// anywhere on the host (a mapping holds one, so does a descriptor in flight in a socket). The lease is held
// while the file is renamed to a private name no reader knows, so an open that came in between breaks it (and
// the file is not kept), and a file with another name (a hard link, as a same-host node adopts copies) is not
// kept either. Anything unexpected: the file is unlinked as before, and its readers keep their bytes. A file whose
// bytes were sent to a peer (sendfile queues references to its pages, which outlive the closed descriptor) waits
// out the store's quarantine before a copy is received into it, as a freed slab slot does. (An RDMA registration
// needs no wait: it is ended before the drop, and its mapping would refuse the lease while it lasts.)

/// The files kept for reuse, oldest first, and the bytes they take. Plain state: the store does the file work.
struct RecyclePool {
    struct File {
        let path: String
        let size: UInt64
        /// Not received into before then (see `Tier0Store.markServed`).
        let usable: ContinuousClock.Instant
        /// When it came into the pool: one left unused for long is given back (`evict(keptBefore:)`).
        var kept = ContinuousClock.now
    }

    /// The most bytes the pool may hold.
    private(set) var budget: UInt64
    private(set) var files: [File] = []
    private(set) var bytes: UInt64 = 0
    private var nextNumber: UInt64 = 0

    init(budget: UInt64) {
        self.budget = budget
    }

    /// A fresh private name in `directory` (see `isRecycled(fileName:)`).
    mutating func newPath(in directory: String) -> String {
        nextNumber += 1
        return directory + "/.recycle-\(nextNumber)"
    }

    static func isRecycled(fileName: String) -> Bool { fileName.hasPrefix(".recycle-") }

    /// Takes no more files (the store is shutting down).
    mutating func stop() { budget = 0 }

    /// The index of the file a copy of `size` bytes goes into: the smallest that holds it, unless it is more than
    /// twice as big (cutting it down would free more pages than the copy saves allocating).
    func bestFit(for size: UInt64, at now: ContinuousClock.Instant) -> Int? {
        var best: Int?
        for (index, file) in files.enumerated() where file.size >= size && file.size / 2 <= size && file.usable <= now {
            if best == nil || file.size < files[best!].size { best = index }
        }
        return best
    }

    mutating func take(for size: UInt64, at now: ContinuousClock.Instant) -> File? {
        guard let index = bestFit(for: size, at: now) else { return nil }
        bytes -= files[index].size
        return files.remove(at: index)
    }

    /// Whether a file of `size` bytes may come in with the pool kept under `limit` bytes (besides the budget).
    func admits(_ size: UInt64, limit: UInt64) -> Bool { size <= min(budget, limit) }

    /// Adds a file (one that `admits`), evicting the oldest ones until the pool is within `limit` and its budget;
    /// returns the evicted files, which the caller unlinks.
    mutating func add(_ file: File, limit: UInt64) -> [File] {
        files.append(file)
        bytes += file.size
        return evict(downTo: min(budget, limit))
    }

    /// Evicts the files that came in before `cutoff`: memory nobody reused is given back to the host.
    mutating func evict(keptBefore cutoff: ContinuousClock.Instant) -> [File] {
        let evicted = files.filter { $0.kept < cutoff }
        guard !evicted.isEmpty else { return [] }
        files.removeAll { $0.kept < cutoff }
        bytes -= evicted.reduce(0) { $0 + $1.size }
        return evicted
    }

    /// Evicts the oldest files until the pool holds at most `limit` bytes, not counting (nor evicting) the
    /// file at `sparing`; returns the evicted files.
    mutating func evict(downTo limit: UInt64, sparing: Int? = nil) -> [File] {
        let spared = sparing.map { files[$0] }
        var kept = bytes - (spared?.size ?? 0)
        var evicted: [File] = []
        var remaining: [File] = []
        for (index, file) in files.enumerated() {
            if index != sparing, kept > limit {
                evicted.append(file)
                kept -= file.size
            } else {
                remaining.append(file)
            }
        }
        files = remaining
        bytes = kept + (spared?.size ?? 0)
        return evicted
    }
}

enum RecycledFile {
    /// Takes the file at `path` away from its name: renamed to `destination` when nobody else on this host has it
    /// open or mapped and it has no other name (see the top of this file) (true); else unlinked (false), and whoever
    /// has it open keeps its bytes.
    static func keepIfUnshared(_ path: String, at destination: String) -> Bool {
        guard let file = try? FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec) else { return false }
        defer { try? file.close() }
        let descriptor = file.rawValue
        guard clinux_take_write_lease(descriptor) == 0 else {
            unlink(path)
            return false
        }
        defer { clinux_release_lease(descriptor) }
        guard rename(path, destination) == 0 else {
            unlink(path)
            return false
        }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_nlink == 1, clinux_write_lease_intact(descriptor) == 1 else {
            unlink(destination)
            return false
        }
        return true
    }
}
