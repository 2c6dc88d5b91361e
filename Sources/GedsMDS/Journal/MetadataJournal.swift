#if canImport(Glibc)
import Glibc
#endif
import GedsCore
import Logging
import NIOCore
import NIOPosix
import Synchronization
import SystemPackage

/// When the journal's writes are made durable (as Redis's `appendfsync`).
public enum FsyncPolicy: String, Sendable, CaseIterable {
    /// Before a change is acknowledged (changes arriving together share one fsync: group commit).
    case always
    /// About once a second: a machine crash loses at most the last second; a killed MDS loses nothing written.
    case everysec
    /// When the kernel writes back: the last seconds are at risk on a machine crash.
    case never
}

/// The journal of a durable MDS: changes are appended to a buffer inside the store's critical section (in revision
/// order, no I/O there), and one writer at a time writes what has gathered. With `always` that is the journal's
/// thread, which fsyncs each batch and then wakes the requests waiting for it (group commit); otherwise it is a
/// request's own thread after the critical section (one buffered write, before its reply), and the journal's thread
/// fsyncs what was written once a second (`everysec`) without holding up the writers. Past `compactionBytes` the
/// writer starts the next journal file and a snapshot of the store as it was at that point is written in the
/// background; the journals it includes are then removed.
final class MetadataJournal: Sendable {
    let policy: FsyncPolicy
    let directory: StateDirectory
    let epoch: UInt32
    private let compactionBytes: UInt64
    private let logger: Logger
    /// Two threads: the writer's or the syncer's, and the snapshot's, so a compaction never holds up the journal.
    private let threads: NIOThreadPool
    private let state: Mutex<State>

    private struct State {
        /// Appended and not yet taken by the writer.
        var pending = ByteBuffer()
        /// Appended before the next generation was started: goes to the current file first.
        var beforeRotation: ByteBuffer?
        /// Positions are byte counts of everything appended in this run: appended, written to a file, synced.
        var appended: UInt64 = 0
        var written: UInt64 = 0
        var durable: UInt64 = 0
        var writing = false
        var syncing = false
        var generation: UInt64
        var file: SystemPackage.FileDescriptor
        /// Files of earlier generations (synced when they were left), closed by the next sync: one may be syncing.
        var retired: [SystemPackage.FileDescriptor] = []
        var bytesInGeneration: UInt64 = 0
        var compacting = false
        var failure: GedsError?
        var waiters: [(position: UInt64, then: @Sendable (GedsError?) -> Void)] = []
    }

    init(directory: StateDirectory, generation: UInt64, epoch: UInt32, policy: FsyncPolicy, compactionBytes: UInt64,
         logger: Logger) throws(GedsError) {
        self.directory = directory
        self.epoch = epoch
        self.policy = policy
        self.compactionBytes = compactionBytes
        self.logger = logger
        let file = try directory.createJournal(generation, epoch: epoch)
        state = Mutex(State(generation: generation, file: file))
        threads = NIOThreadPool(numberOfThreads: 2)
        threads.start()
    }

    /// Appends the changes (in the store's critical section, so in revision order); returns the position a
    /// request that made them waits for with `whenDurable`, and whether a compaction should start now.
    func append(_ records: [JournalFormat.Record]) -> (position: UInt64, compact: Bool) {
        let (position, startWriter, compact) = state.withLock { state in
            var bytes = 0
            for record in records { bytes += JournalFormat.append(record, to: &state.pending) }
            state.appended += UInt64(bytes)
            state.bytesInGeneration += UInt64(bytes)
            let startWriter = policy == .always && !state.writing
            if startWriter { state.writing = true }
            let compact = !state.compacting && state.beforeRotation == nil && state.bytesInGeneration >= compactionBytes
            return (state.appended, startWriter, compact)
        }
        if startWriter { threads.submit { _ in self.write() } }
        return (position, compact)
    }

    /// Writes what was appended on the caller's thread (after the store's critical section, before the reply, so a
    /// killed MDS loses no acknowledged change: one buffered write into the page cache, as Redis does), unless a
    /// writer is at it already (it then takes this too). Not for `always`, whose writer is the journal's thread.
    func writeAppended() {
        if claimWriter() { write() }
    }

    private func claimWriter() -> Bool {
        state.withLock { state in
            guard !state.writing, state.pending.readableBytes > 0 || state.beforeRotation != nil else { return false }
            state.writing = true
            return true
        }
    }

    /// The position of everything appended so far.
    var appendedPosition: UInt64 { state.withLock { $0.appended } }

    /// Calls `then` once everything up to `position` is on disk (on the journal's thread, or this one when it is
    /// already), with the error when the journal can no longer be written.
    func whenDurable(_ position: UInt64, then: @escaping @Sendable (GedsError?) -> Void) {
        let ready: GedsError?? = state.withLock { state in
            if let failure = state.failure { return .some(failure) }
            if state.durable >= position { return .some(nil) }
            state.waiters.append((position, then))
            return nil
        }
        if let ready { then(ready) }
    }

