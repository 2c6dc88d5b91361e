import GedsCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Tier 0: one file per blob in a memory folder (tmpfs), named by blob id.
///
/// No file descriptor or mapping is kept for a blob beyond its use, so the number of objects is bounded by
/// memory, not by the process's file or mapping limits.
public final class Tier0Store: Sendable {
    public let directory: String
    private let sealed = Mutex(Sealed())

    /// Sealed blobs and their sizes, with the sum kept alongside: capacity checks read it on every admission.
    private struct Sealed {
        var sizes: [BlobID: UInt64] = [:]
        var bytes: UInt64 = 0

        mutating func set(_ blob: BlobID, _ size: UInt64?) {
            if let old = sizes[blob] { bytes -= old }
            sizes[blob] = size
            if let size { bytes += size }
        }
    }

    /// Opens (and creates) the folder. Blob files left there by an earlier process are removed: their
    /// locations were withdrawn at the MDS when that process's lease ended, so nobody can reach them.
    public init(directory: String) throws(GedsError) {
        self.directory = directory
        try Tier0Store.makeDirectories(directory)
        if let dir = opendir(directory) {
            defer { closedir(dir) }
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if BlobID(fileName: name) != nil || name.hasSuffix(".partial") { unlink(directory + "/" + name) }
            }
        }
    }

    public func path(of blob: BlobID) -> String { directory + "/" + blob.fileName }

    /// Blobs sealed here and their sizes.
    public var inventory: [BlobID: UInt64] { sealed.withLock { $0.sizes } }
    public var usage: (blobs: UInt64, bytes: UInt64) {
        sealed.withLock { (UInt64($0.sizes.count), $0.bytes) }
    }

    public func contains(_ blob: BlobID) -> Bool { sealed.withLock { $0.sizes[blob] != nil } }
    public func size(of blob: BlobID) -> UInt64? { sealed.withLock { $0.sizes[blob] } }

    /// A new, empty, writable blob.
    public func create(_ blob: BlobID) throws(GedsError) -> WritableBlob {
        let fd = open(path(of: blob), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw GedsError.io("cannot create \(path(of: blob)) in tier 0", errno: errno) }
        return WritableBlob(store: self, blob: blob, descriptor: fd)
    }

    /// A writable mapping of exactly `size` bytes, reserved up front so that a full folder is an error here
    /// and not a SIGBUS later; used to receive a copy from a peer straight into its final place.
    /// The bytes land in a file of their own, renamed into place at seal, so concurrent fetches of the
    /// same blob never truncate each other's mapping.
    public func receive(_ blob: BlobID, size: UInt64) throws(GedsError) -> ReceivingBlob {
        guard size <= UInt64(Int.max) else { throw GedsError(.invalidArgument, "object size \(size) is too large") }
        let path = path(of: blob) + ".\(UInt32.random(in: 0...UInt32.max)).partial"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw GedsError.io("cannot create \(path) in tier 0", errno: errno) }
        defer { close(fd) }
        if size > 0 {
            let result = posix_fallocate(fd, 0, off_t(size))
            if result != 0 {
                unlink(path)
                throw GedsError.io("cannot reserve \(size) bytes for a copy in tier 0 folder \(directory)", errno: result)
            }
        }
        do {
            return ReceivingBlob(store: self, blob: blob, partialPath: path,
                                 mapping: try MappedBytes(descriptor: fd, size: Int(size), writable: true))
        } catch {
            unlink(path)
            throw error
        }
    }

    /// Takes a sealed file from another tier-0 folder on this host without copying (a hard link), falling
    /// back to nothing when the folders are on different file systems.
    public func adopt(_ blob: BlobID, linkingFrom source: String) -> Bool {
        guard link(source, path(of: blob)) == 0 else { return false }
        var status = stat()
        guard stat(path(of: blob), &status) == 0 else { return false }
        markSealed(blob, size: UInt64(status.st_size))
        return true
    }

    /// A read-only, zero-copy view of a sealed blob.
    public func map(_ blob: BlobID) throws(GedsError) -> MappedBytes {
        try Tier0Store.map(path: path(of: blob))
    }

    /// Maps any sealed tier-0 file, also another node's on the same host.
    public static func map(path: String) throws(GedsError) -> MappedBytes {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw GedsError(.noSuchBlob, "copy \(path) is gone") }
            throw GedsError.io("cannot open \(path)", errno: code)
        }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw GedsError.io("cannot stat \(path)", errno: errno) }
        return try MappedBytes(descriptor: fd, size: Int(status.st_size), writable: false)
    }

    /// Opens a sealed blob for sending (the caller closes the descriptor).
    public func openForReading(_ blob: BlobID) throws(GedsError) -> (descriptor: Int32, size: UInt64) {
        guard let size = size(of: blob) else { throw GedsError(.noSuchBlob, "blob \(blob.fileName) is not held here") }
        let fd = open(path(of: blob), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw GedsError(.noSuchBlob, "blob \(blob.fileName) is not held here") }
        return (fd, size)
    }

    public func remove(_ blob: BlobID) {
        sealed.withLock { $0.set(blob, nil) }
        unlink(path(of: blob))
    }

    func markSealed(_ blob: BlobID, size: UInt64) {
        fchmodat(AT_FDCWD, path(of: blob), 0o444, 0)
        sealed.withLock { $0.set(blob, size) }
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
        var descriptor: Int32
        var size: UInt64
        var sealed = false
    }

    init(store: Tier0Store, blob: BlobID, descriptor: Int32) {
        self.store = store
        self.blob = blob
        state = Mutex(State(descriptor: descriptor, size: 0))
    }

    /// The writable end of a blob file that another process's tier 0 handed over (its descriptor, owned from
    /// now on): writes land in that file, and `seal` only closes it (the owner publishes it).
    public init(handedOver descriptor: Int32, blob: BlobID) {
        store = nil
        self.blob = blob
        state = Mutex(State(descriptor: descriptor, size: 0))
    }

    deinit {
        state.withLock { state in
            if state.descriptor >= 0 { close(state.descriptor) }
            if !state.sealed, let store { unlink(store.path(of: blob)) }
        }
    }

    public var size: UInt64 { state.withLock { $0.size } }
    public var path: String { store?.path(of: blob) ?? "" }
    private var folder: String { store?.directory ?? "the gedsd's tier 0" }

    /// Calls `body` with the open descriptor (-1 once sealed), e.g. to hand it to an attached process.
    public func withDescriptor<Result>(_ body: (Int32) -> Result) -> Result {
        state.withLock { body($0.descriptor) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(GedsError) {
        try WritableBlob.checkRange(offset, UInt64(bytes.count))
        try state.withLock { (state) throws(GedsError) in
            guard !state.sealed else { throw GedsError(.objectSealed, "object is sealed; it can no longer be written") }
            var done = 0
            while done < bytes.count {
                let written = retryingOnInterrupt { pwrite(state.descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done)) }
                if written < 0 {
                    let code = errno
                    // Give back what a partial write allocated beyond the old end.
                    _ = ftruncate(state.descriptor, off_t(state.size))
                    throw GedsError.io("cannot write to tier 0 folder \(folder)", errno: code)
                }
                done += written
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
            let wanted = min(buffer.count, Int(state.size - offset))
            var done = 0
            while done < wanted {
                let got = retryingOnInterrupt { pread(state.descriptor, buffer.baseAddress! + done, wanted - done, off_t(offset) + off_t(done)) }
                if got < 0 {
                    throw GedsError.io("cannot read tier 0 file", errno: errno)
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
            guard !state.sealed else { throw GedsError(.objectSealed, "object is sealed; it can no longer be truncated") }
            guard ftruncate(state.descriptor, off_t(size)) == 0 else {
                throw GedsError.io("cannot truncate tier 0 file", errno: errno)
            }
            state.size = size
        }
    }

    /// Makes the file immutable and closes it; returns its size.
    public func seal() throws(GedsError) -> UInt64 {
        let size = try state.withLock { (state) throws(GedsError) -> UInt64 in
            guard !state.sealed else { throw GedsError(.objectSealed, "object is already sealed") }
            state.sealed = true
            close(state.descriptor)
            state.descriptor = -1
            return state.size
        }
        store?.markSealed(blob, size: size)
        return size
    }
}

/// A copy arriving from a peer: bytes are written into its mapping at their offsets, then it is sealed.
public final class ReceivingBlob: Sendable {
    public let blob: BlobID
    public let mapping: MappedBytes
    private let store: Tier0Store
    private let partialPath: String
    private let finished = Mutex(false)

    init(store: Tier0Store, blob: BlobID, partialPath: String, mapping: MappedBytes) {
        self.store = store
        self.blob = blob
        self.partialPath = partialPath
        self.mapping = mapping
    }

    deinit {
        if !finished.withLock({ $0 }) { unlink(partialPath) }
    }

    /// Moves the complete copy into place (atomically replacing a copy another fetch finished first).
    public func seal() throws(GedsError) {
        guard rename(partialPath, store.path(of: blob)) == 0 else {
            throw GedsError.io("cannot move a received copy into place in \(store.directory)", errno: errno)
        }
        finished.withLock { $0 = true }
        store.markSealed(blob, size: UInt64(mapping.count))
    }
}

/// A mapping of a file, unmapped when the last reference goes. Views handed out keep it alive, so a view
/// stays valid even if the blob is deleted meanwhile (the memory file system frees the pages after unmap).
// @unchecked: the pointer is set once at init and unmapped only in deinit; concurrent access is to the
// mapped bytes, whose ownership rules (read-only once sealed; disjoint ranges while receiving) callers keep.
public final class MappedBytes: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer?
    public let count: Int

    /// Maps `size` bytes of the open file `descriptor` (which may be closed afterwards).
    public init(descriptor: Int32, size: Int, writable: Bool) throws(GedsError) {
        count = size
        guard size > 0 else {
            base = nil
            return
        }
        let protection = writable ? (PROT_READ | PROT_WRITE) : PROT_READ
        // A copy being received is written whole: map its (already reserved) pages up front rather than
        // take one fault per page while the bytes arrive.
        let flags = writable ? (MAP_SHARED | MAP_POPULATE) : MAP_SHARED
        let address = mmap(nil, size, protection, flags, descriptor, 0)
        guard let address, address != MAP_FAILED else { throw GedsError.io("cannot map tier 0 file", errno: errno) }
        base = address
    }

    deinit {
        if let base { munmap(base, count) }
    }

    /// The mapped bytes. Valid only while this object is alive: use `withBytes`, or keep a reference.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

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
