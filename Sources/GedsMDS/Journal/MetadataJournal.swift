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

/// The journal of a durable MDS: changes are queued inside the store's critical section (in revision order) and
/// encoded after it, in queue order, by the request that made them or one that came after (so one event loop's request
/// encodes while the other's is in the store: the store's critical section no longer holds the encoding). With
/// `everysec` and `never` they are copied into the current journal file's mapping (no system call: the kernel's
/// page cache has them before the reply is sent, so a killed MDS loses none), and `everysec`'s thread fsyncs once a
/// second. With `always` they gather in a buffer, and the journal's thread writes and fsyncs what has gathered, then
/// wakes the requests waiting for it (group commit). Files are preallocated (`JournalSegment`); the next one is made
/// ready in the background, so moving to it costs no I/O. Past
/// `compactionBytes` the journal moves to the next file and a snapshot of the store as it was at that point is
/// written in the background; the journals it includes are then removed.
final class MetadataJournal: Sendable {
    /// A journal file's size: zeroing one takes about 20 ms on the VM's ext4 disk.
    static let defaultSegmentBytes = 16 << 20

    let policy: FsyncPolicy
    let directory: StateDirectory
    let epoch: UInt32
    private let compactionBytes: UInt64
    private let segmentBytes: Int
    private let logger: Logger
    /// Three threads: the syncer's, the next file's preparation and the snapshot's, so none holds up another.
    private let threads: NIOThreadPool
    private let state: Mutex<State>

    private struct State {
        var segment: JournalSegment
        /// The next generation's file, zeroed and mapped ahead of need.
        var spare: JournalSegment?
        var preparing = false
        /// Set when preparing a spare failed: files are then made when needed (a retry per change would flood the log).
        var preparationFailed = false
        /// The generation most recently given to a file.
        var lastGeneration: UInt64
        /// Where a record is encoded before it is copied into the mapping (kept: no allocation per change).
        var scratch = ByteBuffer()
        /// `always`: the bytes appended to the current file and not yet written, and where they go in it.
        var pending = ByteBuffer()
        var pendingOffset = 0
        /// Positions are byte counts of everything appended in this run: appended, synced.
        var appended: UInt64 = 0
        var durable: UInt64 = 0
        var syncing = false
        /// Files of earlier generations (with `always`'s bytes not yet written), written, synced and released by the
        /// next sync.
        var retired: [(segment: JournalSegment, pending: ByteBuffer, offset: Int)] = []
        var bytesSinceCompaction: UInt64 = 0
        var compacting = false
        /// Changes queued in the store's critical section and not yet encoded, in revision order.
        var queued: [JournalFormat.Record] = []
        /// A compaction claimed in the store's critical section: the store just after the first `after` queued changes.
        var queuedCompaction: (after: Int, snapshot: MetadataStore)?
        var failure: GedsError?
        var waiters: [(position: UInt64, then: @Sendable (GedsError?) -> Void)] = []
    }

    init(directory: StateDirectory, generation: UInt64, epoch: UInt32, policy: FsyncPolicy, compactionBytes: UInt64,
         segmentBytes: Int = MetadataJournal.defaultSegmentBytes, logger: Logger) throws(GedsError) {
        self.directory = directory
        self.epoch = epoch
        self.policy = policy
        self.compactionBytes = compactionBytes
        self.segmentBytes = max(segmentBytes, 2 * JournalFormat.headerSize)
        self.logger = logger
        let segment = try JournalSegment(in: directory, generation: generation, epoch: epoch, capacity: self.segmentBytes, filledAhead: true,
                                     mapped: policy != .always)
        state = Mutex(State(segment: segment, lastGeneration: generation))
        threads = NIOThreadPool(numberOfThreads: 3)
        threads.start()
    }

    /// Queues the changes a request made (call in the store's critical section, so they queue in revision order);
    /// when a compaction is due, queues `snapshot()` (the store as of now) with them. Cheap: `drain` encodes them,
    /// after the store's section.
    func enqueue(_ records: [JournalFormat.Record], snapshot: () -> MetadataStore) {
        state.withLock { state in
            state.queued.append(contentsOf: records)
            if !state.compacting, state.bytesSinceCompaction >= compactionBytes {
                state.compacting = true
                state.queuedCompaction = (state.queued.count, snapshot())
            }
        }
    }

