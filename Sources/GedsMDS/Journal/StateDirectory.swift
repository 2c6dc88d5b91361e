#if canImport(Glibc)
import Glibc
#endif
import GedsCore
import NIOCore

/// The files of `geds-mds --state DIR`: `snapshot` (the namespace as of the start of one journal generation),
/// `journal.N` (every change after it, a file per generation: each MDS run and each compaction starts the next
/// one), `lock` (held while an MDS uses the directory).
struct StateDirectory {
    let path: String
    /// The descriptor holding the directory's lock, kept open while the MDS runs.
    let lock: Int32

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
        let fd = open(path + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw GedsError.io("opening \(path)/lock", errno: errno) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
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

    /// Creates journal `generation` with its header, durably (the file and its directory entry).
    func createJournal(_ generation: UInt64, epoch: UInt32) throws(GedsError) -> Int32 {
        let path = journalPath(generation)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw GedsError.io("creating \(path)", errno: errno) }
        var header = ByteBuffer()
        JournalFormat.write(JournalFormat.Header(kind: .journal, epoch: epoch, generation: generation, revision: 0), into: &header)
        do {
            try StateDirectory.writeAll(fd, header)
            try StateDirectory.sync(fd, path)
            try syncDirectory()
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// Writes the snapshot beside the old one and renames it into place, then removes the journals it includes.
    func replaceSnapshot(header: JournalFormat.Header, records: (inout ByteBuffer) -> Void) throws(GedsError) {
        let temporary = snapshotPath + ".new"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw GedsError.io("creating \(temporary)", errno: errno) }
        do {
            var buffer = ByteBuffer()
            JournalFormat.write(header, into: &buffer)
            records(&buffer)
            try StateDirectory.writeAll(fd, buffer)
            try StateDirectory.sync(fd, temporary)
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, snapshotPath) == 0 else { throw GedsError.io("renaming \(temporary)", errno: errno) }
        try syncDirectory()
        for generation in try journalGenerations() where generation < header.generation { unlink(journalPath(generation)) }
    }

    func syncDirectory() throws(GedsError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw GedsError.io("opening \(path)", errno: errno) }
        defer { close(fd) }
        try StateDirectory.sync(fd, path)
    }

    static func sync(_ fd: Int32, _ path: String) throws(GedsError) {
        guard fdatasync(fd) == 0 else { throw GedsError.io("syncing \(path)", errno: errno) }
    }

    static func writeAll(_ fd: Int32, _ buffer: ByteBuffer) throws(GedsError) {
        let failure: Int32? = buffer.withUnsafeReadableBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = retryingOnInterrupt { Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
                if written < 0 { return errno }
                offset += written
            }
            return nil
        }
        if let failure { throw GedsError.io("writing the MDS journal", errno: failure) }
    }

    /// The whole file; nil when it does not exist.
    static func readFile(_ path: String) throws(GedsError) -> ByteBuffer? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw GedsError.io("opening \(path)", errno: errno)
        }
        defer { close(fd) }
        var status = stat()
        var buffer = ByteBuffer()
        // Sized once: a snapshot of millions of keys is hundreds of megabytes, not to be copied as it grows.
        if fstat(fd, &status) == 0 { buffer.reserveCapacity(Int(status.st_size) + 1) }
        while true {
            buffer.reserveCapacity(minimumWritableBytes: 1)
            let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 1) { bytes in
                max(0, retryingOnInterrupt { Glibc.read(fd, bytes.baseAddress!, bytes.count) })
            }
            if count == 0 { return buffer }
        }
    }
}
