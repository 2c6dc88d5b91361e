import Foundation
import GedsCore
import GedsMDS
import GedsWire

/// Keys shaped like a job's output: 26 bytes, too long for Swift's 15-byte inline strings, as real keys are.
public func objectKey(_ index: Int) -> String {
    let digits = String(index)
    return "run-7/part-" + String(repeating: "0", count: max(0, 9 - digits.count)) + digits + ".parquet"
}

/// This process's resident memory in bytes (/proc/self/statm).
public func residentBytes() -> Int {
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = statm.split(separator: " ")
    return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
}

/// A metadata store holding `count` sealed objects in one bucket, and the resident memory they took.
public struct FilledStore: Sendable {
    public static let bucket = "bench"
    public let store: MetadataStore
    public let count: Int
    /// Resident memory grown while filling, per object. Meaningful because each store is filled once per
    /// process, before anything is freed that a later allocation could reuse.
    public let residentBytesPerObject: Double
    /// Keys of stored objects in a random order, to look up.
    public let probes: [String]

    public init(count: Int) {
        let before = residentBytes()
        var store = MetadataStore(leaseMilliseconds: 60_000)
        let node = store.register(NodeRegistration(name: "n", hostID: "h", role: .daemon,
                                                   tcp: Endpoint(host: "127.0.0.1", port: 1), tier0Directory: "/t"), now: 0)
        do {
            try store.createBucket(FilledStore.bucket)
            for index in 0..<count {
                let blob = try store.createObject(bucket: FilledStore.bucket, key: objectKey(index), node: node)
                try store.seal(blob: blob, size: 1024, metadata: [:], placement: BlobPlacement(node: node, tier: .tier0), now: 1)
            }
        } catch {
            fatalError("cannot fill the metadata store: \(error)")
        }
        residentBytesPerObject = Double(residentBytes() - before) / Double(count)
        var generator = SystemRandomNumberGenerator()
        probes = (0..<min(count, 100_000)).map { _ in objectKey(Int.random(in: 0..<count, using: &generator)) }
        self.store = store
        self.count = count
    }
}