    /// Encodes the queued changes into the journal in queue order, and starts a compaction queued among them. Once it
    /// returns, every change queued before the call is in (with `everysec`: in the page cache), so a request replies
    /// after calling it.
    func drain() {
        let (startSyncer, prepare, compaction) = state.withLock { state -> (Bool, Bool, (generation: UInt64, snapshot: MetadataStore)?) in
            guard !state.queued.isEmpty || state.queuedCompaction != nil else { return (false, false, nil) }
            let split = state.queuedCompaction?.after ?? state.queued.count
            for record in state.queued[..<split] { append(record, &state) }
            var compaction: (generation: UInt64, snapshot: MetadataStore)?
            if let queued = state.queuedCompaction {
                state.queuedCompaction = nil
                compaction = beginCompaction(&state).map { ($0, queued.snapshot) }
            }
            for record in state.queued[split...] { append(record, &state) }
            state.queued.removeAll(keepingCapacity: true)
            let startSyncer = policy == .always && !state.syncing && state.failure == nil
            if startSyncer { state.syncing = true }
            return (startSyncer, claimPreparation(&state), compaction)
        }
        if startSyncer { threads.submit { _ in self.syncUntilCaughtUp() } }
        if prepare { threads.submit { _ in self.prepareSpare() } }
        if let compaction { writeSnapshot(compaction.snapshot, generation: compaction.generation) }
    }

    private func append(_ record: JournalFormat.Record, _ state: inout State) {
        guard state.failure == nil else { return }
        state.scratch.clear()
        let count = JournalFormat.append(record, to: &state.scratch)
        do throws(GedsError) {
            while !state.segment.fits(count) { try moveToNextSegment(&state, capacity: max(segmentBytes, JournalFormat.headerSize + count)) }
        } catch {
            logger.critical("the MDS journal cannot be written: \(error.message); changes are no longer durable")
            state.failure = error
            return
        }
        let offset = state.segment.append(state.scratch)
        if policy == .always {
            if state.pending.readableBytes == 0 { state.pendingOffset = offset }
            state.pending.writeImmutableBuffer(state.scratch)
        }
        state.appended += UInt64(count)
        state.bytesSinceCompaction += UInt64(count)
    }

    /// Moves to the spare, or to a file made now when none is ready (a burst outran its preparation). A mapped file
    /// (`everysec`, `never`) is synced first, here (once per file, 16 MiB of changes): replay goes on to the next file,
    /// so a machine crash must never leave a later file's changes without all of an earlier one's. With `always` the
    /// journal's thread writes and syncs the files in order.
    private func moveToNextSegment(_ state: inout State, capacity: Int) throws(GedsError) {
        if policy != .always { try state.segment.sync() }
        let next: JournalSegment
        if let spare = state.spare {
            next = spare
            state.spare = nil
        } else {
            next = try JournalSegment(in: directory, generation: state.lastGeneration + 1, epoch: epoch, capacity: capacity, filledAhead: false,
                                  mapped: policy != .always)
            state.lastGeneration = next.generation
            state.preparationFailed = false
        }
        if policy == .never {
            let old = state.segment
            threads.submit { _ in old.release(truncating: true) }
        } else {
            // Released by the next sync: the one running may still be syncing it.
            state.retired.append((state.segment, state.pending, state.pendingOffset))
            state.pending = ByteBuffer()
        }
        state.segment = next
    }

    /// Once the current file is half full (not at the start: zeroing 16 MiB there would take the disk from the first
    /// syncs).
    private func claimPreparation(_ state: inout State) -> Bool {
        guard state.spare == nil, !state.preparing, !state.preparationFailed, state.segment.used >= state.segment.capacity / 2 else {
            return false
        }
        state.preparing = true
        return true
    }

