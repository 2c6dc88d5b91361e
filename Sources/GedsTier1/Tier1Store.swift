import CLinux
import GedsCore
import NIOPosix
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How tier 1 uses `O_DIRECT`.
public enum Tier1DirectIO: Sendable, Equatable {
    /// Direct I/O where the file system takes it; buffered I/O, with one log line, where it refuses.
    case auto
    /// Direct I/O or nothing: a file system that refuses it makes `Tier1Store.init` fail.
    case required
    /// Buffered I/O (through the page cache), said once in the log.
    case disabled
}

/// What a new store does with object files it finds in its folder (left by an earlier process).
public enum Tier1Leftovers: Sendable, Equatable {
    /// Deletes them (and any `.partial` file).
    case remove
    /// Keeps the complete ones whose size and checksum were recorded (in the `user.geds.tier1` extended
    /// attribute) and whose size still matches, listed in `Tier1Store.objects`; deletes the others.
    case adopt
}

public struct Tier1Configuration: Sendable {
    /// The folder holding the objects (created if missing); an NVMe mount in production.
    public var directory: String
    /// Bytes the objects may take, counted in whole blocks (a 1-byte object takes one block).
    public var capacity: UInt64
    public var directIO: Tier1DirectIO
    /// Threads of the store's own NIOThreadPool: the most I/O calls in flight at once.
    public var threads: Int
    /// Bytes per read or write call (rounded up to whole blocks); also the size of each pooled buffer.
    public var chunkSize: Int
    /// Aligned buffers kept for reuse (more are allocated, and freed after use, when all are busy).
    public var pooledBuffers: Int
    public var leftovers: Tier1Leftovers
    /// Whether each object's blocks are reserved (`fallocate`) before it is written: one extent where the file
    /// system can, and a full disk found before any byte is written.
    public var preallocate: Bool
    /// Objects of at least twice this size are read as parts of this size on several threads at once (more I/O
    /// in flight, and the checksum computed alongside).
    public var stripeSize: Int
    /// Where the store's few log lines go (default: standard error).
    public var log: @Sendable (String) -> Void
    /// Makes opening with O_DIRECT fail with EINVAL, as on a file system that refuses it (for tests of the fallback).
    @_spi(Testing) public var simulateDirectIORefusal = false

    public init(directory: String, capacity: UInt64, directIO: Tier1DirectIO = .auto, threads: Int = 4,
                chunkSize: Int = 4 << 20, pooledBuffers: Int = 8, leftovers: Tier1Leftovers = .remove,
                preallocate: Bool = true, stripeSize: Int = 16 << 20,
                log: @escaping @Sendable (String) -> Void = { line in printError("geds tier1: " + line) }) {
        self.directory = directory
        self.capacity = capacity
        self.directIO = directIO
        self.threads = max(1, threads)
        self.chunkSize = max(4096, chunkSize)
        self.pooledBuffers = max(0, pooledBuffers)
        self.leftovers = leftovers
        self.preallocate = preallocate
        self.stripeSize = stripeSize
        self.log = log
    }
}

/// An object held in tier 1: its true size (the file holds exactly that many bytes) and the CRC-32C of its bytes.
public struct Tier1Object: Sendable, Hashable {
    public var blob: BlobID
    public var size: UInt64
    public var checksum: UInt32

    public init(blob: BlobID, size: UInt64, checksum: UInt32) {
        self.blob = blob
        self.size = size
        self.checksum = checksum
    }
}

public struct Tier1Usage: Sendable, Equatable {
    public var objects: Int
    /// The objects' true sizes added up.
    public var bytes: UInt64
    /// Bytes counted against the capacity: every object and every write in progress, in whole blocks.
    public var reserved: UInt64
    public var capacity: UInt64

