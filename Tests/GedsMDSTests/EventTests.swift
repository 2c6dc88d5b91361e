import GedsCore
import GedsMDS
import GedsTestSupport
import Testing

@Suite struct EventTests {
    /// Every kind of change gets the next revision, in commit order; a change that fails gets none.
    @Test func everyChangeIsNumberedInOrder() throws {
        var f = Fixture()
        try f.store.createBucket("alpha")
        try f.store.createBucket("beta")
        try f.put("alpha", "a")
        try f.put("alpha", "a")  // an overwrite is a new object under the key
        try f.store.setMetadata(bucket: "alpha", key: "a", metadata: ["k": "v"])
        try f.store.rename(from: ("alpha", "a"), to: ("beta", "b"), now: 2)
        try f.store.copy(from: ("beta", "b"), to: ("alpha", "c"), now: 3)
        try f.put("alpha", "dir/x")
        try f.put("alpha", "dir/y")
        #expect(try f.store.delete(bucket: "alpha", prefix: "dir/") == 2)
        try f.store.delete(bucket: "alpha", key: "c", now: 4)
        try f.store.deleteBucket("beta", force: true)
        // Failures: none of these is an event.
        #expect(gedsError { try f.store.createBucket("alpha") } != nil)
        #expect(gedsError { try f.store.delete(bucket: "alpha", key: "never", now: 5) } != nil)
        #expect(gedsError { try f.store.rename(from: ("alpha", "never"), to: ("alpha", "x"), now: 5) } != nil)
        #expect(gedsError { try f.store.setMetadata(bucket: "alpha", key: "never", metadata: [:]) } != nil)
        let blob = try f.store.createObject(bucket: "alpha", key: "pending", node: f.n1)
        f.store.abort(blob: blob)

        let events = f.store.takeUnpublishedEvents()
        #expect(events.map(\.description) == [
            "1 bucket-created alpha", "2 bucket-created beta", "3 created alpha/a", "4 created alpha/a", "5 metadata alpha/a",
            "6 renamed alpha/a beta/b", "7 copied alpha/c", "8 created alpha/dir/x", "9 created alpha/dir/y",
            "10 deleted alpha/dir/x", "11 deleted alpha/dir/y", "12 deleted alpha/c", "13 bucket-deleted beta",
        ])
        #expect(events[6].source == ObjectName(bucket: "beta", key: "b"))
        #expect(f.store.events.revision == 13)
        #expect(f.store.takeUnpublishedEvents().isEmpty)
    }

    @Test func scopes() {
        let created = NamespaceEvent(revision: 1, kind: .created, bucket: "b", key: "dir/k")
        let renamedOut = NamespaceEvent(revision: 2, kind: .renamed, bucket: "other", key: "x", source: ObjectName(bucket: "b", key: "dir/k"))
        let bucketGone = NamespaceEvent(revision: 3, kind: .bucketDeleted, bucket: "b")
        #expect(EventScope.bucket("b").contains(created))
        #expect(EventScope.prefix("dir/", in: "b").contains(created))
        #expect(!EventScope.prefix("dir/x", in: "b").contains(created))
        #expect(EventScope.key("dir/k", in: "b").contains(created))
        #expect(!EventScope.key("dir", in: "b").contains(created))
        #expect(!EventScope.bucket("bb").contains(created))
        // A rename reaches both names' scopes; a bucket event every scope of its bucket.
        #expect(EventScope.key("dir/k", in: "b").contains(renamedOut))
        #expect(EventScope.bucket("other").contains(renamedOut))
        #expect(EventScope.key("dir/k", in: "b").contains(bucketGone))
        #expect(!EventScope.bucket("other").contains(bucketGone))
    }

    /// The history keeps the last N events: a resume inside it gets exactly the later events in scope, one before
    /// it `compacted` with the oldest revision kept, one from the future an error.
    @Test func historyResumesAndCompacts() throws {
        var history = EventHistory(capacity: 4)
        #expect(try history.events(after: 0, in: .bucket("b")) == .events([]))
        for index in 1...6 { history.record(.created, bucket: index % 2 == 0 ? "b" : "c", key: "k\(index)") }
        #expect(history.revision == 6)
        #expect(history.oldest == 3)
        #expect(try history.events(after: 2, in: .bucket("b")).revisions == [4, 6])
        #expect(try history.events(after: 4, in: .bucket("c")).revisions == [5])
        #expect(try history.events(after: 6, in: .bucket("b")).revisions == [])
        #expect(try history.events(after: 1, in: .bucket("b")) == .compacted(oldest: 3))
        #expect(gedsError { _ = try history.events(after: 7, in: .bucket("b")) }?.code == .invalidArgument)
        // No history at all: only a resume from the current revision is possible.
        var none = EventHistory(capacity: 0)
        none.record(.bucketCreated, bucket: "b")
        #expect(try none.events(after: 1, in: .bucket("b")) == .events([]))
        #expect(try none.events(after: 0, in: .bucket("b")) == .compacted(oldest: 2))
    }
}

extension EventHistory.Resume {
    var revisions: [UInt64]? {
        guard case .events(let events) = self else { return nil }
        return events.map(\.revision)
    }
}
