import GEDS
import GedsTestSupport
import Testing

@Suite(.serialized) struct EventSubscriptionTests {
    /// Events of another host's changes arrive in revision order through the AsyncSequence; a second subscription
    /// resumed after a revision gets exactly the later ones; `next(timeout:)` returns nil when nothing comes.
    @Test func orderedResumableEvents() async throws {
        try await withCluster(twoHosts) { _, handles in
            let (a, b) = (handles[0], handles[1])
            try await a.createBucket("events")
            let all = try await b.subscribe(.bucket("events"))
            let dir = try await b.subscribe(.prefix("dir/", in: "events"))
            try await a.put(bucket: "events", key: "dir/x", bytes: [1, 2, 3])
            try await a.setMetadata(bucket: "events", key: "dir/x", ["stage": "1"])
            try await a.rename(bucket: "events", key: "dir/x", toBucket: "events", toKey: "y")
            try await a.copy(bucket: "events", key: "y", toBucket: "events", toKey: "dir/z")
            try await a.delete(bucket: "events", key: "y")
            var received: [NamespaceEvent] = []
            for try await event in all {
                received.append(event)
                if received.count == 5 { break }
            }
            #expect(received.map(\.kind) == [.created, .metadata, .renamed, .copied, .deleted])
            #expect(received[2].source == ObjectName(bucket: "events", key: "dir/x") && received[2].key == "y")
            #expect(zip(received, received.dropFirst()).allSatisfy { $0.revision < $1.revision })
            // The prefix sees the rename out of it and the copy into it, not the deletion of "y".
            var inDir: [NamespaceEvent.Kind] = []
            while inDir.count < 4, let event = try await dir.next(timeout: .seconds(5)) { inDir.append(event.kind) }
            #expect(inDir == [.created, .metadata, .renamed, .copied])
            #expect(try await dir.next(timeout: .milliseconds(200)) == nil)

            let resumed = try await b.subscribe(.bucket("events"), after: received[1].revision)
            var again: [UInt64] = []
            while again.count < 3, let event = try await resumed.next(timeout: .seconds(5)) { again.append(event.revision) }
            #expect(again == received[2...].map(\.revision))
            for subscription in [all, dir, resumed] { subscription.cancel() }
            #expect(try await all.next() == nil)
        }
    }

    /// `wait` returns at once for an object that exists, after its seal on another host otherwise, and throws
    /// `timedOut` when nothing comes.
    @Test func waitForObject() async throws {
        try await withCluster(twoHosts) { _, handles in
            let (a, b) = (handles[0], handles[1])
            try await a.createBucket("waits")
            let error = await gedsError { _ = try await b.wait(bucket: "waits", key: "never", timeout: .milliseconds(300)) }
            #expect(error?.code == .timedOut)
            let waiting = Task { try await b.wait(bucket: "waits", key: "later", timeout: .seconds(20)) }
            try await Task.sleep(for: .milliseconds(200))
            try await a.put(bucket: "waits", key: "later", bytes: [7, 7])
            #expect(try await waiting.value.size == 2)
            #expect(try await b.wait(bucket: "waits", key: "later", timeout: .zero).size == 2)
        }
    }

    /// A held wait ends with the change that creates its name (a copy or a rename onto it, in another bucket made
    /// meanwhile), carrying that name's record; a cancelled one returns at once; the MDS keeps none of them after.
    @Test func heldWaitsEndWithTheirCreationOrCancellation() async throws {
        try await withCluster(twoHosts) { cluster, handles in
            let (a, b) = (handles[0], handles[1])
            try await a.createBucket("held")
            let payload: [UInt8] = Array(0..<200).map { UInt8($0 & 0xFF) }
            try await a.put(bucket: "held", key: "source", bytes: payload)
            let copied = Task { try await b.wait(bucket: "held", key: "copy", timeout: .seconds(20)) }
            let renamed = Task { try await b.wait(bucket: "held-later", key: "moved", timeout: .seconds(20)) }
            let cancelled = Task { try await b.wait(bucket: "held", key: "never", timeout: .seconds(60)) }
            try await Task.sleep(for: .milliseconds(300))
            #expect(cluster.mds.service.heldWaitCount == 3)
            try await a.copy(bucket: "held", key: "source", toBucket: "held", toKey: "copy")
            let copy = try await copied.value
            #expect(copy.key == "copy" && copy.size == 200)
            try await a.createBucket("held-later")
            try await a.rename(bucket: "held", key: "copy", toBucket: "held-later", toKey: "moved")
            let moved = try await renamed.value
            #expect(moved.bucket == "held-later" && moved.key == "moved")
            #expect(try await b.get(bucket: "held-later", key: "moved") == payload)
            let start = ContinuousClock.now
            cancelled.cancel()
            let error = await gedsError { _ = try await cancelled.value }
            #expect(error?.code == .timedOut)
            #expect(ContinuousClock.now - start < .seconds(5))
            #expect(cluster.mds.service.heldWaitCount == 1, "the cancelled call stays held at the MDS until its time runs out")
            let timedOut = await gedsError { _ = try await b.wait(bucket: "held", key: "brief", timeout: .milliseconds(100)) }
            #expect(timedOut?.code == .timedOut)
            #expect(cluster.mds.service.heldWaitCount == 1, "a timed-out wait is released by the MDS")
        }
    }
}
