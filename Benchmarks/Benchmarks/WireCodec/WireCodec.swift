import Benchmark
import GedsCore
import GedsWire
import NIOCore

/// The codec of the messages every read goes through: a lookup request, the object reply (with one
/// location), and a full list page (1000 keys). Encoding is a whole frame, as it is sent; decoding is the
/// header and the payload, as they arrive.
let location = Location.node(NodeCopy(node: "node-a", hostID: "host-a", tier: .tier0,
                                      tcp: Endpoint(host: "10.0.0.17", port: 4382), rdma: nil,
                                      path: "/dev/shm/geds/tier0/00000a1b2c3d4e5f"))
let lookup = Request.lookup(bucket: "results", key: "run-7/part-000000042.parquet")
let object = Reply.object(ObjectInfo(bucket: "results", key: "run-7/part-000000042.parquet", blob: 0xA1B2_C3D4_E5F6,
                                     size: 64 << 20, sealed: true, modified: 1_764_000_000_000,
                                     metadata: ["kind": "parquet", "rows": "1048576"], locations: [location]))
let page = Reply.page(ListPage(
    objects: (0..<1000).map { ListEntry(key: "run-7/part-\(String(1_000_000_000 + $0).dropFirst()).parquet", size: 1 << 20,
                                         modified: 1_764_000_000_000) },
    commonPrefixes: [], nextStartAfter: "run-7/part-000000999.parquet"))

let allocator = ByteBufferAllocator()

/// The bytes after the frame header, checked: what a decoder is handed.
func payload(_ frame: ByteBuffer) -> ByteBuffer {
    var frame = frame
    guard (try? FrameHeader.read(from: &frame)) != nil else { fatalError("bad frame") }
    return frame
}

/// Registers "encode NAME" (a whole frame, as it is sent) and "decode NAME" (header and payload, as they arrive).
func codec(_ name: String, configuration: Benchmark.Configuration, frame: @escaping (UInt64) -> ByteBuffer,
           decode: @escaping (inout ByteBuffer) throws -> Any) {
    Benchmark("encode \(name)", configuration: configuration) { benchmark in
        for id in benchmark.scaledIterations { blackHole(frame(UInt64(id))) }
    }
    Benchmark("decode \(name)", configuration: configuration) { benchmark in
        let encoded = frame(1)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            var bytes = payload(encoded)
            blackHole(try? decode(&bytes))
        }
    }
}

let benchmarks: @Sendable () -> Void = {
    let small = Benchmark.Configuration(metrics: [.wallClock, .throughput, .mallocCountTotal], scalingFactor: .kilo,
                                        maxDuration: .seconds(2))
    // A page takes tens of microseconds: no inner loop needed.
    let large = Benchmark.Configuration(metrics: small.metrics, maxDuration: .seconds(2))
    codec("lookup request", configuration: small, frame: { FrameEncoder.frame(lookup, id: $0, allocator: allocator) },
          decode: { try Request.decode(from: &$0) })
    codec("object reply", configuration: small, frame: { FrameEncoder.frame(object, id: $0, allocator: allocator) },
          decode: { try Reply.decode(from: &$0) })
    codec("list page (1000 keys)", configuration: large, frame: { FrameEncoder.frame(page, id: $0, allocator: allocator) },
          decode: { try Reply.decode(from: &$0) })
}
