import CLinux
import GedsCore
import NIOPosix
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Tier 1: one file per blob in a local folder, written and read with `O_DIRECT` (no page cache) from aligned
/// buffers, on the store's own threads (a NIOThreadPool), so that no call blocks an event loop or the
/// cooperative pool.
///
/// Sizes need not be multiples of the block size: the last block is written padded with zeros and the file is
/// then truncated to the true size; reads ask for whole blocks and get the true bytes. Each object's CRC-32C is
/// computed while it is written, kept with its record (and in the file's `user.geds.tier1` extended attribute),
/// and checked by every whole-object read, so a corrupt or truncated file is an error, never wrong bytes.
public final class Tier1Store: Sendable {
    public let directory: String
    public let capacity: UInt64
    /// The alignment of direct I/O here: offsets, lengths and buffer addresses are multiples of it.
    public let blockSize: Int
    let chunkSize: Int
    let stripeSize: Int
    let threads: Int
    let preallocate: Bool
    let pool: NIOThreadPool
    let buffers: AlignedBufferPool
    let state = Mutex(State())
    let direct: Atomic<Bool>
    let simulateRefusal: Bool
    let log: @Sendable (String) -> Void

    struct State {
        var objects: [BlobID: Entry] = [:]
        var reserved: UInt64 = 0
        var stopped = false
    }

    enum Entry {
        case writing(allocated: UInt64)
        case stored(Tier1Object)
    }

    public init(_ configuration: Tier1Configuration) throws(GedsError) {
        directory = configuration.directory
        capacity = configuration.capacity
        log = configuration.log
        simulateRefusal = configuration.simulateDirectIORefusal
        try makeDirectories(directory)
        let probe = try Tier1Store.probeDirectIO(configuration)
        direct = Atomic(probe.direct)
        blockSize = probe.blockSize
        chunkSize = (configuration.chunkSize + blockSize - 1) / blockSize * blockSize
        stripeSize = max(chunkSize, (configuration.stripeSize + chunkSize - 1) / chunkSize * chunkSize)
        threads = configuration.threads
        preallocate = configuration.preallocate
        buffers = AlignedBufferPool(size: chunkSize, alignment: blockSize, keep: configuration.pooledBuffers)
        pool = NIOThreadPool(numberOfThreads: configuration.threads)
        pool.start()
        scanLeftovers(configuration.leftovers)
    }

    deinit {
        if !state.withLock({ $0.stopped }) { pool.shutdownGracefully { _ in } }
    }

    /// Stops the threads once the calls in progress are done; later calls fail.
    public func shutdown() async {
        let first = state.withLock { state in
            defer { state.stopped = true }
            return !state.stopped
        }
        if first { try? await pool.shutdownGracefully() }
    }

    /// Whether files are opened with O_DIRECT (false after a fallback to buffered I/O).
    public var usesDirectIO: Bool { direct.load(ordering: .relaxed) }

    public func path(of blob: BlobID) -> String { directory + "/" + blob.fileName }

    // MARK: Writing

    /// Stores `source` (the caller's memory, which must stay valid until the call returns) as `blob`. Memory
    /// aligned to `blockSize` (a tier-0 mapping, for one) is written from where it is; other memory goes through
    /// an aligned buffer.
    @discardableResult
    public func write(_ blob: BlobID, from source: UnsafeRawBufferPointer) async throws(GedsError) -> Tier1Object {
        let size = UInt64(source.count)
        let allocated = try reserve(blob, size: size)
        let memory = SendableMemory(source)
        let outcome: Result<(FileDescriptor, UInt32), GedsError>
        do throws(GedsError) {
            let fd = try await onPool { () throws(GedsError) -> FileDescriptor in try self.createPartial(blob, allocated: allocated) }
            do throws(GedsError) {
                // Stripes on several threads at once (more writes in flight than one thread's pwrite calls), each
                // thread checksumming the chunks it writes.
                let crc = try await striped(size: source.count) { start, end throws(GedsError) in
                    try self.writeMemory(memory.buffer, start: start, end: end, to: fd, blob: blob)
                }
                try await onPool { () throws(GedsError) in try self.truncatePartial(fd, blob: blob, size: size) }
                outcome = .success((fd, crc))
            } catch {
                discardPartial(fd, blob: blob)
                throw error
            }
        } catch {
            outcome = .failure(error)
        }
        return try await finish(blob, size: size, allocated: allocated, descriptor: outcome.map(\.0),
                                checksum: (try? outcome.get().1) ?? 0)
    }

