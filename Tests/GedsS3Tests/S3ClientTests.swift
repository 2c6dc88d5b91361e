import Crypto
import Foundation
import GedsCore
import GedsS3
import GedsTestSupport
import SystemPackage
import Testing

/// The client against a real `moto_server` process on loopback.
@Suite struct S3ClientTests {
    func client(_ retry: S3RetryPolicy? = nil) async throws -> S3Client {
        let endpoint = try await SharedMoto.instance.endpoint()
        return try S3Client(retry.map { testConfiguration(endpoint, retry: $0) } ?? testConfiguration(endpoint))
    }

    @Test func putGetHeadDelete() async throws {
        let s3 = try await client()
        let bucket = uniqueBucket("basic")
        try await s3.createBucket(bucket)
        for (index, size) in [0, 1, 4095, 4096, 100_000, 3 << 20].enumerated() {
            let key = "dir/object-\(index)"
            let bytes = pattern(size, seed: UInt64(index))
            let etag = try await s3.putObject(bucket: bucket, key: key, bytes: bytes,
                                              metadata: ["kind": "test", "size": String(size)], contentType: "application/octet-stream")
            #expect(etag.hasPrefix("\""))
            #expect(try await s3.getObject(bucket: bucket, key: key) == bytes)
            let head = try await s3.headObject(bucket: bucket, key: key)
            #expect(head.size == UInt64(size))
            #expect(head.etag == etag)
            #expect(head.metadata["kind"] == "test")
            #expect(head.metadata["size"] == String(size))
            #expect(head.contentType == "application/octet-stream")
            // The whole object into a caller buffer of exactly its size, and into a larger one.
            let copy = TestBuffer(count: size + 10, fill: 0xAA)
            defer { withExtendedLifetime(copy) {} }
            let count = try await s3.getObject(bucket: bucket, key: key, into: copy.mutable)
            #expect(count == size)
            #expect(copy.prefix(size) == bytes)
            #expect(copy.bytes.suffix(10).allSatisfy { $0 == 0xAA })
        }
        try await s3.deleteObject(bucket: bucket, key: "dir/object-0")
        let error = await gedsError { _ = try await s3.headObject(bucket: bucket, key: "dir/object-0") }
        #expect(error?.code == .noSuchObject)
        try await s3.deleteObject(bucket: bucket, key: "never-existed")  // S3 says yes to that
    }

