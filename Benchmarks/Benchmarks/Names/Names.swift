import Benchmark
import GedsCore

/// Name validation runs on every request that names an object (S3's rules for buckets and keys).
let benchmarks: @Sendable () -> Void = {
    let configuration = Benchmark.Configuration(metrics: [.wallClock, .throughput, .mallocCountTotal], scalingFactor: .kilo,
                                                maxDuration: .seconds(2))
    let cases: [(String, @Sendable () -> Any?)] = [
        ("BucketName valid", { try? BucketName("results-2026") }),
        ("BucketName invalid (underscore)", { try? BucketName("under_score") }),
        ("ObjectKey 26 bytes", { try? ObjectKey("run-7/part-000000042.parquet") }),
        ("ObjectKey 1024 bytes", { [long = String(repeating: "k/", count: 512)] in try? ObjectKey(long) }),
        ("ObjectPath parsing", { try? ObjectPath(parsing: "results/run-7/part-000000042.parquet") }),
    ]
    for (name, validate) in cases {
        Benchmark(name, configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations { blackHole(validate()) }
        }
    }
}
