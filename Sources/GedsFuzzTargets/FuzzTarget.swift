@_spi(Testing) import GedsS3
@_spi(Fuzzing) import GedsTCP
@_spi(Fuzzing) import GedsVerbs
import GedsCore
import GedsWire
import NIOCore

/// The decoders that read bytes from outside the process, each as one fuzz entry point. libFuzzer drives
/// them (`tools/fuzz.sh`), and `GedsFuzzTests` replays the kept inputs in every test run. An input may be
/// refused with an error, never crash the process, and whatever a decoder accepts must encode back to the
/// same value: a violation traps, which is what the fuzzer reports.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// A TCP byte stream cut into frames (`FrameReader`), in chunks the input chooses.
    case frame
    /// One whole frame holding a request or a reply (`WholeFrame`, the RDMA send/receive payload).
    case codec
    /// RDMA send/receive fragments: headers, reassembly into messages, then the frame in them.
    case rdmaMessage = "rdma-message"
    /// S3 answers: the XML reader, `<Error>` documents and ListObjectsV2 pages.
    case s3XML = "s3-xml"
    /// Bucket names, object keys, `bucket/key` paths and metadata names.
    case names
    /// A request payload on a gedsd's local socket (`LocalRequest`, attach mode).
    case local

    public func run(_ input: UnsafeRawBufferPointer) {
        switch self {
        case .frame: Self.frames(input)
        case .codec: Self.wholeFrame(Array(input))
        case .rdmaMessage: Self.fragments(input)
        case .s3XML: Self.s3Answers(Array(input))
        case .names: Self.names(String(decoding: input, as: UTF8.self))
        case .local: Self.localRequest(Array(input))
        }
    }

    /// Valid inputs to start from, one per shape the decoder knows.
    public var seeds: [[UInt8]] {
        switch self {
        case .frame:
            // One stream of several frames, cut after the first byte and then in 7-byte chunks.
            [[1, 7] + Self.sampleRequests.enumerated().flatMap { WholeFrame.bytes($1, id: UInt64($0)) }
                + Self.sampleReplies.enumerated().flatMap { WholeFrame.bytes($1, id: UInt64($0)) }]
        case .codec:
            Self.sampleRequests.map { WholeFrame.bytes($0, id: 1) } + Self.sampleReplies.map { WholeFrame.bytes($0, id: 2) }
        case .rdmaMessage:
            Self.sampleRequests.map { Self.fragmented(WholeFrame.bytes($0, id: 3), payloadPerFragment: 24) }
        case .s3XML:
            [Array("""
            <?xml version="1.0" encoding="UTF-8"?>
            <ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>a/</Prefix>\
            <IsTruncated>true</IsTruncated><NextContinuationToken>t&amp;1</NextContinuationToken>\
            <Contents><Key>a/x&lt;1&gt;</Key><Size>12</Size><ETag>&quot;e&quot;</ETag><LastModified>2026-01-01T00:00:00Z</LastModified></Contents>\
            <CommonPrefixes><Prefix>a/b/</Prefix></CommonPrefixes><!-- c --></ListBucketResult>
            """.utf8),
             Array("<Error><Code>NoSuchKey</Code><Message>gone &#x41;&#66;</Message><RequestId>r1</RequestId></Error>".utf8),
             Array("<InitiateMultipartUploadResult><UploadId>u-1</UploadId></InitiateMultipartUploadResult>".utf8)]
        case .names:
            ["bucket-1/some/key.txt", "my.bucket/ü/ñ", "192.168.1.1/k", "xn--abc/k", "Name-1=value"].map { Array($0.utf8) }
        case .local:
            Self.sampleLocalRequests.map { Array(LocalFrame.bytes($0, id: 1).dropFirst(FrameHeader.size)) }
        }
    }

    // MARK: the entry points

    private static func frames(_ input: UnsafeRawBufferPointer) {
        guard let first = input.first else { return }
        let chunk = Int(first) + 1
        var reader = FrameReader()
        var offset = 1
        let allocator = ByteBufferAllocator()
        while offset < input.count {
            let end = min(input.count, offset + chunk)
            var buffer = allocator.buffer(capacity: end - offset)
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: input[offset..<end]))
            offset = end
            do throws(GedsError) {
                try reader.consume(buffer) { frame throws(GedsError) in
                    switch frame {
                    case .request(let id, let request): checkRoundTrip(request, id: id)
                    case .reply(let id, let reply): checkRoundTrip(reply, id: id)
                    case .data: break
                    }
                }
            } catch {
                return  // a refused stream closes its connection: nothing more is read from it
            }
        }
    }

    private static func wholeFrame(_ message: [UInt8]) {
        if let (id, request) = try? WholeFrame.request(from: message) { checkRoundTrip(request, id: id) }
        if let (id, reply) = try? WholeFrame.reply(from: message) { checkRoundTrip(reply, id: id) }
    }

    /// Input: fragments, each a big-endian u16 length and that many bytes (a header and its payload), as the
    /// receive buffers would hold them.
    private static func fragments(_ input: UnsafeRawBufferPointer) {
        var assembler = MessageAssembler(maxMessageSize: 1 << 20)
        var offset = 0
        while offset + 2 <= input.count {
            let length = Int(input[offset]) << 8 | Int(input[offset + 1])
            offset += 2
            let fragment = UnsafeRawBufferPointer(rebasing: input[offset..<min(input.count, offset + length)])
            offset += fragment.count
            guard let header = FragmentHeader(fragment), header.kind == 1 else { continue }
            let payload = UnsafeRawBufferPointer(rebasing: fragment[12...])
            do throws(RDMAError) {
                guard let message = try assembler.append(flags: header.flags, total: header.total, payload: payload) else { continue }
                // The length announced by the message's first fragment is the one that counts (checked by the assembler).
                precondition(message.count <= assembler.maxMessageSize, "a message of \(message.count) bytes over the limit")
                wholeFrame(message)
            } catch {
                precondition(error.kind == .protocolViolation, "\(error)")
            }
        }
    }

    private static func localRequest(_ payload: [UInt8]) {
        guard let request = try? LocalFrame.request(from: payload) else { return }
        let again = try? LocalFrame.request(from: Array(LocalFrame.bytes(request, id: 1).dropFirst(FrameHeader.size)))
        precondition(again == request, "local request \(request) does not survive encoding")
    }

    private static func s3Answers(_ body: [UInt8]) {
        _ = S3ErrorDocument(body)
        guard let root = try? XMLTree.parse(body) else { return }
        if let page = try? S3ListPage(listBucketResult: root, operation: "ListObjectsV2") {
            precondition(!page.isTruncated || page.nextContinuationToken != nil, "a truncated page without a token")
        }
    }

    private static func names(_ text: String) {
        if let bucket = try? BucketName(text) {
            precondition((3...63).contains(bucket.rawValue.utf8.count), "bucket name '\(text)' accepted")
            precondition(bucket.rawValue.utf8.allSatisfy { $0 < 0x80 }, "bucket name '\(text)' accepted")
        }
        if let key = try? ObjectKey(text) {
            precondition((1...ObjectKey.maximumLength).contains(key.rawValue.utf8.count), "key of \(text.utf8.count) bytes accepted")
        }
        if let path = try? ObjectPath(parsing: text) {
            precondition(path.description == text, "'\(text)' parsed as '\(path)'")
        }
        let pairs = text.split(separator: "\n").map { line in
            let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        }
        let metadata = [String: String](pairs, uniquingKeysWith: { $1 })
        if (try? UserMetadata.validate(metadata)) != nil {
            precondition(metadata.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count } <= UserMetadata.maximumTotalBytes,
                         "metadata over the limit accepted")
        }
    }

    // MARK: invariants and samples

    private static func checkRoundTrip(_ request: Request, id: UInt64) {
        let again = try? WholeFrame.request(from: WholeFrame.bytes(request, id: id))
        precondition(again?.id == id && again?.request == request, "request \(request) does not survive encoding")
    }

    private static func checkRoundTrip(_ reply: Reply, id: UInt64) {
        let again = try? WholeFrame.reply(from: WholeFrame.bytes(reply, id: id))
        precondition(again?.id == id && again?.reply == reply, "reply \(reply) does not survive encoding")
    }

    private static func fragmented(_ message: [UInt8], payloadPerFragment: Int) -> [UInt8] {
        var out: [UInt8] = []
        var offset = 0
        repeat {
            let count = min(payloadPerFragment, message.count - offset)
            var flags: UInt8 = offset == 0 ? 1 : 0
            if offset + count == message.count { flags |= 2 }
            let length = 12 + count
            out += [UInt8(length >> 8), UInt8(length & 0xFF), 1, flags, 0, 0, 0, 0, 0, 0]
            out += withUnsafeBytes(of: UInt32(message.count).bigEndian, Array.init)
            out += message[offset..<offset + count]
            offset += count
        } while offset < message.count
        return out
    }

    private static let sampleRequests: [Request] = [
        .heartbeat(node: 3, blobs: 10, bytes: 4096),
        .createObject(bucket: "bucket", key: "a/b", node: 1),
        .sealObject(blob: 77, size: 4096, metadata: ["k": "v"],
                    placement: BlobPlacement(node: 1, tier: .tier0, rdmaAddress: 0x1000, rkey: 9, checksum: 5)),
        .list(bucket: "bucket", prefix: "a/", delimiter: "/", startAfter: "a/a", maxKeys: 100),
        .rename(fromBucket: "bucket", fromKey: "a", toBucket: "other", toKey: "b"),
        .claimS3Deletions(bucket: "bucket", keys: ["x", "y"]),
        .readBlob(blob: 5, offset: 0, length: 1 << 20),
    ]

    private static let sampleLocalRequests: [LocalRequest] = [
        .hello(pid: 42, mds: "127.0.0.1:4381"),
        .create(bucket: "bucket", key: "a/b", persistency: .writeThrough),
        .seal(blob: 77, size: 4096, metadata: ["k": "v"], handOffTo: "node-b"),
        .view(ObjectInfo(bucket: "bucket", key: "a", blob: 5, size: 10, sealed: true, modified: 1, metadata: [:], locations: [])),
        .read(info: nil, bucket: "bucket", key: "a", offset: 3, length: 4096),
        .relocate(bucket: "bucket", key: "a", toNode: "node-a"),
    ] + sampleRequests.map { .call($0) }

    private static let sampleReplies: [Reply] = [
        .ok,
        .failure(GedsError(.noSuchObject, "no such object")),
        .heartbeatAck(drop: [1, 2]),
        .buckets(["a", "b"]),
        .stream(length: 12),
    ]
}
