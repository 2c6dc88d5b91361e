import GedsCore
import GedsNode
import Testing

@Suite struct WriteBackQueueTests {
    let object = S3ObjectReference(endpoint: "http://127.0.0.1:1", bucket: "b", key: "k", region: "us-east-1")

    /// Uploads are tried in seal order, each blob by one uploader at a time; a failed one goes to the back, a
    /// done or forgotten one leaves the queue.
    @Test func orderRetriesAndForgetting() {
        var queue = WriteBackQueue()
        let added = (1...5).map { queue.add(BlobID($0), to: object) } + [queue.add(2, to: object)]
        #expect(added == [true, true, true, true, true, false])  // 2 was queued already
        var taken = [queue.take()?.blob, queue.take()?.blob]
        queue.finish(1, done: false)  // failed: tried again after the others
        queue.forget(3)  // reached S3 by a spill
        taken += [queue.take()?.blob, queue.take()?.blob, queue.take()?.blob, queue.take()?.blob]
        // 2, 4 and 5 are being uploaded, 3 is gone: nothing else to take.
        #expect(taken == [1, 2, 4, 5, 1, nil])
        for blob: BlobID in [2, 4, 5, 1] { queue.finish(blob, done: true) }
        let last = queue.take()
        #expect(queue.pending.isEmpty && last == nil)
    }

    /// Many blobs, some failing once: every one is taken, none twice at once, and the queue ends empty.
    @Test func aLongQueueDrains() {
        var queue = WriteBackQueue()
        let count: UInt64 = 20_000
        for blob in (1...count).map({ BlobID($0) }) { _ = queue.add(blob, to: object) }
        var attempts: [BlobID: Int] = [:]
        while let (blob, _) = queue.take() {
            attempts[blob, default: 0] += 1
            queue.finish(blob, done: blob.rawValue % 7 != 0 || attempts[blob]! > 1)  // multiples of 7 fail once
        }
        #expect(queue.pending.isEmpty)
        #expect(attempts.count == Int(count))
        #expect(attempts.allSatisfy { $0.value == ($0.key.rawValue % 7 == 0 ? 2 : 1) })
    }
}
