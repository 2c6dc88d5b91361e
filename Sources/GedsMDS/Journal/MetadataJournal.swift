#if canImport(Glibc)
import Glibc
#endif
import GedsCore
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// When the journal's writes are made durable (as Redis's `appendfsync`).
public enum FsyncPolicy: String, Sendable, CaseIterable {
    /// Before a change is acknowledged (changes arriving together share one fsync: group commit).
    case always
    /// About once a second: a machine crash loses at most the last second; a killed MDS loses nothing written.
    case everysec
    /// When the kernel writes back: the last seconds are at risk on a machine crash.
    case never
}

/// The journal of a durable MDS: changes are appended to a buffer inside the store's critical section (in
/// revision order, no I/O there), and one writer thread at a time writes what has gathered, fsyncs it as the
/// policy says, and wakes the requests waiting for it. Past `compactionBytes` of journal the writer starts the
/// next journal file and a snapshot of the store as it was at that point is written in the background; the
/// journals it includes are then removed.
final class MetadataJournal: Sendable {
    let policy: FsyncPolicy
    let directory: StateDirectory
    let epoch: UInt32
    private let compactionBytes: UInt64
    private let logger: Logger
    /// Two threads: the writer's and the snapshot's, so a compaction never holds up the journal.
    private let threads: NIOThreadPool
    private let state: Mutex<State>

    private struct State {
        /// Appended and not yet taken by the writer.
        var pending = ByteBuffer()
        /// Appended before the next generation was started: goes to the current file first.
        var beforeRotation: ByteBuffer?
        /// Positions are byte counts of everything ever appended in this run.
        var appended: UInt64 = 0
        var durable: UInt64 = 0
        var writing = false
        var syncWanted = false
        var generation: UInt64
        var file: Int32
        var bytesInGeneration: UInt64 = 0
        var compacting = false
        var failure: GedsError?
        var waiters: [(position: UInt64, continuation: CheckedContinuation<GedsError?, Never>)] = []
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
    /// request that made them waits for with `waitUntilDurable`, and whether a compaction should start now.
    func append(_ records: [JournalFormat.Record]) -> (position: UInt64, compact: Bool) {
        let (position, startWriter, compact) = state.withLock { state in
            var bytes = 0
            for record in records { bytes += JournalFormat.append(record, to: &state.pending) }
            state.appended += UInt64(bytes)
            state.bytesInGeneration += UInt64(bytes)
            // With `always` the journal's thread writes it (the request waits for its fsync); otherwise the
            // request's own thread does, once it has left the store's critical section (`writeAppended`).
            let startWriter = policy == .always && !state.writing
            if startWriter { state.writing = true }
            let compact = !state.compacting && state.beforeRotation == nil && state.bytesInGeneration >= compactionBytes
            return (state.appended, startWriter, compact)
        }
        if startWriter { threads.submit { _ in self.write(syncing: true) } }
        return (position, compact)
    }

    /// Writes what was appended on the caller's thread (after the store's critical section, before the reply, so a
    /// killed MDS loses no acknowledged change: one buffered write into the page cache, as Redis does), unless a
    /// writer is at it already (it then takes this too). Fsyncs stay on the journal's thread. Not for `always`.
    func writeAppended() {
        let start = state.withLock { state in
            guard !state.writing, state.pending.readableBytes > 0 || state.beforeRotation != nil else { return false }
            state.writing = true
            return true
        }
        if start { write(syncing: false) }
    }

    /// The position of everything appended so far.
    var appendedPosition: UInt64 { state.withLock { $0.appended } }

    /// Waits until everything up to `position` is on disk; the error when the journal can no longer be written.
    func waitUntilDurable(_ position: UInt64) async -> GedsError? {
        await withCheckedContinuation { continuation in
            let ready: GedsError?? = state.withLock { state in
                if let failure = state.failure { return .some(failure) }
                if state.durable >= position { return .some(nil) }
                state.waiters.append((position, continuation))
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// For `everysec`: has the writer fsync what it wrote since the last one.
    func syncSoon() {
        let startWriter = state.withLock { state in
            guard state.durable < state.appended else { return false }
            state.syncWanted = true
            defer { state.writing = true }
            return !state.writing
        }
        if startWriter { threads.submit { _ in self.write(syncing: true) } }
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
            defer { state.writing = true }
            return (state.generation, !state.writing)
        }
        if startWriter { threads.submit { _ in self.write(syncing: true) } }
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
        var sync: Bool
        var file: Int32
        var generation: UInt64
    }

    private enum Step {
        case work(Work)
        case done
        /// A sync was asked for while a writer that does not sync (a request's thread) was writing.
        case handOff
    }

    /// The writer: takes what has gathered, writes it (and syncs it when `syncing` and the policy or `syncSoon` say
    /// so), until nothing is left. One writer at a time (`writing`).
    private func write(syncing: Bool) {
        while true {
            let step = state.withLock { state -> Step in
                let sync = syncing && (state.syncWanted || policy == .always)
                guard state.pending.readableBytes > 0 || state.beforeRotation != nil || (sync && state.durable < state.appended) else {
                    if !syncing, state.syncWanted, state.durable < state.appended { return .handOff }
                    state.writing = false
                    return .done
                }
                defer {
                    state.pending.clear()
                    state.beforeRotation = nil
                    if sync { state.syncWanted = false }
                }
                return .work(Work(before: state.beforeRotation, bytes: state.pending, end: state.appended, sync: sync, file: state.file,
                                  generation: state.generation))
            }
            guard case .work(let work) = step else {
                if case .handOff = step { threads.submit { _ in self.write(syncing: true) } }
                return
            }
            var file = work.file
            do throws(GedsError) {
                if let before = work.before {
                    try StateDirectory.writeAll(file, before)
                    try StateDirectory.sync(file, directory.journalPath(work.generation - 1))
                    Glibc.close(file)
                    file = try directory.createJournal(work.generation, epoch: epoch)
                }
                try StateDirectory.writeAll(file, work.bytes)
                if work.sync { try StateDirectory.sync(file, directory.journalPath(work.generation)) }
                finish(file: file, end: work.end, synced: work.sync, failure: nil)
            } catch {
                logger.critical("the MDS journal cannot be written: \(error.message); changes are no longer durable")
                finish(file: file, end: work.end, synced: false, failure: error)
                return
            }
        }
    }

    private func finish(file: Int32, end: UInt64, synced: Bool, failure: GedsError?) {
        let ready = state.withLock { state in
            state.file = file
            if let failure {
                state.failure = failure
                state.writing = false
            }
            if synced { state.durable = max(state.durable, end) }
            let durable = state.durable
            let ready = state.waiters.filter { state.failure != nil || $0.position <= durable }
            state.waiters.removeAll { state.failure != nil || $0.position <= durable }
            return (ready, state.failure)
        }
        for waiter in ready.0 { waiter.continuation.resume(returning: ready.1) }
    }

    /// Writes and syncs what is pending, then closes the file (a clean stop).
    func close() async {
        syncSoon()
        while state.withLock({ $0.writing }) { try? await Task.sleep(for: .milliseconds(5)) }
        state.withLock { state in
            if state.durable < state.appended, state.failure == nil {
                try? StateDirectory.sync(state.file, directory.journalPath(state.generation))
            }
            Glibc.close(state.file)
        }
        Glibc.close(directory.lock)  // the directory is free for the next MDS
        try? await threads.shutdownGracefully()
    }
}
