// swift-tools-version: 6.1
// Micro-benchmarks of the paths that decide GEDS's speed (ordo-one/package-benchmark). Run them here with
// `swift package benchmark`. A package of its own, depending on the main one by path, so that the main
// build, its tests and CI never fetch or build the benchmark machinery.
import Foundation
import PackageDescription

/// SwiftPM names a path dependency after its folder, which is whatever this checkout is called.
let geds = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent().lastPathComponent

/// A benchmark suite: Benchmarks/NAME/*.swift, run by the benchmark plugin.
func suite(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .executableTarget(
        name: name,
        dependencies: [.product(name: "Benchmark", package: "benchmark")] + dependencies,
        path: "Benchmarks/\(name)",
        swiftSettings: [.swiftLanguageMode(.v6)],
        plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")])
}

let package = Package(
    name: "GedsBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        // The explicit trait list keeps the malloc statistics and leaves out the Swift 6.3 ARC runtime
        // interposer (a default trait), whose package is not needed for these figures.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        // The same versions as the main package: the benchmarks build ByteBuffers, event loops and loggers.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .target(name: "BenchmarkSupport", dependencies: [.product(name: "GedsMDS", package: geds),
                                                         .product(name: "GedsWire", package: geds),
                                                         .product(name: "GedsCore", package: geds)],
                swiftSettings: [.swiftLanguageMode(.v6)]),
        suite("WireCodec", [.product(name: "GedsWire", package: geds), .product(name: "GedsCore", package: geds),
                            .product(name: "NIOCore", package: "swift-nio")]),
        suite("Names", [.product(name: "GedsCore", package: geds)]),
        suite("MetadataLookup", ["BenchmarkSupport", .product(name: "GedsMDS", package: geds)]),
        suite("Tier0Read", [.product(name: "GedsTier0", package: geds), .product(name: "GedsCore", package: geds)]),
        suite("TCPRoundTrip", ["BenchmarkSupport", .product(name: "GedsCarrier", package: geds), .product(name: "GedsTCP", package: geds), .product(name: "GedsWire", package: geds),
                               .product(name: "GedsMDS", package: geds), .product(name: "GedsCore", package: geds),
                               .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                               .product(name: "Logging", package: "swift-log")]),
    ]
)
