#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GedsCarrier
import GedsCore
@testable import GedsMDS
import GedsTestSupport
import GedsWire
import Logging
import NIOCore
import Synchronization
import SystemPackage
import Testing

@Suite struct JournalTests {
    let storage = BucketStorage(endpoint: "http://127.0.0.1:4569", bucket: "s3b", prefix: "run/", region: "eu-west-1",
                                persistency: .writeBack)

    /// Every kind of change, as the journal and a snapshot write it, reads back equal.
    @Test func everyChangeRoundTrips() throws {
        let name = ObjectName(bucket: "data", key: "dir/ключ")
        let other = ObjectName(bucket: "other", key: "k")
        let s3 = NamespaceChange.S3CopyState(object: storage.object(forKey: "dir/ключ"), bucket: "data", persistency: .writeBack,
                                             stored: true, holder: false)
        let changes: [NamespaceChange] = [
            .createBucket("data"), .deleteBucket("data"), .setStorage(bucket: "data", storage), .setStorage(bucket: "data", nil),
            .seal(name, blob: 77, size: 4096, metadata: ["a": "1", "b": ""], modified: 1_700_000_000_000),
            .delete(name, now: 5), .deletePrefix(bucket: "data", prefix: "dir/"), .rename(from: name, to: other, now: 6),
            .copy(from: name, to: other, now: 7, blob: 78), .setMetadata(name, ["x": "y"]), .storedInS3(79),
            .adoptS3Object(name, blob: 80, size: 12, metadata: [:], now: 8), .checksum(81, 0xDEAD_BEEF),
            .object(name, blob: 82, size: 3, modified: 9, metadata: ["m": "n"], checksum: 42, s3: s3),
            .object(other, blob: 83, size: 0, modified: 10, metadata: [:], checksum: nil, s3: nil),
            .setReplicas(bucket: "data", 3), .replicas(84, 2), .ownReplicas(85, 1),
            .s3DeletionsOrdered([storage.object(forKey: "a"), storage.object(forKey: "b")], now: 11),
            .s3DeletionsDone([storage.object(forKey: "a")]),
        ]
        var buffer = ByteBuffer()
        JournalFormat.write(JournalFormat.Header(kind: .journal, epoch: 9, generation: 4, revision: 0), into: &buffer)
        for (index, change) in changes.enumerated() {
            JournalFormat.append(JournalFormat.Record(revision: UInt64(index + 1), change: change), to: &buffer)
        }
        #expect(try JournalFormat.header(of: buffer) == JournalFormat.Header(kind: .journal, epoch: 9, generation: 4, revision: 0))
        let (records, valid) = JournalTests.records(in: buffer)
        #expect(records.map(\.change) == changes)
        #expect(records.map(\.revision) == Array(1...UInt64(changes.count)))
        #expect(valid == buffer.readableBytes)
    }

    /// A journal whose last record was cut at any byte (a crash mid-write), or has any byte of it changed, reads as
    /// every record before it, and nothing else.
    @Test func aTornOrDamagedLastRecordIsDroppedAlone() throws {
        var buffer = JournalTests.journalCreatingBuckets(5)
        let lastStart = buffer.writerIndex
        JournalFormat.append(JournalFormat.Record(revision: 6, change: .seal(ObjectName(bucket: "bucket-0", key: "k"), blob: 9, size: 1,
                                                                             metadata: ["a": "b"], modified: 3)), to: &buffer)
        let whole = JournalTests.records(in: buffer)
        #expect(whole.records.count == 6)
        for cut in lastStart..<buffer.writerIndex {
            let (records, valid) = JournalTests.records(in: buffer.getSlice(at: 0, length: cut)!)
            #expect(records == Array(whole.records.prefix(5)), "cut at \(cut)")
            #expect(valid == lastStart, "cut at \(cut)")
        }
        for offset in lastStart..<buffer.writerIndex {
            var damaged = buffer
            damaged.setInteger(damaged.getInteger(at: offset, as: UInt8.self)! ^ 0x10, at: offset)
            let (records, valid) = JournalTests.records(in: damaged)
            #expect(records == Array(whole.records.prefix(5)), "byte \(offset) changed")
            #expect(valid == lastStart)
        }
    }

