import Foundation
@_spi(Benchmarks) import GEDS
import GedsCore

/// One node holding many small objects: how fast they are created and sealed, and proof that the node
/// keeps no open file or mapping per object (the process limits are 20,000 files and 65,530 mappings).
enum NodeScale {
    static func openFiles() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
    }

    static func mappings() -> Int {
        ((try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? "").split(separator: "\n").count
    }

    /// Puts `count` objects of `payload` under `prefix` followed by their index, from `writers` tasks at once.
    static func put(_ count: Int, of payload: [UInt8], geds: GEDS, bucket: String, prefix: String, writers: Int = 16) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    var index = writer
                    while index < count {
                        try await geds.put(bucket: bucket, key: prefix + String(index), bytes: payload)
                        index += writers
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    static func measure(geds: GEDS, bucket: String, count: Int, size: Int = 1024, writers: Int = 16) async throws -> [Measurement] {
        progress("node-scale: \(count) objects of \(size) bytes on one node, \(writers) writers")
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let filesBefore = openFiles()
        let mappingsBefore = mappings()
        let start = DispatchTime.now().uptimeNanoseconds
        try await put(count, of: payload, geds: geds, bucket: bucket, prefix: "scale/", writers: writers)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let held = geds.tier0BlobCount
        // Read a sample back, every byte compared.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        for _ in 0..<min(1000, count) {
            let key = "scale/\(Int.random(in: 0..<count))"
            let got = try await geds.read(bucket: bucket, key: key, into: buffer)
            precondition(got == size && buffer.elementsEqual(payload), "object \(key) read back wrong")
        }
        let filesAfter = openFiles()
        let mappingsAfter = mappings()
        try await geds.delete(bucket: bucket, prefix: "scale/")
        return [Measurement(
            workload: "node-scale", transport: "none", size_bytes: size, ops_per_s: Double(count) / seconds,
            note: "\(held) objects held by one node; open files \(filesBefore) → \(filesAfter), mappings \(mappingsBefore) → \(mappingsAfter) (no file or mapping kept per object); 1000 read back identical")]
    }
}