    public init(objects: Int, bytes: UInt64, reserved: UInt64, capacity: UInt64) {
        self.objects = objects
        self.bytes = bytes
        self.reserved = reserved
        self.capacity = capacity
    }
}

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
    private let chunkSize: Int
    private let stripeSize: Int
    private let threads: Int
    private let preallocate: Bool
    private let pool: NIOThreadPool
    private let buffers: AlignedBufferPool
    private let state = Mutex(State())
    private let direct: Atomic<Bool>
    private let simulateRefusal: Bool
    private let log: @Sendable (String) -> Void

    private struct State {
        var objects: [BlobID: Entry] = [:]
        var reserved: UInt64 = 0
        var stopped = false
    }

    private enum Entry {
        case writing(allocated: UInt64)
        case stored(Tier1Object)
    }

    static let attributeName = "user.geds.tier1"

    public init(_ configuration: Tier1Configuration) throws(GedsError) {
        directory = configuration.directory
        capacity = configuration.capacity
        log = configuration.log
        simulateRefusal = configuration.simulateDirectIORefusal
        try makeDirectories(directory)

        // Probe: can files here be opened with O_DIRECT, and with what alignment?
        let probePath = directory + "/.geds-tier1-probe-\(getpid())"
        var useDirect = configuration.directIO != .disabled
        var probeFlags = O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC
        if useDirect { probeFlags |= clinux_o_direct() }
        var fd = Tier1Store.open(probePath, probeFlags, simulateRefusal: simulateRefusal)
        var refusal: Int32 = 0
        if fd < 0 && useDirect && errno == EINVAL {
            refusal = errno
            useDirect = false
            fd = Tier1Store.open(probePath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, simulateRefusal: false)
        }
        guard fd >= 0 else { throw GedsError.io("cannot create files in tier 1 folder \(directory)", errno: errno) }
        var memoryAlignment: UInt32 = 0
        var offsetAlignment: UInt32 = 0
        let reported = clinux_dio_alignment(fd, &memoryAlignment, &offsetAlignment) == 0
        close(fd)
        unlink(probePath)
        if refusal != 0 {
            if configuration.directIO == .required {
                throw GedsError(.invalidArgument,
                                "tier 1 folder \(directory) refuses O_DIRECT (\(describeErrno(refusal))) and direct I/O is required")
            }
            configuration.log("\(directory) refuses O_DIRECT (\(describeErrno(refusal))): tier 1 uses buffered I/O there")
        } else if configuration.directIO == .disabled {
            configuration.log("O_DIRECT disabled by configuration: tier 1 uses buffered I/O in \(directory)")
        }
        direct = Atomic(useDirect)
        // Whole pages at least, which every device and file system accepts.
        let reportedAlignment = reported ? Int(max(memoryAlignment, offsetAlignment)) : 0
        blockSize = max(4096, reportedAlignment.nextPowerOfTwo)
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

    public func object(_ blob: BlobID) -> Tier1Object? {
        state.withLock { if case .stored(let object) = $0.objects[blob] { object } else { nil } }
    }

    public var objects: [Tier1Object] {
        state.withLock { $0.objects.values.compactMap { if case .stored(let object) = $0 { object } else { nil } } }
    }

    public var usage: Tier1Usage {
        state.withLock { state in
            var count = 0
            var bytes: UInt64 = 0
            for entry in state.objects.values {
                if case .stored(let object) = entry {
                    count += 1
                    bytes += object.size
                }
            }
            return Tier1Usage(objects: count, bytes: bytes, reserved: state.reserved, capacity: capacity)
        }
    }

    /// What an object of `size` bytes counts against the capacity.
    public func allocation(forSize size: UInt64) -> UInt64 { roundUp(size) }

    // MARK: Writing

    /// Stores `source` (the caller's memory, which must stay valid until the call returns) as `blob`. Memory
    /// aligned to `blockSize` (a tier-0 mapping, for one) is written from where it is; other memory goes through
    /// an aligned buffer.
    @discardableResult
    public func write(_ blob: BlobID, from source: UnsafeRawBufferPointer) async throws(GedsError) -> Tier1Object {
        let size = UInt64(source.count)
        let allocated = try reserve(blob, size: size)
        let memory = SendableMemory(source)
        let outcome: Result<(Int32, UInt32), GedsError>
        do throws(GedsError) {
            let fd = try await onPool { () throws(GedsError) -> Int32 in try self.createPartial(blob, allocated: allocated) }
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
    public func write(_ blob: BlobID, fromDescriptor source: Int32, offset: UInt64 = 0,
                      length: UInt64) async throws(GedsError) -> Tier1Object {
        let allocated = try reserve(blob, size: length)
        let outcome: Result<(Int32, UInt32), GedsError>
        do {
            outcome = .success(try await onPool { () throws(GedsError) -> (Int32, UInt32) in
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
    public func read(_ blob: BlobID, toDescriptor target: Int32, offset: UInt64 = 0,
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

    // MARK: Internals

    private func roundUp(_ size: UInt64) -> UInt64 {
        (size + UInt64(blockSize) - 1) / UInt64(blockSize) * UInt64(blockSize)
    }

    private func reserve(_ blob: BlobID, size: UInt64) throws(GedsError) -> UInt64 {
        let allocated = roundUp(size)
        let refusal: GedsError? = state.withLock { state in
            if state.stopped { return GedsError(.io, "tier 1 in \(directory) is shut down") }
            if state.objects[blob] != nil {
                return GedsError(.invalidArgument, "blob \(blob.fileName) is already in tier 1")
            }
            guard state.reserved + allocated <= capacity else {
                return GedsError(.outOfSpace,
                                 "tier 1 full: blob \(blob.fileName) needs \(allocated) bytes, \(state.reserved) of \(capacity) are in use in \(directory)")
            }
            state.reserved += allocated
            state.objects[blob] = .writing(allocated: allocated)
            return nil
        }
        if let refusal { throw refusal }
        return allocated
    }

    private func release(_ blob: BlobID, allocated: UInt64) {
        state.withLock { state in
            if case .writing = state.objects[blob] { state.objects[blob] = nil }
            state.reserved -= allocated
        }
    }

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

    private func onPool<T: Sendable>(_ body: @escaping @Sendable () throws(GedsError) -> T) async throws(GedsError) -> T {
        do {
            return try await pool.runIfActive { try body() }
        } catch let error as GedsError {
            throw error
        } catch {
            throw GedsError(.io, "tier 1 in \(directory) is shut down or the call was cancelled (\(error))")
        }
    }

    static func open(_ path: String, _ flags: Int32, simulateRefusal: Bool) -> Int32 {
        if simulateRefusal && flags & clinux_o_direct() != 0 {
            errno = EINVAL
            return -1
        }
        return Glibc.open(path, flags, 0o644)
    }

    /// Opens with O_DIRECT where the store uses it; falls back (once, with a log line) where the file system
    /// refuses it after all.
    private func openFile(_ path: String, _ flags: Int32) throws(GedsError) -> Int32 {
        if usesDirectIO {
            let fd = Tier1Store.open(path, flags | clinux_o_direct(), simulateRefusal: simulateRefusal)
            if fd >= 0 { return fd }
            guard errno == EINVAL else { throw GedsError.io("cannot open \(path) in tier 1", errno: errno) }
            if direct.exchange(false, ordering: .relaxed) {
                log("\(directory) refuses O_DIRECT (\(describeErrno(EINVAL))): tier 1 uses buffered I/O there")
            }
        }
        let fd = Tier1Store.open(path, flags, simulateRefusal: false)
        guard fd >= 0 else { throw GedsError.io("cannot open \(path) in tier 1", errno: errno) }
        return fd
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

    /// Creates the partial file and reserves its blocks; returns it open.
    private func createPartial(_ blob: BlobID, allocated: UInt64) throws(GedsError) -> Int32 {
        let partial = path(of: blob) + ".partial"
        let fd = try openFile(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC)
        if allocated > 0 && preallocate {
            if clinux_fallocate(fd, 0, 0, off_t(allocated)) != 0 && errno != EOPNOTSUPP && errno != ENOSYS {
                let error = GedsError.io("cannot reserve \(allocated) bytes for blob \(blob.fileName) in tier 1 folder \(directory)", errno: errno)
                discardPartial(fd, blob: blob)
                throw error
            }
        }
        return fd
    }

    /// Cuts the block padding of the last block off: the file then has the object's true size.
    private func truncatePartial(_ fd: Int32, blob: BlobID, size: UInt64) throws(GedsError) {
        if ftruncate(fd, off_t(size)) != 0 {
            throw GedsError.io("cannot truncate \(path(of: blob)).partial to \(size) bytes", errno: errno)
        }
    }

    private func discardPartial(_ fd: Int32, blob: BlobID) {
        close(fd)
        unlink(path(of: blob) + ".partial")
    }

    /// Creates the partial file, runs `fill`, truncates it to the true size; returns the open descriptor (`finish`
    /// records the checksum and moves the file into place). Removes the file on failure.
    private func writeFile(_ blob: BlobID, size: UInt64, allocated: UInt64,
                           fill: (Int32, Tier1Store) throws(GedsError) -> Void) throws(GedsError) -> Int32 {
        let fd = try createPartial(blob, allocated: allocated)
        do throws(GedsError) {
            try fill(fd, self)
            try truncatePartial(fd, blob: blob, size: size)
            return fd
        } catch {
            discardPartial(fd, blob: blob)
            throw error
        }
    }

    private func finish(_ blob: BlobID, size: UInt64, allocated: UInt64, descriptor: Result<Int32, GedsError>,
                        checksum: UInt32) async throws(GedsError) -> Tier1Object {
        let fd: Int32
        switch descriptor {
        case .success(let value): fd = value
        case .failure(let error):
            release(blob, allocated: allocated)
            throw error
        }
        let object = Tier1Object(blob: blob, size: size, checksum: checksum)
        let partial = path(of: blob) + ".partial"
        let final = path(of: blob)
        do {
            try await onPool { () throws(GedsError) in
                defer { close(fd) }
                // Best effort: without the attribute (a file system without user xattrs) the object works, but is
                // not adopted by a later store.
                let record = Array("\(size) \(hex32(checksum))".utf8)
                _ = clinux_fsetxattr(fd, Tier1Store.attributeName, record, record.count)
                guard rename(partial, final) == 0 else { throw GedsError.io("cannot rename \(partial)", errno: errno) }
            }
        } catch {
            unlink(partial)
            release(blob, allocated: allocated)
            throw error
        }
        state.withLock { $0.objects[blob] = .stored(object) }
        return object
    }

    /// Writes bytes `start..<end` of `source` (`start` a multiple of the block size) to the same place in the file,
    /// in chunks: from the memory itself where it is aligned, else through a buffer; a last partial block (at the
    /// object's end) through a zero-padded buffer. Returns their CRC-32C, computed chunk by chunk as they are written.
    private func writeMemory(_ source: UnsafeRawBufferPointer, start: Int, end: Int, to fd: Int32,
                             blob: BlobID) throws(GedsError) -> UInt32 {
        let size = end
        let wholeBlocks = size / blockSize * blockSize
        guard end > start, let base = source.baseAddress else { return 0 }
        let aligned = Int(bitPattern: base) % blockSize == 0
        var crc: UInt32 = 0
        var offset = start
        var buffer: UnsafeMutableRawPointer?
        defer { if let buffer { buffers.give(buffer) } }
        while offset < wholeBlocks {
            let count = min(chunkSize, wholeBlocks - offset)
            crc = CRC32C.update(crc, UnsafeRawBufferPointer(start: base + offset, count: count))
            if aligned {
                try pwriteAll(fd, UnsafeRawPointer(base + offset), count, offset: offset, blob: blob)
            } else {
                let bounce = buffer ?? buffers.take()
                buffer = bounce
                bounce.copyMemory(from: base + offset, byteCount: count)
                try pwriteAll(fd, UnsafeRawPointer(bounce), count, offset: offset, blob: blob)
            }
            offset += count
        }
        if size > max(wholeBlocks, start) {
            let bounce = buffer ?? buffers.take()
            buffer = bounce
            let tail = size - wholeBlocks
            crc = CRC32C.update(crc, UnsafeRawBufferPointer(start: base + wholeBlocks, count: tail))
            bounce.copyMemory(from: base + wholeBlocks, byteCount: tail)
            (bounce + tail).initializeMemory(as: UInt8.self, repeating: 0, count: blockSize - tail)
            try pwriteAll(fd, UnsafeRawPointer(bounce), blockSize, offset: wholeBlocks, blob: blob)
        }
        return crc
    }

    /// Copies `length` bytes of `source` from `offset` into the file, block-padded; returns their CRC-32C.
    private func copyDescriptor(_ source: Int32, offset: UInt64, length: UInt64, to fd: Int32,
                                blob: BlobID) throws(GedsError) -> UInt32 {
        let buffer = buffers.take()
        defer { buffers.give(buffer) }
        var crc: UInt32 = 0
        var done: UInt64 = 0
        while done < length {
            let count = Int(min(UInt64(chunkSize), length - done))
            var filled = 0
            while filled < count {
                let result = pread(source, buffer + filled, count - filled, off_t(offset + done) + off_t(filled))
                if result < 0 {
                    if errno == EINTR { continue }
                    throw GedsError.io("cannot read the source of blob \(blob.fileName)", errno: errno)
                }
                if result == 0 {
                    throw GedsError(.io, "the source of blob \(blob.fileName) ended after \(done + UInt64(filled)) of \(length) bytes")
                }
                filled += result
            }
            crc = CRC32C.update(crc, UnsafeRawBufferPointer(start: buffer, count: count))
            let padded = (count + blockSize - 1) / blockSize * blockSize
            if padded > count { (buffer + count).initializeMemory(as: UInt8.self, repeating: 0, count: padded - count) }
            try pwriteAll(fd, UnsafeRawPointer(buffer), padded, offset: Int(done), blob: blob)
            done += UInt64(count)
        }
        return crc
    }

    private func pwriteAll(_ fd: Int32, _ pointer: UnsafeRawPointer, _ count: Int, offset: Int, blob: BlobID) throws(GedsError) {
        var written = 0
        while written < count {
            let result = pwrite(fd, pointer + written, count - written, off_t(offset + written))
            if result < 0 {
                if errno == EINTR { continue }
                throw GedsError.io("cannot write blob \(blob.fileName) to tier 1 folder \(directory)", errno: errno)
            }
            written += result
        }
    }

    /// Opens the object's file, checks its size, and runs `body`.
    private func readFile<T>(_ object: Tier1Object, _ body: (Int32) throws(GedsError) -> T) throws(GedsError) -> T {
        let path = path(of: object.blob)
        let fd: Int32
        do {
            fd = try openFile(path, O_RDONLY | O_CLOEXEC)
        } catch {
            if errno == ENOENT { throw GedsError(.noSuchBlob, "blob \(object.blob.fileName) is not in tier 1 (\(directory))") }
            throw error
        }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw GedsError.io("cannot stat \(path)", errno: errno) }
        guard UInt64(status.st_size) == object.size else {
            throw GedsError(.checksumMismatch, "checksum mismatch: tier-1 file \(path) is corrupt: \(status.st_size) bytes, expected \(object.size)"
                + (UInt64(status.st_size) < object.size ? " (truncated)" : ""))
        }
        return try body(fd)
    }

    /// Reads whole blocks (a short count only at the end of the file); returns the bytes read.
    private func preadBlocks(_ fd: Int32, _ pointer: UnsafeMutableRawPointer, _ count: Int, offset: UInt64,
                             object: Tier1Object) throws(GedsError) -> Int {
        var done = 0
        while done < count {
            let result = pread(fd, pointer + done, count - done, off_t(offset) + off_t(done))
            if result < 0 {
                if errno == EINTR { continue }
                throw GedsError.io("cannot read tier-1 file \(path(of: object.blob))", errno: errno)
            }
            if result == 0 { break }
            done += result
        }
        return done
    }

    private func shortRead(_ object: Tier1Object, at offset: UInt64) -> GedsError {
        GedsError(.checksumMismatch, "checksum mismatch: tier-1 file \(path(of: object.blob)) is corrupt: it ends at byte \(offset), expected \(object.size) (truncated)")
    }

    /// Reads bytes `start..<end` of the object (`start` a multiple of the block size) into the same place of
    /// `destination`; returns their CRC-32C.
    private func readInto(_ destination: UnsafeMutableRawBufferPointer, from fd: Int32, object: Tier1Object,
                          start: Int, end: Int) throws(GedsError) -> UInt32 {
        let size = end
        guard end > start, let base = destination.baseAddress else { return 0 }
        let wholeBlocks = size / blockSize * blockSize
        let aligned = Int(bitPattern: base) % blockSize == 0
        var buffer: UnsafeMutableRawPointer?
        defer { if let buffer { buffers.give(buffer) } }
        var crc: UInt32 = 0
        var offset = start
        while offset < wholeBlocks {
            let count = min(chunkSize, wholeBlocks - offset)
            if aligned {
                guard try preadBlocks(fd, base + offset, count, offset: UInt64(offset), object: object) == count else {
                    throw shortRead(object, at: UInt64(offset))
                }
            } else {
                let bounce = buffer ?? buffers.take()
                buffer = bounce
                guard try preadBlocks(fd, bounce, count, offset: UInt64(offset), object: object) == count else {
                    throw shortRead(object, at: UInt64(offset))
                }
                (base + offset).copyMemory(from: bounce, byteCount: count)
            }
            crc = CRC32C.update(crc, UnsafeRawBufferPointer(start: base + offset, count: count))
            offset += count
        }
        if size > max(wholeBlocks, start) {
            let bounce = buffer ?? buffers.take()
            buffer = bounce
            let tail = size - wholeBlocks
            guard try preadBlocks(fd, bounce, blockSize, offset: UInt64(wholeBlocks), object: object) >= tail else {
                throw shortRead(object, at: UInt64(wholeBlocks))
            }
            (base + wholeBlocks).copyMemory(from: bounce, byteCount: tail)
            crc = CRC32C.update(crc, UnsafeRawBufferPointer(start: base + wholeBlocks, count: tail))
        }
        return crc
    }

    /// Reads bytes `start..<end` of the file (`start` a multiple of the block size; the whole file by default) in
    /// chunks, copying them into `target` (when given) at `targetOffset` plus their offset; returns their CRC-32C.
    private func copyOut(from fd: Int32, object: Tier1Object, start: UInt64 = 0, end: UInt64? = nil, to target: Int32?,
                         at targetOffset: UInt64) throws(GedsError) -> UInt32 {
        let end = end ?? object.size
        let buffer = buffers.take()
        defer { buffers.give(buffer) }
        var crc: UInt32 = 0
        var offset = start
        while offset < end {
            let want = Int(min(UInt64(chunkSize), roundUp(end - offset)))
            let expected = Int(min(UInt64(want), end - offset))
            guard try preadBlocks(fd, buffer, want, offset: offset, object: object) >= expected else {
                throw shortRead(object, at: offset)
            }
            crc = CRC32C.update(crc, UnsafeRawBufferPointer(start: buffer, count: expected))
            var written = 0
            while let target, written < expected {
                let result = pwrite(target, buffer + written, expected - written, off_t(targetOffset + offset) + off_t(written))
                if result < 0 {
                    if errno == EINTR { continue }
                    throw GedsError.io("cannot write blob \(object.blob.fileName) out of tier 1", errno: errno)
                }
                written += result
            }
            offset += UInt64(expected)
        }
        return crc
    }

    private func readRange(from fd: Int32, object: Tier1Object, start: UInt64, count: Int,
                           into destination: UnsafeMutableRawBufferPointer) throws(GedsError) {
        let buffer = buffers.take()
        defer { buffers.give(buffer) }
        var copied = 0
        while copied < count {
            let position = start + UInt64(copied)
            let blockStart = position / UInt64(blockSize) * UInt64(blockSize)
            let skip = Int(position - blockStart)
            let want = min(chunkSize, (skip + count - copied + blockSize - 1) / blockSize * blockSize)
            let got = try preadBlocks(fd, buffer, want, offset: blockStart, object: object)
            let useful = min(got - skip, count - copied)
            guard useful > 0 else { throw shortRead(object, at: blockStart + UInt64(got)) }
            (destination.baseAddress! + copied).copyMemory(from: buffer + skip, byteCount: useful)
            copied += useful
        }
    }

    /// Files found at start: removed, or adopted (see `Tier1Leftovers`).
    private func scanLeftovers(_ policy: Tier1Leftovers) {
        guard let dir = opendir(directory) else { return }
        var names: [String] = []
        while let entry = readdir(dir) {
            names.append(withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            })
        }
        closedir(dir)
        var adopted: [BlobID: Tier1Object] = [:]
        var removed = 0
        for name in names {
            let path = directory + "/" + name
            if name.hasSuffix(".partial"), BlobID(fileName: String(name.dropLast(8))) != nil {
                unlink(path)
                removed += 1
                continue
            }
            guard let blob = BlobID(fileName: name) else { continue }
            if policy == .adopt, let object = recordedObject(blob, path: path) {
                adopted[blob] = object
            } else {
                unlink(path)
                removed += 1
            }
        }
        if removed > 0 { log("removed \(removed) file(s) left in \(directory) by an earlier process") }
        guard !adopted.isEmpty else { return }
        state.withLock { state in
            for (blob, object) in adopted {
                state.objects[blob] = .stored(object)
                state.reserved += roundUp(object.size)
            }
        }
        let total = adopted.values.reduce(UInt64(0)) { $0 + $1.size }
        log("adopted \(adopted.count) object(s) (\(total) bytes) left in \(directory) by an earlier process")
    }

    private func recordedObject(_ blob: BlobID, path: String) -> Tier1Object? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var value = [UInt8](repeating: 0, count: 64)
        let length = clinux_fgetxattr(fd, Tier1Store.attributeName, &value, value.count)
        guard length > 0 else { return nil }
        let fields = String(decoding: value.prefix(length), as: UTF8.self).split(separator: " ")
        var status = stat()
        guard fields.count == 2, let size = UInt64(fields[0]), let checksum = UInt32(fields[1], radix: 16),
              fstat(fd, &status) == 0, UInt64(status.st_size) == size else { return nil }
        return Tier1Object(blob: blob, size: size, checksum: checksum)
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

/// Aligned buffers of one size for direct I/O (`posix_memalign`), reused. Kept as addresses so that the state
/// under the mutex is Sendable; a buffer is used by one pool thread at a time (between `take` and `give`).
final class AlignedBufferPool: Sendable {
    let size: Int
    let alignment: Int
    private let keep: Int
    private let free = Mutex<[UInt]>([])

    init(size: Int, alignment: Int, keep: Int) {
        self.size = size
        self.alignment = alignment
        self.keep = keep
    }

    func take() -> UnsafeMutableRawPointer {
        if let address = free.withLock({ $0.popLast() }), let pointer = UnsafeMutableRawPointer(bitPattern: address) {
            return pointer
        }
        var memory: UnsafeMutableRawPointer?
        let result = posix_memalign(&memory, alignment, size)
        precondition(result == 0 && memory != nil, "out of memory for a \(size)-byte tier-1 buffer")
        return memory!
    }

    func give(_ pointer: UnsafeMutableRawPointer) {
        let kept = free.withLock { list -> Bool in
            guard list.count < keep else { return false }
            list.append(UInt(bitPattern: pointer))
            return true
        }
        if !kept { Glibc.free(pointer) }
    }

    deinit {
        for address in free.withLock({ $0 }) { Glibc.free(UnsafeMutableRawPointer(bitPattern: address)) }
    }
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

extension Int {
    var nextPowerOfTwo: Int {
        guard self > 1 else { return 1 }
        return 1 << (Int.bitWidth - (self - 1).leadingZeroBitCount)
    }
}