    /// Replaying the journal of a run, or its snapshot, gives the same namespace: keys, blobs, sizes, times,
    /// metadata, S3 stores and copies, and the revision.
    @Test func replayAndSnapshotRebuildTheNamespace() throws {
        var f = Fixture()
        f.store.journaling = true
        try f.store.createBucket("alpha")
        try f.store.createBucket("gone")
        try f.put("alpha", "a", size: 5, metadata: ["k": "v"])
        try f.put("alpha", "a", size: 6, now: 2)  // overwrite
        try f.put("alpha", "dir/x")
        try f.put("alpha", "dir/y")
        try f.put("alpha", "keep", size: 100)
        try f.store.setMetadata(bucket: "alpha", key: "keep", metadata: ["color": "red"])
        try f.store.rename(from: ("alpha", "a"), to: ("alpha", "b"), now: 3)
        try f.store.copy(from: ("alpha", "keep"), to: ("alpha", "shared"), now: 4)
        #expect(try f.store.delete(bucket: "alpha", prefix: "dir/") == 2)
        try f.store.deleteBucket("gone", force: true)
        try f.store.setStorage(bucket: "s3data", storage)
        let inS3 = try f.put("s3data", "up", size: 7)
        try f.store.addS3Copy(blob: inS3)
        try f.store.copy(from: ("s3data", "up"), to: ("s3data", "copied"), now: 5)
        _ = try f.store.adoptS3Object(bucket: "s3data", key: "adopted", size: 9, metadata: ["from": "s3"], now: 6)
        try f.store.addLocation(blob: inS3, placement: BlobPlacement(node: f.n1, tier: .tier1, checksum: 0x1234))
        try f.store.delete(bucket: "alpha", key: "b", now: 7)

        var buffer = ByteBuffer()
        JournalFormat.write(JournalFormat.Header(kind: .journal, epoch: 3, generation: 1, revision: 0), into: &buffer)
        for record in f.store.takeUnjournaled() { JournalFormat.append(record, to: &buffer) }
        var replayed = MetadataStore(epoch: 4)
        _ = try JournalFormat.forEachRecord(in: buffer) { (record) throws(GedsError) in try replayed.replay(record) }
        #expect(try namespace(of: replayed) == namespace(of: f.store))
        #expect(replayed.events.revision == f.store.events.revision)
        #expect(try replayed.s3Assignment(blob: inS3, now: 10) == f.store.s3Assignment(blob: inS3, now: 10))

        var snapshot = ByteBuffer()
        replayed.writeSnapshotRecords(into: &snapshot)
        var restored = MetadataStore(epoch: 5)
        try restored.restore(snapshot: JournalTests.withHeader(snapshot), revision: replayed.events.revision)
        #expect(try namespace(of: restored) == namespace(of: f.store))
        #expect(restored.events.revision == f.store.events.revision)
        #expect(try restored.s3Assignment(blob: inS3, now: 10) == f.store.s3Assignment(blob: inS3, now: 10))
        // Shared blobs stay shared: deleting one key keeps the other's.
        try restored.delete(bucket: "alpha", key: "keep", now: 11)
        #expect(try restored.lookup(bucket: "alpha", key: "shared").size == 100)
        // No node offers a copy back: only the objects in S3 stay, readable there.
        #expect(restored.dropLostObjects(now: 12) == 2)
        #expect(try restored.list(bucket: "alpha", prefix: "", delimiter: "", startAfter: "", maxKeys: 10).objects.isEmpty)
        #expect(try restored.list(bucket: "s3data", prefix: "", delimiter: "", startAfter: "", maxKeys: 10).objects.map(\.key)
                == ["adopted", "up"])
        #expect(try restored.lookup(bucket: "s3data", key: "up").locations.map(\.tier) == [.s3])
    }

    /// A restarted MDS (cleanly or not) has every change it acknowledged, across compactions; nodes offering their
    /// copies back make objects readable, and the ones nobody offers are dropped after the grace period.
    @Test(arguments: [FsyncPolicy.always, .everysec, .never])
    func aRestartedServerHasItsNamespace(policy: FsyncPolicy) async throws {
        let directory = try TemporaryDirectory()
        let state = StateOptions(directory: directory.path + "/state", fsync: policy, compactionBytes: 2048, recoveryGrace: .milliseconds(200))
        let logger = JournalTests.quietLogger
        let started = try await serverWithBucket(state)
        var first = started.server
        let node = started.node
        var blobs: [String: BlobID] = [:]
        for index in 0..<60 {
            let key = "key-\(index)"
            guard case .created(let blob) = try first.service.answer(.createObject(bucket: "bucket", key: key, node: node)) else {
                Issue.record("no blob")
                return
            }
            _ = try first.service.answer(.sealObject(blob: blob, size: UInt64(index), metadata: ["i": "\(index)"],
                                                     placement: BlobPlacement(node: node, tier: .tier0)))
            blobs[key] = blob
        }
        _ = try first.service.answer(.deleteObject(bucket: "bucket", key: "key-0"))
        let revision = first.service.revision
        await first.close()

        first = try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), state: state, logger: logger)
        #expect(first.service.revision == revision)
        #expect(first.service.objectCount == 59)
        // The node comes back with all but one of its copies; the other object is dropped after the grace period.
        let again = try registered(first.service, "node-a")
        for (key, blob) in blobs where key != "key-0" && key != "key-1" {
            #expect(try first.service.answer(.addLocation(blob: blob, placement: BlobPlacement(node: again, tier: .tier0))) == .ok)
        }
        guard case .object(let info) = try first.service.answer(.lookup(bucket: "bucket", key: "key-7")) else {
            Issue.record("no object")
            return
        }
        #expect(info.blob == blobs["key-7"] && info.size == 7 && info.metadata == ["i": "7"] && info.locations.count == 1)
        try await Task.sleep(for: .milliseconds(1000))
        #expect(first.service.objectCount == 58)
        #expect(gedsError { _ = try first.service.answer(.lookup(bucket: "bucket", key: "key-1")) }?.code == .noSuchObject)
        // New blobs never take an id of an earlier run.
        guard case .created(let fresh) = try first.service.answer(.createObject(bucket: "bucket", key: "new", node: again)) else {
            Issue.record("no blob")
            return
        }
        #expect(!blobs.values.contains(fresh))
        await first.close()
    }

    /// A restarted MDS serves a resume from a revision its journal still holds (the events replayed from it), and
    /// answers `compacted` once a snapshot took the journal's place (at the next restart).
    /// Changes made at once from several threads, with compactions claimed among them (each request's changes are
    /// queued in the store's critical section and written after it, in queue order, by whichever request comes
    /// first): a restarted MDS has every one, none twice.
    @Test(arguments: [FsyncPolicy.always, .everysec])
    func concurrentChangesAcrossCompactionsSurviveARestart(policy: FsyncPolicy) async throws {
        let directory = try TemporaryDirectory()
        let state = StateOptions(directory: directory.path + "/state", fsync: policy, compactionBytes: 4096, recoveryGrace: .seconds(60))
        let logger = JournalTests.quietLogger
        let started = try await serverWithBucket(state)
        var server = started.server
        let node = started.node
        let service = server.service
        let writers = 4, objectsEach = 300
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    for index in 0..<objectsEach {
                        let key = "w\(writer)/\(index)"
                        guard case .created(let blob) = try service.answer(.createObject(bucket: "bucket", key: key, node: node)) else {
                            throw GedsError(.internal, "no blob for \(key)")
                        }
                        _ = try service.answer(.sealObject(blob: blob, size: UInt64(index), metadata: ["key": key],
                                                           placement: BlobPlacement(node: node, tier: .tier0)))
                        if index % 10 == 9 { _ = try service.answer(.deleteObject(bucket: "bucket", key: "w\(writer)/\(index - 5)")) }
                    }
                }
            }
            try await group.waitForAll()
        }
        let revision = server.service.revision
        await server.close()

        server = try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), state: state, logger: logger)
        #expect(server.service.revision == revision)
        #expect(server.service.objectCount == writers * objectsEach * 9 / 10)
        for writer in 0..<writers {
            for index in [0, 4, 5, 6, objectsEach - 1] {
                let key = "w\(writer)/\(index)"
                if index % 10 == 4 {
                    #expect(gedsError { _ = try server.service.answer(.lookup(bucket: "bucket", key: key)) }?.code == .noSuchObject)
                } else {
                    guard case .object(let info) = try server.service.answer(.lookup(bucket: "bucket", key: key)) else {
                        Issue.record("\(key) is missing")
                        continue
                    }
                    #expect(info.size == UInt64(index) && info.metadata == ["key": key])
                }
            }
        }
        await server.close()
    }

    @Test func aResumeAfterARestartGetsTheJournaledEvents() async throws {
        let directory = try TemporaryDirectory()
        let state = StateOptions(directory: directory.path + "/state", fsync: .always)
        let logger = JournalTests.quietLogger
        let started = try await serverWithBucket(state)
        var server = started.server
        let node = started.node
        for key in ["a", "b"] {
            guard case .created(let blob) = try server.service.answer(.createObject(bucket: "bucket", key: key, node: node)) else {
                Issue.record("no blob")
                return
            }
            _ = try server.service.answer(.sealObject(blob: blob, size: 1, metadata: [:], placement: BlobPlacement(node: node, tier: .tier0)))
        }
        #expect(try server.service.answer(.rename(fromBucket: "bucket", fromKey: "a", toBucket: "bucket", toKey: "c")) == .ok)
        await server.close()

        server = try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), state: state, logger: logger)
        let replayed = pushed(server.service.respond(to: .subscribe(scope: .bucket("bucket"), after: 1)))
        #expect(replayed == [.subscribed(revision: 4), .events([
            NamespaceEvent(revision: 2, kind: .created, bucket: "bucket", key: "a"),
            NamespaceEvent(revision: 3, kind: .created, bucket: "bucket", key: "b"),
            NamespaceEvent(revision: 4, kind: .renamed, bucket: "bucket", key: "c", source: ObjectName(bucket: "bucket", key: "a")),
        ])])
        await server.close()

        // That restart compacted the journal it replayed into a snapshot: no history before the snapshot's revision.
        server = try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), state: state, logger: logger)
        #expect(pushed(server.service.respond(to: .subscribe(scope: .bucket("bucket"), after: 1)))
                == [.subscriptionEnded(.compacted(oldest: 5))])
        await server.close()
    }

    /// The replies a subscription pushes at once (its replay), written to a sink that keeps them.
    private func pushed(_ response: Response) -> [Reply] {
        guard case .push(let source) = response else {
            Issue.record("not a subscription: \(response)")
            return []
        }
        let sink = KeepingSink()
        source.start(sink)
        source.stop()
        return sink.replies.withLock { $0 }
    }

    private final class KeepingSink: PushSink {
        let replies = Mutex<[Reply]>([])
        var isWritable: Bool { true }
        func write(_ reply: Reply) { replies.withLock { $0.append(reply) } }
        func flush() {}
        func close(after grace: Duration) {}
        func execute(_ work: @escaping @Sendable () -> Void) { work() }
    }

    /// A compaction cut short after its snapshot was renamed into place leaves journals the snapshot includes: they
    /// are removed, not replayed again; a journal created by a run that died before its header was whole is skipped.
    @Test func journalsTheSnapshotIncludesAreNotReplayed() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/state"
        let files = try StateDirectory(path: path)
        func write(_ name: String, _ header: JournalFormat.Header, _ changes: [NamespaceChange], revision: UInt64) throws {
            var buffer = ByteBuffer()
            JournalFormat.write(header, into: &buffer)
            for change in changes { JournalFormat.append(JournalFormat.Record(revision: revision, change: change), to: &buffer) }
            let fd = try StateDirectory.open(path + "/" + name, .writeOnly, [.create, .truncate], failure: "creating \(name)")
            try StateDirectory.writeAll(fd, buffer)
            try fd.close()
        }
        try write("snapshot", JournalFormat.Header(kind: .snapshot, epoch: 7, generation: 3, revision: 2), [.createBucket("alpha")], revision: 2)
        try write("journal.2", JournalFormat.Header(kind: .journal, epoch: 7, generation: 2, revision: 0), [.createBucket("alpha")], revision: 1)
        try write("journal.3", JournalFormat.Header(kind: .journal, epoch: 7, generation: 3, revision: 0), [.createBucket("beta")], revision: 3)
        let torn = try StateDirectory.open(path + "/journal.4", .writeOnly, [.create, .truncate], failure: "creating journal.4")
        try StateDirectory.writeAll(torn, ByteBuffer(bytes: Array("GEDSJRNL".utf8)))
        try torn.close()
        try files.lock.close()

        let logger = Logger(label: "journal-test")
        let server = try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), state: StateOptions(directory: path),
                                                    logger: logger)
        #expect(server.service.revision == 3)
        guard case .buckets(let names) = try server.service.answer(.listBuckets) else {
            Issue.record("no buckets")
            return
        }
        #expect(names == ["alpha", "beta"])
        #expect(try StateDirectory.readFile(path + "/journal.2") == nil)
        await server.close()
    }

    /// A damaged snapshot stops the start with an error naming it (every time: the directory is not left locked).
    @Test func aDamagedSnapshotIsAnError() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/state"
        try StateDirectory(path: path).lock.close()
        var buffer = ByteBuffer()
        JournalFormat.write(JournalFormat.Header(kind: .snapshot, epoch: 1, generation: 1, revision: 1), into: &buffer)
        JournalFormat.append(JournalFormat.Record(revision: 1, change: .createBucket("alpha")), to: &buffer)
        buffer.setInteger(buffer.getInteger(at: buffer.writerIndex - 1, as: UInt8.self)! ^ 1, at: buffer.writerIndex - 1)
        let fd = try StateDirectory.open(path + "/snapshot", .writeOnly, [.create, .truncate], failure: "creating the snapshot")
        try StateDirectory.writeAll(fd, buffer)
        try fd.close()
        for _ in 0..<2 {
            let error = await gedsError {
                _ = try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), state: StateOptions(directory: path),
                                                   logger: Logger(label: "journal-test"))
            }
            #expect(error?.code == .checksumMismatch && error?.message.hasPrefix(path + "/snapshot: damaged at byte 36") == true,
                    "\(String(describing: error))")
        }
    }

    /// Two servers never share a state directory.
    @Test func theDirectoryIsLocked() async throws {
        let directory = try TemporaryDirectory()
        let state = StateOptions(directory: directory.path + "/state")
        let logger = Logger(label: "journal-test")
        let server = try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), state: state, logger: logger)
        let error = await gedsError { _ = try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), state: state, logger: logger) }
        #expect(error?.message.contains("in use by another geds-mds") == true)
        await server.close()
    }

    /// A journal file is preallocated: its records are followed by zeros. Replay stops at the zeros, which are not
    /// counted as torn; the non-zero bytes of a record cut short before them are.
    @Test func aZeroPaddedJournalReplaysUpToItsPadding() throws {
        let buffer = JournalTests.journalCreatingBuckets(3)
        let end = buffer.writerIndex
        var padded = buffer
        padded.writeRepeatingByte(0, count: 4096)
        let (records, valid) = JournalTests.records(in: padded)
        #expect(records.map(\.change) == [.createBucket("bucket-0"), .createBucket("bucket-1"), .createBucket("bucket-2")])
        #expect(valid == end)
        #expect(JournalFormat.tornBytes(in: padded, after: valid) == 0)

        var last = ByteBuffer()
        JournalFormat.append(JournalFormat.Record(revision: 4, change: .createBucket("bucket-3")), to: &last)
        let lastBytes = last.readableBytesView
        for cut in 1..<lastBytes.count {
            var torn = buffer
            torn.writeBytes(lastBytes.prefix(cut))
            torn.writeRepeatingByte(0, count: 4096)
            let (tornRecords, tornValid) = JournalTests.records(in: torn)
            #expect(tornRecords == records && tornValid == end, "cut at \(cut)")
            let nonZero = (lastBytes.prefix(cut).lastIndex { $0 != 0 }).map { $0 - lastBytes.startIndex + 1 } ?? 0
            #expect(JournalFormat.tornBytes(in: torn, after: tornValid) == nonZero, "cut at \(cut)")
        }
    }

    /// What a killed MDS leaves (its files as the kernel has them, nothing synced by a clean stop) restarts with every
    /// change it acknowledged, with each policy; records span many journal files when they are small (each a file
    /// made ahead in the background, or made at once when a burst outran it). A clean stop cuts the last file to its
    /// records.
    @Test(arguments: [(FsyncPolicy.always, 512), (.everysec, 512), (.never, 512), (.everysec, MetadataJournal.defaultSegmentBytes)])
    func whatAKilledServerCopiedInSurvives(policy: FsyncPolicy, segmentBytes: Int) async throws {
        let directory = try TemporaryDirectory()
        var state = StateOptions(directory: directory.path + "/state", fsync: policy, recoveryGrace: .seconds(60))
        state.segmentBytes = segmentBytes
        let logger = JournalTests.quietLogger
        let server = try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), state: state, logger: logger)
        let node = try registered(server.service, "node-a")
        #expect(try server.service.answer(.createBucket("bucket")) == .ok)
        for index in 0..<100 {
            guard case .created(let blob) = try server.service.answer(.createObject(bucket: "bucket", key: "key-\(index)", node: node)) else {
                Issue.record("no blob")
                return
            }
            _ = try server.service.answer(.sealObject(blob: blob, size: UInt64(index), metadata: ["i": "\(index)"],
                                                      placement: BlobPlacement(node: node, tier: .tier0)))
        }
        let revision = server.service.revision
        let journals = try JournalTests.journalNames(in: state.directory)
        #expect(segmentBytes > 4096 || journals.count > 5, "\(journals)")

        if policy == .always, let journal = server.service.journal {
            // What `always` acknowledges: the replies wait for this (`answer` here does not).
            await withCheckedContinuation { done in journal.whenDurable(journal.appendedPosition) { _ in done.resume() } }
        }
        // kill -9: the files as they are now, copied aside.
        var killed = state
        killed.directory = directory.path + "/killed"
        #expect(mkdir(killed.directory, 0o755) == 0)
        for name in journals + ["snapshot"] {
            guard let bytes = try StateDirectory.readFile(state.directory + "/" + name) else { continue }
            let fd = try StateDirectory.open(killed.directory + "/" + name, .writeOnly, [.create, .truncate], failure: "copying \(name)")
            try StateDirectory.writeAll(fd, bytes)
            try fd.close()
        }
        let restarted = try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), state: killed, logger: logger)
        #expect(restarted.service.revision == revision)
        #expect(restarted.service.objectCount == 100)
        guard case .object(let info) = try restarted.service.answer(.lookup(bucket: "bucket", key: "key-99")) else {
            Issue.record("no object")
            return
        }
        #expect(info.size == 99 && info.metadata == ["i": "99"])
        await restarted.close()

        await server.close()
        let last = try #require(try JournalTests.journalNames(in: state.directory).last)
        let bytes = try #require(try StateDirectory.readFile(state.directory + "/" + last))
        #expect(JournalTests.records(in: bytes).validBytes == bytes.readableBytes, "\(last) ends at its last record")
    }

    /// A journal of `count` records, each creating bucket `bucket-N`.
    private static func journalCreatingBuckets(_ count: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        JournalFormat.write(JournalFormat.Header(kind: .journal, epoch: 1, generation: 1, revision: 0), into: &buffer)
        for index in 0..<count {
            JournalFormat.append(JournalFormat.Record(revision: UInt64(index + 1), change: .createBucket("bucket-\(index)")), to: &buffer)
        }
        return buffer
    }

    /// The journal files in a state directory, oldest first.
    private static func journalNames(in directory: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix("journal.") }
            .sorted { UInt64($0.dropFirst("journal.".count))! < UInt64($1.dropFirst("journal.".count))! }
    }

    /// A scratch folder under /tmp, removed when the test ends.
    final class TemporaryDirectory {
        let path: String

        init() throws {
            var template = Array("/tmp/geds-journal-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { throw GedsError.io("mkdtemp", errno: errno) }
            path = String(cString: made)
        }

        deinit { removeTree(path) }
    }

    /// For servers whose warnings (lost objects, dropped torn bytes) are what the test provokes.
    private static let quietLogger: Logger = {
        var logger = Logger(label: "journal-test")
        logger.logLevel = .critical
        return logger
    }()

    /// A server on `state` with node "node-a" registered and bucket "bucket" made; the node sends no heartbeat, so
    /// its lease is long enough for a test slowed by a loaded machine.
    private func serverWithBucket(_ state: StateOptions) async throws -> (server: MetadataServer, node: UInt32) {
        let server = try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), leaseMilliseconds: 600_000, state: state,
                                                    logger: JournalTests.quietLogger)
        let node = try registered(server.service, "node-a")
        #expect(try server.service.answer(.createBucket("bucket")) == .ok)
        return (server, node)
    }

    private func registered(_ service: MetadataService, _ name: String) throws -> UInt32 {
        guard case .nodeRegistered(let index, _, _) = try service.answer(.registerNode(registration(name))) else {
            throw GedsError(.internal, "not registered")
        }
        return index
    }

    /// Every valid record, and where they end.
    private static func records(in bytes: ByteBuffer) -> (records: [JournalFormat.Record], validBytes: Int) {
        var records: [JournalFormat.Record] = []
        let valid = JournalFormat.forEachRecord(in: bytes) { records.append($0) }
        return (records, valid)
    }

    /// Deletions of S3 objects ordered from a node and not confirmed survive a restart (journal and snapshot) with a
    /// fresh lapse: until the node confirms, no upload goes to such an object and read-through does not bring the
    /// deleted key back. Confirmed ones are forgotten.
    @Test func pendingS3DeletionsSurviveARestart() throws {
        var f = Fixture()
        f.store.journaling = true
        try f.store.setStorage(bucket: "s3data", storage)
        let claimed = try f.store.claimS3Deletions(bucket: "s3data", keys: ["gone", "done"], now: 100)
        #expect(claimed == [storage.object(forKey: "gone"), storage.object(forKey: "done")])
        #expect(f.store.abandonS3Upload(storage.object(forKey: "abandoned"), now: 100) == [storage.object(forKey: "abandoned")])
        f.store.s3Deleted([storage.object(forKey: "done")])
        #expect(try f.store.delete(bucket: "s3data", key: "only-in-s3", now: 100) == (false, [storage.object(forKey: "only-in-s3")]))
        let uploaded = try f.put("s3data", "up")  // its upload would go to the S3 object a deletion of "up" left pending
        try f.store.delete(bucket: "s3data", key: "up", now: 100)
        f.store.s3Deleted([storage.object(forKey: "up")])

        let (replayed, restored) = try restarted(from: f.store.takeUnjournaled())
        // Restarted long after the orders lapsed: a fresh lapse from the restart.
        let restart: UInt64 = 10_000_000
        for var store in [replayed, restored] {
            #expect(Set(store.s3Deletions.keys.map { store.object(of: $0).key }) == ["run/gone", "run/abandoned", "run/only-in-s3"])
            store.beginRun(epoch: 6, now: restart)
            #expect(gedsError { _ = try store.adoptS3Object(bucket: "s3data", key: "gone", size: 1, now: restart + 1) }?.code
                    == .noSuchObject)
            #expect(gedsError { _ = try store.adoptS3Object(bucket: "s3data", key: "abandoned", size: 1, now: restart + 1) }?.code
                    == .noSuchObject)
            #expect(gedsError { _ = try store.adoptS3Object(bucket: "s3data", key: "only-in-s3", size: 1, now: restart + 1) }?.code
                    == .noSuchObject)
            // An object sealed under that key meanwhile waits with its upload.
            let writer = store.register(registration("writer"), now: 0)
            let blob = try store.createObject(bucket: "s3data", key: "only-in-s3", node: writer)
            try store.seal(blob: blob, size: 1, metadata: [:], placement: BlobPlacement(node: writer, tier: .tier0), now: restart + 1)
            #expect(gedsError { _ = try store.s3Assignment(blob: blob, now: restart + 1) }?.code == .s3DeletionPending)
            #expect(try store.adoptS3Object(bucket: "s3data", key: "done", size: 2, now: restart + 1).size == 2)
            // Confirmed after the restart: the key may be read through again.
            store.s3Deleted([storage.object(forKey: "gone")])
            #expect(try store.adoptS3Object(bucket: "s3data", key: "gone", size: 3, now: restart + 2).size == 3)
            // Unconfirmed, it lapses a minute after the restart.
            #expect(try store.adoptS3Object(bucket: "s3data", key: "abandoned", size: 4,
                                            now: restart + MetadataStore.s3DeletionLapseMilliseconds).size == 4)
        }
        #expect(!replayed.blobs.contains(uploaded))
    }

    private static func withHeader(_ records: ByteBuffer) -> ByteBuffer {
        var buffer = ByteBuffer()
        JournalFormat.write(JournalFormat.Header(kind: .snapshot, epoch: 1, generation: 1, revision: 0), into: &buffer)
        var records = records
        buffer.writeBuffer(&records)
        return buffer
    }

    /// Every key of every bucket with what a restart must keep.
    private func namespace(of store: MetadataStore) throws -> [String] {
        var lines: [String] = []
        for bucket in store.listBuckets() {
            lines.append("bucket \(bucket) \(String(describing: try store.storage(bucket: bucket)))")
            let page = try store.list(bucket: bucket, prefix: "", delimiter: "", startAfter: "", maxKeys: 1000)
            for entry in page.objects {
                let info = try store.lookup(bucket: bucket, key: entry.key)
                lines.append("\(bucket)/\(entry.key) \(info.blob) \(info.size) \(info.modified) \(info.metadata.sorted { $0.key < $1.key })")
            }
        }
        return lines
    }
}
