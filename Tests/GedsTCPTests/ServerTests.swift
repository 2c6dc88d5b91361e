import GedsCarrier
import GedsCore
import GedsTCP
import GedsWire
import Logging
import NIOCore
import NIOPosix
import SystemPackage
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Requests that arrive together (pipelined, read at once) are answered in order and byte for byte as each reply
/// framed alone: small replies, a page larger than what a connection keeps of its reply buffer, and a small file's
/// bytes, which are written beside the framed replies.
@Suite struct ServerTests {
    private struct Service: RequestService {
        let path: String

        static let names = (0..<400).map { "bucket-\($0)-" + String(repeating: "x", count: 40) }  // about 20 KiB

        func respond(to request: Request) -> Response {
            switch request {
            case .lookup(_, let key):
                return .reply(.buckets([key]))
            case .listBuckets:
                return .reply(.buckets(Service.names))
            case .readBlob(_, let offset, let length):
                guard let descriptor = try? FileDescriptor.open(path, .readOnly) else {
                    return .reply(.failure(GedsError(.io, "cannot open \(path)")))
                }
                return .file(FileStream(descriptor: descriptor, offset: offset, length: length))
            default:
                return .reply(.failure(GedsError(.invalidArgument, "not in this test")))
            }
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrderByteForByte() async throws {
        let contents = String(repeating: "0123456789abcdef", count: 320)
        let file = try TemporaryFile(contents: contents)
        defer { file.remove() }
        let server = try await FrameServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), service: Service(path: file.path),
                                                 group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "server-test"))
        let requests: [Request] = [.lookup(bucket: "bucket", key: "a"), .listBuckets, .readBlob(blob: BlobID(1), offset: 100, length: 3000),
                                   .lookup(bucket: "bucket", key: "b"), .lookup(bucket: "bucket", key: "c")]
        var outgoing = ByteBuffer()
        var expected: [UInt8] = []
        for (index, request) in requests.enumerated() {
            let id = UInt64(index + 1)
            FrameEncoder.append(request, id: id, to: &outgoing)
            switch request {
            case .lookup(_, let key):
                expected += FrameEncoder.frame(.buckets([key]), id: id, allocator: ByteBufferAllocator()).readableBytesView
            case .listBuckets:
                expected += FrameEncoder.frame(.buckets(Service.names), id: id, allocator: ByteBufferAllocator()).readableBytesView
            default:
                expected += FrameEncoder.frame(.stream(length: 3000), id: id, allocator: ByteBufferAllocator()).readableBytesView
                expected += FrameEncoder.dataHeader(id: id, length: 3000, allocator: ByteBufferAllocator()).readableBytesView
                expected += Array(contents.utf8)[100..<3100]
            }
        }
        let connection = try BlockingTCP.connect(to: server.localAddress, peerName: "server", timeoutMilliseconds: 5000)
        defer { close(connection) }
        for _ in 0..<3 {  // the connection's reply buffer is used again
            let sent = outgoing.withUnsafeReadableBytes { send(connection, $0.baseAddress, $0.count, 0) }
            try #require(sent == outgoing.readableBytes)
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while received.count < expected.count {
                let got = recv(connection, &chunk, chunk.count, 0)
                try #require(got > 0, "the server closed or did not answer")
                received += chunk[..<got]
            }
            #expect(received == expected)
        }
        await server.close()
    }
}