    @Test func putFromMemoryAndFromAFile() async throws {
        let s3 = try await client()
        let bucket = uniqueBucket("sources")
        try await s3.createBucket(bucket)
        let bytes = pattern(1_000_003, seed: 7)
        let memory = TestBuffer(bytes)
        defer { withExtendedLifetime(memory) {} }
        try await s3.putObject(bucket: bucket, key: "from-memory", from: memory.readable)
        #expect(try await s3.getObject(bucket: bucket, key: "from-memory") == bytes)

        let path = NSTemporaryDirectory() + "geds-s3-source-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(path) }
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        let fd = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? fd.close() }
        try await s3.putObject(bucket: bucket, key: "from-file", fileDescriptor: fd, offset: 1000, length: 500_000)
        #expect(try await s3.getObject(bucket: bucket, key: "from-file") == Array(bytes[1000..<501_000]))
        // A file shorter than announced is a clear error, not a hang or a short object.
        let error = await gedsError {
            try await s3.putObject(bucket: bucket, key: "short", fileDescriptor: fd, offset: 1_000_000, length: 100)
        }
        #expect(error != nil)
        #expect(error?.message.contains("short") == true)
    }

    @Test func keysThatNeedEncoding() async throws {
        let s3 = try await client()
        let bucket = uniqueBucket("keys")
        try await s3.createBucket(bucket)
        let keys = ["a b+c%d=e&f?g#h", "dir//double/./dot/../x", "ünïcødé/文字", "~tilde!$'()*,;:@", "trailing/"]
        for (index, key) in keys.enumerated() {
            try await s3.putObject(bucket: bucket, key: key, bytes: [UInt8(index)])
            #expect(try await s3.getObject(bucket: bucket, key: key) == [UInt8(index)], "\(key)")
        }
        let listed = try await s3.listAllObjects(bucket: bucket).objects.map(\.key)
        #expect(Set(listed) == Set(keys))
    }

    @Test func rangedReads() async throws {
        let s3 = try await client()
        let bucket = uniqueBucket("ranges")
        try await s3.createBucket(bucket)
        let bytes = pattern(1 << 20, seed: 3)
        try await s3.putObject(bucket: bucket, key: "k", bytes: bytes)
        let buffer = TestBuffer(count: 1 << 20)
        defer { withExtendedLifetime(buffer) {} }
        for range: Range<UInt64> in [0..<1, 0..<4096, 4095..<4097, 123_456..<654_321, 1_048_000..<1_048_576] {
            let count = try await s3.getObject(bucket: bucket, key: "k", range: range, into: buffer.mutable)
            #expect(count == range.count)
            #expect(buffer.prefix(count) == Array(bytes[Int(range.lowerBound)..<Int(range.upperBound)]))
        }
        // Past the end: the bytes there are; from the end on: none.
        let tail = try await s3.getObject(bucket: bucket, key: "k", range: 1_048_570..<1_048_600, into: buffer.mutable)
        #expect(tail == 6)
        #expect(buffer.prefix(6) == Array(bytes.suffix(6)))
        let none = try await s3.getObject(bucket: bucket, key: "k", range: 2_000_000..<2_000_010, into: buffer.mutable)
        #expect(none == 0)
        // A range larger than the buffer, and an object larger than the buffer, are refused clearly.
        let small = TestBuffer(count: 100)
        defer { withExtendedLifetime(small) {} }
        let rangeError = await gedsError {
            _ = try await s3.getObject(bucket: bucket, key: "k", range: 0..<1000, into: small.mutable)
        }
        #expect(rangeError?.code == .invalidArgument)
        let sizeError = await gedsError {
            _ = try await s3.getObject(bucket: bucket, key: "k", into: small.mutable)
        }
        #expect(sizeError?.code == .invalidArgument)
        #expect(sizeError?.message.contains("\(bucket)/k") == true)
        #expect(sizeError?.message.contains("larger than the 100-byte buffer") == true)
    }

    @Test func listingWithPrefixDelimiterAndPages() async throws {
        let s3 = try await client()
        let bucket = uniqueBucket("list")
        try await s3.createBucket(bucket)
        let keys = ["a/1", "a/2", "a/b/3", "a/b/4", "a/c/5", "a/6", "b/7", "top"]
        for key in keys { try await s3.putObject(bucket: bucket, key: key, bytes: Array(key.utf8)) }

        let all = try await s3.listAllObjects(bucket: bucket)
        #expect(all.objects.map(\.key) == keys.sorted())
        #expect(all.objects.first { $0.key == "a/b/3" }?.size == 5)

        let folder = try await s3.listObjects(bucket: bucket, prefix: "a/", delimiter: "/")
        #expect(folder.objects.map(\.key) == ["a/1", "a/2", "a/6"])
        #expect(folder.commonPrefixes == ["a/b/", "a/c/"])
        #expect(!folder.isTruncated)

        let root = try await s3.listObjects(bucket: bucket, delimiter: "/")
        #expect(root.objects.map(\.key) == ["top"])
        #expect(root.commonPrefixes == ["a/", "b/"])

        // Pages of two, followed by continuation tokens.
        var token: String?
        var paged: [String] = []
        var pages = 0
        repeat {
            let page = try await s3.listObjects(bucket: bucket, prefix: "a/", continuationToken: token, maxKeys: 2)
            paged += page.objects.map(\.key)
            pages += 1
            token = page.nextContinuationToken
            #expect(page.isTruncated == (token != nil))
        } while token != nil
        #expect(paged == ["a/1", "a/2", "a/6", "a/b/3", "a/b/4", "a/c/5"])
        #expect(pages == 3)

        let empty = try await s3.listObjects(bucket: bucket, prefix: "zzz")
        #expect(empty.objects.isEmpty && empty.commonPrefixes.isEmpty)
    }

    @Test func multipartUploadFromMemory() async throws {
        let s3 = try await client()
        let bucket = uniqueBucket("multipart")
        try await s3.createBucket(bucket)
        let bytes = pattern(20 << 20, seed: 11)  // 20 MiB in 5 MiB parts
        let source = TestBuffer(bytes)
        defer { withExtendedLifetime(source) {} }
        let etag = try await s3.upload(bucket: bucket, key: "big", from: source.readable, metadata: ["m": "1"])
        #expect(etag.hasSuffix("-4\""), "\(etag): four parts")
        let head = try await s3.headObject(bucket: bucket, key: "big")
        #expect(head.size == 20 << 20)
        #expect(head.metadata["m"] == "1")
        let copy = TestBuffer(count: 20 << 20)
        defer { withExtendedLifetime(copy) {} }
        let count = try await s3.getObject(bucket: bucket, key: "big", into: copy.mutable)
        #expect(count == 20 << 20)
        #expect(SHA256.hash(data: copy.bytes) == SHA256.hash(data: bytes))
    }

    @Test func multipartUploadFromAFileWithAShortLastPart() async throws {
        let s3 = try await client()
        let bucket = uniqueBucket("multipart-file")
        try await s3.createBucket(bucket)
        let bytes = pattern((12 << 20) + 12345, seed: 12)  // 5 + 5 + 2 MiB + 12345 bytes
        let path = NSTemporaryDirectory() + "geds-s3-multipart-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(path) }
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        let fd = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? fd.close() }
        let etag = try await s3.upload(bucket: bucket, key: "big", fileDescriptor: fd, length: UInt64(bytes.count))
        #expect(etag.hasSuffix("-3\""), "\(etag)")
        let back = try await s3.getObject(bucket: bucket, key: "big")
        #expect(back.count == bytes.count)
        #expect(SHA256.hash(data: back) == SHA256.hash(data: bytes))
        // Below the threshold, `upload` is a single PUT.
        let small = try await s3.upload(bucket: bucket, key: "small", fileDescriptor: fd, length: 1 << 20)
        #expect(!small.contains("-"))
    }

    @Test func multipartStepByStepAndAbort() async throws {
        let s3 = try await client()
        let bucket = uniqueBucket("multipart-steps")
        try await s3.createBucket(bucket)
        let first = pattern(5 << 20, seed: 1)
        let second = pattern(1000, seed: 2)
        let firstBuffer = TestBuffer(first)
        defer { withExtendedLifetime(firstBuffer) {} }
        let secondBuffer = TestBuffer(second)
        defer { withExtendedLifetime(secondBuffer) {} }
        let upload = try await s3.createMultipartUpload(bucket: bucket, key: "joined")
        let etag1 = try await s3.uploadPart(bucket: bucket, key: "joined", uploadID: upload, partNumber: 1, from: firstBuffer.readable)
        let etag2 = try await s3.uploadPart(bucket: bucket, key: "joined", uploadID: upload, partNumber: 2, from: secondBuffer.readable)
        try await s3.completeMultipartUpload(bucket: bucket, key: "joined", uploadID: upload,
                                             parts: [S3CompletedPart(partNumber: 2, etag: etag2), S3CompletedPart(partNumber: 1, etag: etag1)])
        #expect(try await s3.getObject(bucket: bucket, key: "joined") == first + second)

        let aborted = try await s3.createMultipartUpload(bucket: bucket, key: "aborted")
        _ = try await s3.uploadPart(bucket: bucket, key: "aborted", uploadID: aborted, partNumber: 1, from: secondBuffer.readable)
        try await s3.abortMultipartUpload(bucket: bucket, key: "aborted", uploadID: aborted)
        // The upload is gone: aborting it again is S3's 404 NoSuchUpload. (moto answers 500 to a part or a
        // completion of an aborted upload, where S3 says NoSuchUpload; not tested here for that reason.)
        let error = await gedsError { try await s3.abortMultipartUpload(bucket: bucket, key: "aborted", uploadID: aborted) }
        #expect(error?.code == .noSuchObject)
        #expect(error?.message.contains("NoSuchUpload") == true)
        let missing = await gedsError { _ = try await s3.headObject(bucket: bucket, key: "aborted") }
        #expect(missing?.code == .noSuchObject)
        // A part below S3's 5 MiB minimum (not the last one) fails completion with S3's own words.
        let tooSmall = try await s3.createMultipartUpload(bucket: bucket, key: "small-parts")
        var parts: [S3CompletedPart] = []
        for number in 1...2 {
            let etag = try await s3.uploadPart(bucket: bucket, key: "small-parts", uploadID: tooSmall, partNumber: number, from: secondBuffer.readable)
            parts.append(S3CompletedPart(partNumber: number, etag: etag))
        }
        let small = await gedsError {
            try await s3.completeMultipartUpload(bucket: bucket, key: "small-parts", uploadID: tooSmall, parts: parts)
        }
        #expect(small?.message.contains("EntityTooSmall") == true, "\(small?.message ?? "")")
    }

    @Test func clientErrorsNameTheBucketAndKey() async throws {
        let logs = LogRecorder()
        let s3 = try S3Client(testConfiguration(try await SharedMoto.instance.endpoint(), logger: logs.logger))
        let bucket = uniqueBucket("errors")
        try await s3.createBucket(bucket)
        let missing = await gedsError { _ = try await s3.getObject(bucket: bucket, key: "no/such/key") }
        #expect(!logs.all.contains { $0.contains("retrying") }, "4xx answers are not retried: \(logs.all)")
        #expect(missing?.code == .noSuchObject)
        let message = missing?.message ?? ""
        #expect(message.contains("GetObject \(bucket)/no/such/key"), "\(message)")
        #expect(message.contains("404 NoSuchKey"), "\(message)")
        #expect(message.contains(try await SharedMoto.instance.endpoint()), "\(message)")

        let noBucket = await gedsError { try await s3.putObject(bucket: "geds-no-such-bucket-x", key: "k", bytes: [1]) }
        #expect(noBucket?.code == .noSuchBucket)
        #expect(noBucket?.message.contains("geds-no-such-bucket-x/k") == true)
        #expect(noBucket?.message.contains("NoSuchBucket") == true)

        let list = await gedsError { _ = try await s3.listObjects(bucket: "geds-no-such-bucket-y", prefix: "p/") }
        #expect(list?.code == .noSuchBucket)
        #expect(list?.message.contains("geds-no-such-bucket-y") == true)

        // Creating one's own bucket again is accepted in us-east-1 (S3's legacy rule, which moto follows).
        try await s3.createBucket(bucket)

        try await s3.putObject(bucket: bucket, key: "k", bytes: [1])
        let notEmpty = await gedsError { try await s3.deleteBucket(bucket) }
        #expect(notEmpty?.code == .bucketNotEmpty)
        try await s3.deleteObject(bucket: bucket, key: "k")
        try await s3.deleteBucket(bucket)

        let badMetadata = await gedsError { try await s3.putObject(bucket: bucket, key: "k", bytes: [], metadata: ["a b": "c"]) }
        #expect(badMetadata?.code == .invalidArgument)
    }

    @Test func cancellingAReadStopsIt() async throws {
        let s3 = try await client()
        let bucket = uniqueBucket("cancel")
        try await s3.createBucket(bucket)
        try await s3.putObject(bucket: bucket, key: "k", bytes: pattern(1 << 20))
        let task = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<20 { group.addTask { _ = try await s3.getObject(bucket: bucket, key: "k") } }
                try await group.waitForAll()
            }
        }
        task.cancel()
        _ = await task.result  // returns (done or cancelled) rather than hanging
        #expect(try await s3.getObject(bucket: bucket, key: "k").count == 1 << 20, "the client still works")
    }
}