    /// Stores `length` bytes of an open file from `offset` (read with `pread`) as `blob`.
    @discardableResult
    public func write(_ blob: BlobID, fromDescriptor source: FileDescriptor, offset: UInt64 = 0,
                      length: UInt64) async throws(GedsError) -> Tier1Object {
        let allocated = try reserve(blob, size: length)
        let outcome: Result<(FileDescriptor, UInt32), GedsError>
        do {
            outcome = .success(try await onPool { () throws(GedsError) -> (FileDescriptor, UInt32) in
                var crc: UInt32 = 0
                let fd = try self.writeFile(blob, size: length, allocated: allocated) { fd, store throws(GedsError) in
                    crc = try store.copyDescriptor(source, offset: offset, length: length, to: fd, blob: blob)
                }
                return (fd, crc)
            })
        } catch {
            outcome = .failure(error)
        }
        return try await finish(blob, size: length, allocated: allocated, descriptor: outcome.map(\.0),
                                checksum: (try? outcome.get().1) ?? 0)
    }

    // MARK: Reading

    /// Reads the whole object into `destination` (at least its size) and checks its size and checksum (and
    /// `expectedChecksum`, when given, for a checksum kept elsewhere). Returns its size.
    public func read(_ blob: BlobID, into destination: UnsafeMutableRawBufferPointer,
                     expectedChecksum: UInt32? = nil) async throws(GedsError) -> Int {
        let object = try stored(blob)
        guard UInt64(destination.count) >= object.size else {
            throw GedsError(.invalidArgument, "tier-1 object \(blob.fileName) has \(object.size) bytes, more than the \(destination.count)-byte buffer")
        }
        let memory = SendableMutableMemory(destination)
        let size = Int(object.size)
        let crc = try await striped(size: size) { start, end throws(GedsError) in
            try self.readFile(object) { fd throws(GedsError) in
                try self.readInto(memory.buffer, from: fd, object: object, start: start, end: end)
            }
        }
        try verify(object, crc: crc, expected: expectedChecksum)
        return size
    }

    /// Reads the whole object into an open file at `offset` (with `pwrite`), checking size and checksum as `read`
    /// does; the bytes written before a failed check are the caller's to discard.
    public func read(_ blob: BlobID, toDescriptor target: FileDescriptor, offset: UInt64 = 0,
                     expectedChecksum: UInt32? = nil) async throws(GedsError) -> UInt64 {
        let object = try stored(blob)
        let crc = try await onPool { () throws(GedsError) -> UInt32 in
            try self.readFile(object) { fd throws(GedsError) in
                try self.copyOut(from: fd, object: object, to: target, at: offset)
            }
        }
        try verify(object, crc: crc, expected: expectedChecksum)
        return object.size
    }

    /// Reads the whole file and checks it against its recorded size and checksum (a `checksumMismatch` error when
    /// it is corrupt); returns the checksum, for comparing with one kept elsewhere.
    public func verifiedChecksum(of blob: BlobID) async throws(GedsError) -> UInt32 {
        let object = try stored(blob)
        // Striped as reads are: a restarted node reads every file it offers back, and waits for it.
        let crc = try await striped(size: Int(object.size)) { start, end throws(GedsError) in
            try self.readFile(object) { fd throws(GedsError) in
                try self.copyOut(from: fd, object: object, start: UInt64(start), end: UInt64(end), to: nil, at: 0)
            }
        }
        try verify(object, crc: crc, expected: nil)
        return crc
    }

    /// Reads the bytes `range` of the object (clipped to its size) into `destination`. A part of an object cannot
    /// be checked against the whole object's checksum: only the file's size is checked.
    public func read(_ blob: BlobID, range: Range<UInt64>, into destination: UnsafeMutableRawBufferPointer) async throws(GedsError) -> Int {
        let object = try stored(blob)
        let upper = min(range.upperBound, object.size)
        guard range.lowerBound < upper else { return 0 }
        let wanted = upper - range.lowerBound
        guard UInt64(destination.count) >= wanted else {
            throw GedsError(.invalidArgument, "\(wanted) bytes of tier-1 object \(blob.fileName) do not fit in a \(destination.count)-byte buffer")
        }
        let memory = SendableMutableMemory(destination)
        let start = range.lowerBound
        return try await onPool { () throws(GedsError) -> Int in
            try self.readFile(object) { fd throws(GedsError) in
                try self.readRange(from: fd, object: object, start: start, count: Int(wanted), into: memory.buffer)
            }
            return Int(wanted)
        }
    }

    // MARK: Removing