    /// For `everysec`: fsyncs what has been written, on the journal's thread (writers go on meanwhile).
    func syncSoon() {
        let start = state.withLock { state in
            guard !state.syncing, state.durable < state.written || !state.retired.isEmpty else { return false }
            state.syncing = true
            return true
        }
        guard start else { return }
        threads.submit { _ in
            let (file, position, retired, generation) = self.state.withLock { state in
                defer { state.retired = [] }
                return (state.file, state.written, state.retired, state.generation)
            }
            for old in retired { try? old.close() }
            do throws(GedsError) {
                try StateDirectory.sync(file, self.directory.journalPath(generation))
                self.finish(end: position, synced: true, failure: nil)
            } catch {
                self.logger.critical("the MDS journal cannot be synced: \(error.message); changes are no longer durable")
                self.finish(end: position, synced: false, failure: error)
            }
            self.state.withLock { $0.syncing = false }
        }
    }

    /// Starts the next journal generation and writes `snapshot` (the store as of this point: call in the store's
    /// critical section) in the background, then removes the journals it includes.
    func compact(_ snapshot: MetadataStore) {
        let (generation, startWriter) = state.withLock { state in
            state.compacting = true
            state.beforeRotation = state.pending
            state.pending = ByteBuffer()
            state.generation += 1
            state.bytesInGeneration = 0
            // With `always` the journal's thread moves to the next file; otherwise the next request's writer does.
            let startWriter = policy == .always && !state.writing
            if startWriter { state.writing = true }
            return (state.generation, startWriter)
        }
        if startWriter { threads.submit { _ in self.write() } }
        threads.submit { _ in
            let started = NIODeadline.now()
            do throws(GedsError) {
                try self.directory.replaceSnapshot(header: JournalFormat.Header(kind: .snapshot, epoch: self.epoch, generation: generation,
                                                                                revision: snapshot.events.revision)) { buffer in
                    snapshot.writeSnapshotRecords(into: &buffer)
                }
                self.logger.info("journal compacted into a snapshot of \(snapshot.objectCount) objects (revision \(snapshot.events.revision)) in \((NIODeadline.now() - started).nanoseconds / 1_000_000) ms")
            } catch {
                self.logger.error("could not write the MDS snapshot: \(error.message); the journal keeps every change meanwhile")
            }
            self.state.withLock { $0.compacting = false }
        }
    }

    private struct Work {
        var before: ByteBuffer?
        var bytes: ByteBuffer
        var end: UInt64
        var file: SystemPackage.FileDescriptor
        var generation: UInt64
    }

    /// The writer (it holds `writing`): takes what has gathered and writes it, moving to the next file first when a
    /// compaction started one, until nothing is left; with `always` each batch is synced and its waiters woken.
    private func write() {
        while true {
            let taken = state.withLock { state -> Work? in
                guard state.pending.readableBytes > 0 || state.beforeRotation != nil else {
                    state.writing = false
                    return nil
                }
                defer {
                    state.pending.clear()
                    state.beforeRotation = nil
                }
                return Work(before: state.beforeRotation, bytes: state.pending, end: state.appended, file: state.file,
                            generation: state.generation)
            }
            guard let work = taken else { return }
            do throws(GedsError) {
                var file = work.file
                if let before = work.before {
                    try StateDirectory.writeAll(file, before)
                    try StateDirectory.sync(file, directory.journalPath(work.generation - 1))
                    file = try directory.createJournal(work.generation, epoch: epoch)
                    state.withLock { state in
                        state.retired.append(work.file)
                        state.file = file
                    }
                }
                try StateDirectory.writeAll(file, work.bytes)
                if policy == .always { try StateDirectory.sync(file, directory.journalPath(work.generation)) }
                finish(end: work.end, synced: policy == .always, failure: nil)
            } catch {
                logger.critical("the MDS journal cannot be written: \(error.message); changes are no longer durable")
                state.withLock { $0.writing = false }
                finish(end: work.end, synced: false, failure: error)
                return
            }
        }
    }

    /// Records what reached the file (and the disk, when `synced`) and wakes the requests waiting for it (all of
    /// them, with the error, once the journal failed).
    private func finish(end: UInt64, synced: Bool, failure: GedsError?) {
        let (ready, error) = state.withLock { state in
            if let failure { state.failure = failure }
            state.written = max(state.written, end)
            if synced { state.durable = max(state.durable, end) }
            let durable = state.durable
            let failed = state.failure != nil
            let ready = state.waiters.filter { failed || $0.position <= durable }
            state.waiters.removeAll { failed || $0.position <= durable }
            return (ready, state.failure)
        }
        for waiter in ready { waiter.then(error) }
    }

    /// Writes and syncs what is pending, then closes the files (a clean stop).
    func close() async {
        while state.withLock({ $0.writing || $0.syncing }) { try? await Task.sleep(for: .milliseconds(5)) }
        if claimWriter() { write() }
        state.withLock { state in
            if state.failure == nil { try? StateDirectory.sync(state.file, directory.journalPath(state.generation)) }
            for old in state.retired { try? old.close() }
            try? state.file.close()
        }
        try? directory.lock.close()  // the directory is free for the next MDS
        try? await threads.shutdownGracefully()
    }
}
