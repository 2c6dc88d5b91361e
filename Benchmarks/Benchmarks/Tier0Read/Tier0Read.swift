import Benchmark
import Foundation
import GedsCore
import GedsTier0

/// A local tier-0 read: map a sealed blob (open, fstat, mmap) and read every byte of it, as a task reading
/// an object its own node holds does. The folder is on /dev/shm, like a node's.
enum Fixture {
    static let directory = "/dev/shm/geds-bench-tier0-\(getpid())"
    static let sizes = [4 << 10, 1 << 20, 64 << 20]
    /// One sealed blob per size, its id the size.
    static let store: Tier0Store = {
        do {
            let store = try Tier0Store(directory: directory)
            for size in sizes {
                let blob = try store.create(BlobID(size))
                let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
                try bytes.withUnsafeBytes { try blob.write($0, at: 0) }
                _ = try blob.seal()
            }
            return store
        } catch {
            fatalError("cannot prepare tier 0 at \(directory): \(error)")
        }
    }()

    /// Reads every 8-byte word, so that each page is touched and the bytes are really read.
    static func sum(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var total: UInt64 = 0
        for offset in stride(from: 0, to: bytes.count - 7, by: 8) { total &+= bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self) }
        return total
    }
}

let benchmarks: @Sendable () -> Void = {
    for size in Fixture.sizes {
        let label = size >= 1 << 20 ? "\(size >> 20) MiB" : "\(size >> 10) KiB"
        Benchmark("map + read \(label)",
                  configuration: .init(metrics: [.wallClock, .throughput, .syscalls], maxDuration: .seconds(2))) { benchmark in
            for _ in benchmark.scaledIterations {
                guard let view = try? Fixture.store.map(BlobID(size)) else { return benchmark.error("blob \(size) is gone") }
                blackHole(Fixture.sum(view.bytes))
            }
        } setup: {
            _ = Fixture.store
        } teardown: {
            // After the last size: the folder holds all three.
            if size == Fixture.sizes.last { try? FileManager.default.removeItem(atPath: Fixture.directory) }
        }
    }
}