    /// Deletes the object and gives its room back; false when there was none.
    @discardableResult
    public func remove(_ blob: BlobID) async throws(GedsError) -> Bool {
        let removed = state.withLock { state -> Bool in
            guard case .stored(let object) = state.objects[blob] else { return false }
            state.objects[blob] = nil
            state.reserved -= roundUp(object.size)
            return true
        }
        guard removed else { return false }
        let path = path(of: blob)
        try await onPool { () throws(GedsError) in
            if unlink(path) != 0 && errno != ENOENT { throw GedsError.io("cannot delete \(path) from tier 1", errno: errno) }
        }
        return true
    }

    // MARK: Checks and scheduling

    private func stored(_ blob: BlobID) throws(GedsError) -> Tier1Object {
        guard let object = object(blob) else { throw GedsError(.noSuchBlob, "blob \(blob.fileName) is not in tier 1 (\(directory))") }
        return object
    }

    private func verify(_ object: Tier1Object, crc: UInt32, expected: UInt32?) throws(GedsError) {
        for wanted in [object.checksum] + (expected.map { [$0] } ?? []) where crc != wanted {
            throw GedsError(.checksumMismatch,
                            "checksum mismatch: tier-1 file \(path(of: object.blob)) is corrupt: CRC-32C \(hex32(crc)), expected \(hex32(wanted))")
        }
    }

    func onPool<T: Sendable>(_ body: @escaping @Sendable () throws(GedsError) -> T) async throws(GedsError) -> T {
        do {
            return try await pool.runIfActive { try body() }
        } catch let error as GedsError {
            throw error
        } catch {
            throw GedsError(.io, "tier 1 in \(directory) is shut down or the call was cancelled (\(error))")
        }
    }


    /// Runs `body` on the pool for each part `start..<end` of an object of `size` bytes, at most `threads` parts at
    /// once, and combines the parts' CRC-32Cs into the object's. Objects of at least two stripes are cut into
    /// stripes (each starts at a multiple of the stripe size: whole blocks); smaller ones are one part.
    ///
    /// The parts' results travel as plain `(part, CRC)` pairs in a throwing group: a group of
    /// `(Int, Result<UInt32, GedsError>)` handed back garbage part numbers in release builds (Swift 6.3.1).
    private func striped(size: Int, _ body: @escaping @Sendable (_ start: Int, _ end: Int) throws(GedsError) -> UInt32)
        async throws(GedsError) -> UInt32 {
        let partSize = size >= 2 * stripeSize && threads > 1 ? stripeSize : max(size, 1)
        let parts = max(1, (size + partSize - 1) / partSize)
        let crcs: [UInt32]
        do {
            crcs = try await withThrowingTaskGroup(of: (Int, UInt32).self) { group -> [UInt32] in
                var results = [UInt32](repeating: 0, count: parts)
                for part in 0..<parts {
                    // At most `threads` parts in flight: past that, one must end before the next starts.
                    if part >= threads, let (done, crc) = try await group.next() { results[done] = crc }
                    let start = part * partSize
                    let end = min(size, start + partSize)
                    group.addTask {
                        (part, try await self.onPool { () throws(GedsError) -> UInt32 in try body(start, end) })
                    }
                }
                while let (done, crc) = try await group.next() { results[done] = crc }
                return results
            }
        } catch {
            // The first part to fail; the group waited for the others, so no part still uses the memory or file.
            throw GedsError.wrapping(error)
        }
        var crc: UInt32 = 0
        for (part, partCRC) in crcs.enumerated() {
            let length = UInt64(min(size, (part + 1) * partSize) - part * partSize)
            crc = part == 0 ? partCRC : CRC32C.combine(crc, partCRC, secondLength: length)
        }
        return crc
    }

}

/// The caller's memory, carried to a pool thread. `@unchecked Sendable`: every call that hands it over awaits
/// every pool job it started (all the stripes, even after one failed) before returning, so the memory outlives every access.
private struct SendableMemory: @unchecked Sendable {
    let buffer: UnsafeRawBufferPointer
    init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }
}

/// As `SendableMemory`, writable.
private struct SendableMutableMemory: @unchecked Sendable {
    let buffer: UnsafeMutableRawBufferPointer
    init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }
}

private func makeDirectories(_ path: String) throws(GedsError) {
    var current = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        current += "/" + component
        if mkdir(current, 0o755) != 0 && errno != EEXIST {
            throw GedsError.io("cannot create tier 1 folder \(path)", errno: errno)
        }
    }
    var status = stat()
    guard stat(path, &status) == 0, status.st_mode & S_IFMT == S_IFDIR else {
        throw GedsError(.invalidArgument, "tier 1 folder \(path) is not a folder")
    }
}
