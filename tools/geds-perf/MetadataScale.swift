import Foundation
import GedsCore
import GedsMDS
import GedsWire

/// The MDS's memory per object and lookup time at scale, measured on the metadata store in this process
/// (no network): resident memory before and after inserting `count` sealed objects, divided by `count`.
enum MetadataScale {
    /// The goal of the issue that asked for this figure: at most this many bytes per object at 10 M objects.
    static let bytesPerObjectGoal = 200.0

    /// The goal is stated for 10 M objects: a smaller store's figure includes overhead that is not per object.
    static func goal(_ perObject: Double, count: Int) -> String {
        let goal = "goal at 10 M objects: at most \(Int(bytesPerObjectGoal)) B"
        guard count >= 10_000_000 else { return goal }
        return goal + (perObject <= bytesPerObjectGoal ? ", met" : ", NOT met")
    }

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

    static func measure(count: Int) async throws -> [Measurement] {
        progress("mds-scale: inserting \(count.formatted()) objects into an in-process metadata store")
        let before = residentBytes()
        var store = MetadataStore(leaseMilliseconds: 60_000)
        let node = store.register(NodeRegistration(name: "n", hostID: "h", role: .daemon,
                                                   tcp: Endpoint(host: "127.0.0.1", port: 1), tier0Directory: "/t"), now: 0)
        try store.createBucket("scale")
        for index in 0..<count {
            let blob = try store.createObject(bucket: "scale", key: key(index), node: node)
            try store.seal(blob: blob, size: 1024, metadata: [:], placement: BlobPlacement(node: node, tier: .tier0), now: 1)
        }
        let perObject = Double(residentBytes() - before) / Double(count)

        let lookups = 200_000
        progress("mds-scale: \(lookups.formatted()) lookups of random keys among \(count.formatted())")
        var generator = SystemRandomNumberGenerator()
        let keys = (0..<lookups).map { _ in key(Int.random(in: 0..<count, using: &generator)) }
        // The rate from one untimed loop; the percentiles from each lookup timed alone (clock reads included).
        let total = try await Bench.timed(warmups: 0, samples: 1) {
            for key in keys where try store.lookup(bucket: "scale", key: key).size != 1024 { preconditionFailure("wrong size") }
        }[0]
        var index = 0
        let each = try await Bench.timed(warmups: 0, samples: lookups) {
            _ = try store.lookup(bucket: "scale", key: keys[index])
            index += 1
        }
        withExtendedLifetime(store) {}
        var result = Measurement.latency(
            .mdsScale, transport: nil, size: 0, microseconds: each.map { $0 * 1e6 }, reference: nil,
            note: String(format: "%.0f B of resident memory per object; ", perObject) + goal(perObject, count: count))
        result.objects = count
        result.ops_per_s = Double(lookups) / total
        result.bytes_per_object = perObject
        return [result]
    }
}
