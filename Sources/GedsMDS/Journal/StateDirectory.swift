#if canImport(Glibc)
import Glibc
#endif
import GedsCore
import NIOCore
import SystemPackage

/// The files of `geds-mds --state DIR`: `snapshot` (the namespace as of the start of one journal generation),
/// `journal.N` (every change after it, a file per generation: each MDS run and each compaction starts the next
/// one), `lock` (held while an MDS uses the directory).
struct StateDirectory {
    let path: String
    /// The descriptor holding the directory's lock, kept open while the MDS runs.
    let lock: SystemPackage.FileDescriptor

    /// What a recovery finds: the snapshot's bytes, then each journal's, oldest first (records are decoded as they
    /// are replayed: `JournalFormat.forEachRecord`).
    struct Contents {
        var snapshot: (header: JournalFormat.Header, bytes: ByteBuffer)?
        var journals: [(generation: UInt64, bytes: ByteBuffer)] = []
        /// Journals cut short before their header was whole (the MDS died creating one).
        var droppedBytes = 0
        /// The epoch of the newest file (0 when there is none): the next run takes the one after it.
        var lastEpoch: UInt32 = 0
        var lastGeneration: UInt64 = 0
    }

    /// Creates the directory when it does not exist and takes its lock (one MDS per directory).
    init(path: String) throws(GedsError) {
        if mkdir(path, 0o755) != 0, errno != EEXIST { throw GedsError.io("creating state directory \(path)", errno: errno) }
        let fd = try StateDirectory.open(path + "/lock", .readWrite, [.create], failure: "opening \(path)/lock")
        // swift-system has no flock.
        guard flock(fd.rawValue, LOCK_EX | LOCK_NB) == 0 else {
            try? fd.close()
            throw GedsError(.invalidArgument, "state directory \(path) is in use by another geds-mds")
        }
        self.path = path
        lock = fd
    }

    func journalPath(_ generation: UInt64) -> String { "\(path)/journal.\(generation)" }
    var snapshotPath: String { path + "/snapshot" }

    /// The journal generations present, oldest first.
    func journalGenerations() throws(GedsError) -> [UInt64] {
        guard let directory = opendir(path) else { throw GedsError.io("listing \(path)", errno: errno) }
        defer { closedir(directory) }
        var generations: [UInt64] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix("journal."), let generation = UInt64(name.dropFirst("journal.".count)) { generations.append(generation) }
        }
        return generations.sorted()
    }

    /// Reads the snapshot and the journals after it, checking their headers.
    func read() throws(GedsError) -> Contents {
        var contents = Contents()
        var firstJournal: UInt64 = 0
        if let bytes = try StateDirectory.readFile(snapshotPath) {
            let header: JournalFormat.Header?
            do { header = try JournalFormat.header(of: bytes) } catch { throw GedsError(error.code, "\(snapshotPath): \(error.message)") }
            guard let header, header.kind == .snapshot else { throw GedsError(.protocolViolation, "\(snapshotPath) is not a snapshot") }
            contents.snapshot = (header, bytes)
            contents.lastEpoch = header.epoch
            firstJournal = header.generation
            contents.lastGeneration = header.generation
        }
        for generation in try journalGenerations() {
            guard generation >= firstJournal else {
                unlink(journalPath(generation))  // in the snapshot already; a compaction was cut short before removing it
                continue
            }
            guard let bytes = try StateDirectory.readFile(journalPath(generation)) else { continue }
            let header: JournalFormat.Header?
            do { header = try JournalFormat.header(of: bytes) } catch { throw GedsError(error.code, "\(journalPath(generation)): \(error.message)") }
            contents.lastGeneration = max(contents.lastGeneration, generation)
            guard let header else {
                contents.droppedBytes += bytes.readableBytes
                continue
            }
            contents.journals.append((generation, bytes))
            contents.lastEpoch = header.epoch
        }
        return contents
    }

    /// Writes the snapshot beside the old one and renames it into place, then removes the journals it includes.
    func replaceSnapshot(header: JournalFormat.Header, records: (inout ByteBuffer) -> Void) throws(GedsError) {
        let temporary = snapshotPath + ".new"
        let fd = try StateDirectory.open(temporary, .writeOnly, [.create, .truncate], failure: "creating \(temporary)")
        do {
            var buffer = ByteBuffer()
            JournalFormat.write(header, into: &buffer)
            records(&buffer)
            try StateDirectory.writeAll(fd, buffer)
            try StateDirectory.sync(fd, temporary)
        } catch {
            try? fd.close()
            unlink(temporary)
            throw error
        }
        try? fd.close()
        guard rename(temporary, snapshotPath) == 0 else { throw GedsError.io("renaming \(temporary)", errno: errno) }
        try syncDirectory()
        for generation in try journalGenerations() where generation < header.generation { unlink(journalPath(generation)) }
    }

    func syncDirectory() throws(GedsError) {
        let fd = try StateDirectory.open(path, .readOnly, [.directory], failure: "opening \(path)")
        defer { try? fd.close() }
        try StateDirectory.sync(fd, path)
    }

    /// Opens `path` close-on-exec (created with mode 0644); a failure is `GedsError.io(failure, errno)`.
    static func open(_ path: String, _ mode: SystemPackage.FileDescriptor.AccessMode, _ options: SystemPackage.FileDescriptor.OpenOptions,
                     failure: @autoclosure () -> String) throws(GedsError) -> SystemPackage.FileDescriptor {
        do {
            return try SystemPackage.FileDescriptor.open(FilePath(path), mode, options: options.union(.closeOnExec),
                                           permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch {
            throw GedsError.io(failure(), error)
        }
    }

    static func sync(_ fd: SystemPackage.FileDescriptor, _ path: String) throws(GedsError) {
        // swift-system has no fdatasync.
        guard fdatasync(fd.rawValue) == 0 else { throw GedsError.io("syncing \(path)", errno: errno) }
    }

    static func writeAll(_ fd: SystemPackage.FileDescriptor, _ buffer: ByteBuffer) throws(GedsError) {
        do {
            try buffer.withUnsafeReadableBytes { bytes in _ = try fd.writeAll(bytes) }
        } catch {
            throw GedsError.io("writing the MDS journal", error)
        }
    }

    /// The whole file; nil when it does not exist.
    static func readFile(_ path: String) throws(GedsError) -> ByteBuffer? {
        let fd: SystemPackage.FileDescriptor
        do {
            fd = try SystemPackage.FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec)
        } catch let error as Errno where error == .noSuchFileOrDirectory {
            return nil
        } catch {
            throw GedsError.io("opening \(path)", error)
        }
        defer { try? fd.close() }
        var buffer = ByteBuffer()
        // Sized once: a snapshot of millions of keys is hundreds of megabytes, not to be copied as it grows.
        if let status = try? fd.stat() { buffer.reserveCapacity(Int(status.size) + 1) }
        while true {
            buffer.reserveCapacity(minimumWritableBytes: 1)
            let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 1) { bytes in (try? fd.read(into: bytes)) ?? 0 }
            if count == 0 { return buffer }
        }
    }
}
