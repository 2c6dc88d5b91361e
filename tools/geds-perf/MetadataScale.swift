import Foundation
import GedsCore
import GedsMDS
import GedsWire

/// The MDS's memory per object and lookup time at scale, measured on the metadata store in this process
/// (no network): resident memory before and after inserting `count` sealed objects, divided by `count`.
enum MetadataScale {
    static func residentBytes() -> Int {
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = statm.split(separator: " ")
        return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
    }

    static func key(_ index: Int) -> String {
        // Keys shaped like a job's output: 26 bytes, so they do not fit Swift's 15-byte inline strings.
        let digits = String(index)
        return "run-7/part-" + String(repeating: "0", count: max(0, 9 - digits.count)) + digits + ".parquet"
    }

    static func measure(count: Int) throws -> [Measurement] {
        progress("mds-scale: \(count) objects in an in-process metadata store")
        let before = residentBytes()
        var store = MetadataStore(leaseMilliseconds: 60_000)
        let node = store.register(NodeRegistration(name: "n", hostID: "h", role: .daemon,
                                                   tcp: Endpoint(host: "127.0.0.1", port: 1), tier0Directory: "/t"), now: 0)
        try store.createBucket("scale")
        for index in 0..<count {
            let blob = try store.createObject(bucket: "scale", key: key(index), node: node)
            try store.seal(blob: blob, size: 1024, metadata: [:], placement: BlobPlacement(node: node, tier: .tier0), now: 1)
        }
        let after = residentBytes()
        let perObject = Double(after - before) / Double(count)
        let lookups = 200_000
        var generator = SystemRandomNumberGenerator()
        let keys = (0..<lookups).map { _ in key(Int.random(in: 0..<count, using: &generator)) }
        let start = DispatchTime.now().uptimeNanoseconds
        var found = 0
        for key in keys { found += try store.lookup(bucket: "scale", key: key).size > 0 ? 1 : 0 }
        let nanoseconds = Double(DispatchTime.now().uptimeNanoseconds - start) / Double(lookups)
        precondition(found == lookups)
        withExtendedLifetime(store) {}
        return [Measurement(workload: "mds-scale", transport: "none", size_bytes: count, ops_per_s: 1e9 / nanoseconds,
                            p50_us: nanoseconds / 1000, note: String(format: "%.0f bytes of resident memory per object (goal: at most 200); %.2f µs per lookup (mean over %d random keys)", perObject, nanoseconds / 1000, lookups))]
    }
}
