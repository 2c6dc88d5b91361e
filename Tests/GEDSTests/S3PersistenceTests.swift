import Crypto
import GEDS
import GedsS3
import GedsTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// S3 persistence in-process against a real moto_server: what the process tests cannot reach through the CLI
/// (ranged reads of an S3-only object into caller memory, views caching it in tier 0, the library's API).
@Suite(.serialized) struct S3PersistenceTests {
    static let accessKey = "AKIAGEDSUNITTEST0000"
    static let secretKey = "geds-unit-test-secret"

    /// A moto_server with one bucket, and this process's nodes signing with the test keys (each node signs
    /// with its own environment's keys; the nodes of this process share these).
    static func motoWithBucket(_ bucket: String) async throws -> (ServerProcess, S3Client) {
        let moto = try ServerProcess.moto()
        setenv("AWS_ACCESS_KEY_ID", accessKey, 1)
        setenv("AWS_SECRET_ACCESS_KEY", secretKey, 1)
        do {
            let s3 = try S3Client(S3Configuration(endpoint: moto.endpoint, credentials: S3Credentials(
                accessKeyID: accessKey, secretAccessKey: secretKey)))
            try await s3.createBucket(bucket)
            return (moto, s3)
        } catch {
            moto.stop()
            throw error
        }
    }

    @Test func anObjectOnlyInS3IsReadByRangeIntoCallerMemoryAndCachedByAView() async throws {
        let (moto, s3) = try await Self.motoWithBucket("unit")
        defer { moto.stop() }

        let cluster = try await Cluster.start()
        let writer = try await cluster.handle("writer", hostID: "host-w")
        let reader = try await cluster.handle("reader", hostID: "host-r")
        do {
            try await writer.setBucketStorage("persisted", BucketStorage(endpoint: moto.endpoint, bucket: "unit", prefix: "p/",
                                                                         persistency: .writeThrough))
            let bytes = randomBytes(3 << 20 | 123, seed: 55)
            try await writer.put(bucket: "persisted", key: "object", bytes: bytes)  // returns once it is in S3
            #expect(sha256(try await s3.getObject(bucket: "unit", key: "p/object")) == sha256(bytes))
            await writer.close()  // its tier-0 copy goes: S3 holds the only one

            let info = try await reader.stat(bucket: "persisted", key: "object")
            #expect(info.locations.map(\.tier) == [.s3])
            #expect(info.locations.first?.holder == "\(moto.endpoint)/unit/p/object")
            let range = 1_000_003..<1_700_000
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: range.count, alignment: 1)
            defer { buffer.deallocate() }
            let got = try await reader.read(bucket: "persisted", key: "object", at: UInt64(range.lowerBound), into: buffer)
            #expect(got == range.count)
            #expect(sha256(UnsafeRawBufferPointer(buffer)) == sha256(Array(bytes[range])))
            // A ranged read caches nothing; a view does, and publishes its copy.
            #expect(try await reader.stat(bucket: "persisted", key: "object").locations.map(\.tier) == [.s3])
            let view = try await reader.open(bucket: "persisted", key: "object").view()
            #expect(sha256(view) == sha256(bytes))
            #expect(Set(try await reader.stat(bucket: "persisted", key: "object").locations.map(\.tier)) == [.tier0, .s3])

            // Read-through of a key written straight to S3, and the merged listing.
            let outside = randomBytes(200_000, seed: 56)
            try await s3.putObject(bucket: "unit", key: "p/outside", bytes: outside)
            try await s3.putObject(bucket: "unit", key: "not-under-the-prefix", bytes: [1])
            #expect(sha256(try await reader.get(bucket: "persisted", key: "outside")) == sha256(outside))
            try await s3.putObject(bucket: "unit", key: "p/listed-only", bytes: [2])
            #expect(try await reader.listAll(bucket: "persisted").objects.map(\.key) == ["listed-only", "object", "outside"])
            #expect(await gedsError { _ = try await reader.stat(bucket: "persisted", key: "absent") }?.code == .noSuchObject)
        } catch {
            await cluster.close([reader])
            throw error
        }
        await cluster.close([reader])
    }

    @Test func writeBackUploadsInTheBackgroundAndFlushWaitsForIt() async throws {
        let (moto, s3) = try await Self.motoWithBucket("later")
        defer { moto.stop() }
        try await withCluster([("node", "host-n", .embedded)]) { _, handles in
            let geds = handles[0]
            try await geds.setBucketStorage("ephemeral", BucketStorage(endpoint: moto.endpoint, bucket: "later",
                                                                       persistency: .ephemeral))
            let objects = (0..<5).map { randomBytes(100_000 + $0, seed: UInt64(60 + $0)) }
            for (index, bytes) in objects.enumerated() {
                let writer = try await geds.create(bucket: "ephemeral", key: "k\(index)", persistency: .writeBack)
                try writer.write(bytes, at: 0)
                try await writer.seal()
            }
            try await geds.put(bucket: "ephemeral", key: "stays", bytes: [9])  // the bucket's own: ephemeral
            try await geds.flush(timeoutMilliseconds: 30_000)
            for (index, bytes) in objects.enumerated() {
                #expect(sha256(try await s3.getObject(bucket: "later", key: "k\(index)")) == sha256(bytes))
            }
            #expect(try await s3.listAllObjects(bucket: "later").objects.map(\.key) == (0..<5).map { "k\($0)" })
            // A per-object persistency that needs S3, in a bucket without a store, is refused at create.
            try await geds.createBucket("plain")
            #expect(await gedsError { _ = try await geds.create(bucket: "plain", key: "x", persistency: .writeThrough) }?.code
                    == .invalidArgument)
        }
    }
}
