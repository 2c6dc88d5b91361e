import GedsCore
import GedsTestSupport
import GedsWire
import NIOCore
import Testing

/// The local endpoint's requests (attach mode): every case round-trips, and every truncation is refused.
@Suite struct LocalMessagesTests {
    static let info = ObjectInfo(bucket: "bucket", key: Samples.unicode, blob: .max, size: 1 << 40, sealed: true,
                                 modified: 1_700_000_000_000, metadata: ["e": "", "content-type": "x/y"],
                                 locations: [Samples.locationPlain, Samples.locationRDMA, Samples.locationS3])
    static let requests: [LocalRequest] = [
        .hello(pid: 0, mds: ""),
        .hello(pid: .max, mds: "127.0.0.1:4381"),
        .create(bucket: "b", key: Samples.unicode, persistency: nil),
        .create(bucket: "b", key: "k", persistency: .writeBack),
        .create(bucket: "b", key: "k", persistency: nil, exclusive: true),
        .create(bucket: "b", key: "k", persistency: .tier1, replicas: try! Replicas(copies: 3, waitForAll: false)),
        .seal(blob: .max, size: 0, metadata: [:], handOffTo: ""),
        .seal(blob: 1, size: .max, metadata: ["a": "b", "c": Samples.longString], handOffTo: "node-b"),
        .view(info),
        .read(info: nil, bucket: "b", key: "k", offset: 0, length: 0),
        .read(info: info, bucket: "", key: "", offset: .max, length: .max),
        .put(bucket: "b", key: "k", bytes: [], metadata: [:], persistency: nil, exclusive: false),
        .put(bucket: "b", key: Samples.unicode, bytes: [UInt8](repeating: 0xA5, count: LocalRequest.maximumPutBytes),
             metadata: ["a": "b", "c": Samples.longString], persistency: .writeThrough, exclusive: true),
        .relocate(bucket: "b", key: "k", toNode: "gedsd-1"),
        .call(.listBuckets),
        .call(.list(bucket: "b", prefix: "p/", delimiter: "/", startAfter: Samples.unicode, maxKeys: 1000)),
        .call(.setMetadata(bucket: "b", key: "k", metadata: ["x": "y"])),
    ]

    func encoded(_ request: LocalRequest) -> [UInt8] {
        var buffer = ByteBuffer()
        request.encode(into: &buffer)
        return Array(buffer.readableBytesView)
    }

    @Test func requestsRoundTrip() throws {
        for request in Self.requests {
            let wire = encoded(request)
            #expect(try LocalFrame.request(from: wire) == request)
        }
    }

    @Test func putOfMoreThanItsLimitIsRefused() {
        let wire = encoded(.put(bucket: "b", key: "k", bytes: [UInt8](repeating: 1, count: LocalRequest.maximumPutBytes + 1),
                                metadata: [:], persistency: nil, exclusive: false))
        #expect(throws: GedsError.self) { try LocalFrame.request(from: wire) }
    }

    @Test func framesCarryTheirPayloadLength() throws {
        let frame = LocalFrame.bytes(.call(.listNodes), id: 1)
        let header = try LocalFrame.header(Array(frame[..<FrameHeader.size]))
        #expect(header.kind == .request && header.requestID == 1 && Int(header.length) == frame.count - FrameHeader.size)
        #expect(try LocalFrame.request(from: Array(frame[FrameHeader.size...])) == .call(.listNodes))
        let data: [UInt8] = [1, 2, 3]
        let withData = data.withUnsafeBytes { LocalFrame.bytes(.stream(length: 3), id: 1, data: $0) }
        #expect(Array(withData.suffix(3)) == data)
    }

    @Test func truncatedAndPaddedRequestsAreRefused() {
        for request in Self.requests {
            let wire = encoded(request)
            for length in truncationLengths(of: wire.count) {
                #expect(throws: GedsError.self, "\(request) cut to \(length) of \(wire.count) bytes") {
                    try LocalFrame.request(from: Array(wire[..<length]))
                }
            }
            #expect(throws: GedsError.self) { try LocalFrame.request(from: wire + [0]) }
        }
        #expect(throws: GedsError.self) { try LocalFrame.request(from: [99]) }
    }
}