    /// Makes the next generation's file (on the journal's thread); one made meanwhile by a burst takes its place.
    private func prepareSpare() {
        let generation = state.withLock { state in
            state.lastGeneration += 1
            return state.lastGeneration
        }
        do throws(GedsError) {
            let spare = try JournalSegment(in: directory, generation: generation, epoch: epoch, capacity: segmentBytes, filledAhead: true,
                                         mapped: policy != .always)
            let overtaken = state.withLock { state in
                state.preparing = false
                guard generation > state.segment.generation else { return true }
                state.spare = spare
                return false
            }
            if overtaken {
                spare.release(truncating: false)
                unlink(spare.path)
            }
        } catch {
            logger.error("could not prepare the next MDS journal file: \(error.message); it will be made when needed")
            state.withLock { state in
                state.preparing = false
                state.preparationFailed = true
            }
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

    /// For `everysec`: fsyncs what has been appended, on the journal's thread (appends go on meanwhile).
    func syncSoon() {
        let start = state.withLock { state in
            guard !state.syncing, state.durable < state.appended || !state.retired.isEmpty else { return false }
            state.syncing = true
            return true
        }
        guard start else { return }
        threads.submit { _ in
            self.sync()
            self.state.withLock { $0.syncing = false }
        }
    }

    /// How much the journal thread's nice value is lowered while it syncs for `always`: every acknowledgement waits for
    /// this thread to get a core back after each fdatasync, and on cores busy with other work that wait was longer than
    /// the sync itself.
    private static let syncerPriorityBoost: Int32 = 10

    /// For `always` (it holds `syncing`): syncs until every change appended meanwhile is durable too, at a higher
    /// priority than the threads around it (when the process may raise it: CAP_SYS_NICE; else as before). The pool's
    /// thread is given back at the ordinary priority (it also prepares files and writes snapshots).
    private func syncUntilCaughtUp() {
        // PRIO_PROCESS with id 0 names the calling thread on Linux, where the nice value is per thread.
        let byProcessID = Int32(PRIO_PROCESS.rawValue)
        let ordinary = getpriority(byProcessID, 0)
        let raised = setpriority(byProcessID, 0, ordinary - MetadataJournal.syncerPriorityBoost) == 0
        defer { if raised { setpriority(byProcessID, 0, ordinary) } }
        while true {
            sync()
            let more = state.withLock { state in
                guard state.failure == nil, state.durable < state.appended || !state.retired.isEmpty else {
                    state.syncing = false
                    return false
                }
                return true
            }
            guard more else { return }
        }
    }

    /// Writes what is pending, syncs the files left behind (then releases them) and the current one, and wakes the
    /// requests waiting for it.
    private func sync() {
        let (retired, segment, pending, offset, end) = state.withLock { state in
            defer {
                state.retired = []
                state.pending.clear()
            }
            return (state.retired, state.segment, state.pending, state.pendingOffset, state.appended)
        }
        defer { for old in retired { old.segment.release(truncating: true) } }
        do throws(GedsError) {
            for old in retired {
                if old.pending.readableBytes > 0 { try old.segment.write(old.pending, at: old.offset) }
                try old.segment.sync()
            }
            if pending.readableBytes > 0 { try segment.write(pending, at: offset) }
            try segment.sync()
            finish(end: end, failure: nil)
        } catch {
            logger.critical("the MDS journal cannot be synced: \(error.message); changes are no longer durable")
            finish(end: end, failure: error)
        }
    }

    /// Starts the next journal generation (unless the current one holds no record yet) and writes `snapshot` (the
    /// store as of this point, with every change before it drained) in the background, then removes the journals it
    /// includes.
    func compact(_ snapshot: MetadataStore) {
        let (generation, prepare) = state.withLock { state in
            state.compacting = true
            return (beginCompaction(&state), claimPreparation(&state))
        }
        if prepare { threads.submit { _ in self.prepareSpare() } }
        if let generation { writeSnapshot(snapshot, generation: generation) }
    }

    /// For a compaction claimed (`compacting`): moves to the next generation unless the current file holds no record
    /// yet; returns the generation the snapshot goes before, or nil (and the claim given up) when no file could be made.
    private func beginCompaction(_ state: inout State) -> UInt64? {
        state.bytesSinceCompaction = 0
        do throws(GedsError) {
            if state.segment.used > JournalFormat.headerSize {
                try moveToNextSegment(&state, capacity: segmentBytes)
            }
        } catch {
            logger.error("could not start the next MDS journal file for a compaction: \(error.message); the journal keeps every change meanwhile")
            state.compacting = false
            return nil
        }
        return state.segment.generation
    }

    /// Writes `snapshot` as the snapshot before journal `generation`, in the background (which then removes the
    /// journals it includes), and ends the compaction.
    private func writeSnapshot(_ snapshot: MetadataStore, generation: UInt64) {
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

    /// Records what reached the disk and wakes the requests waiting for it (all of them, with the error, once the
    /// journal failed).
    private func finish(end: UInt64, failure: GedsError?) {
        let (ready, error) = state.withLock { state in
            if let failure { state.failure = failure } else { state.durable = max(state.durable, end) }
            let durable = state.durable
            let failed = state.failure != nil
            let ready = state.waiters.filter { failed || $0.position <= durable }
            state.waiters.removeAll { failed || $0.position <= durable }
            return (ready, state.failure)
        }
        for waiter in ready { waiter.then(error) }
    }

    /// Writes and syncs what was appended, then releases the files, cut to their records (a clean stop). A change
    /// that still comes (a request racing the stop) is not journaled: with `always` its reply is an error.
    func close() async {
        while state.withLock({ $0.syncing || $0.preparing }) { try? await Task.sleep(for: .milliseconds(5)) }
        sync()
        state.withLock { state in
            if state.failure == nil { state.failure = GedsError(.mdsUnreachable, "the MDS is stopping") }
            state.segment.release(truncating: true)
            if let spare = state.spare {
                spare.release(truncating: false)
                unlink(spare.path)  // no record in it
                state.spare = nil
            }
        }
        finish(end: 0, failure: nil)  // wakes, with that error, the requests that came after the sync
        try? directory.lock.close()  // the directory is free for the next MDS
        try? await threads.shutdownGracefully()
    }
}
