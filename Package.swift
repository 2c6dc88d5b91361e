// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "geds",
    // Linux only (RDMA verbs, O_DIRECT, memfd, eventfd). SwiftPM has no Linux entry for `platforms`, so none is listed.
    products: [
        .library(name: "GEDS", targets: ["GEDS"]),
        // The layers, for Benchmarks/ and for embedding parts of GEDS (an MDS in another service, say).
        .library(name: "GedsCore", targets: ["GedsCore"]),
        .library(name: "GedsWire", targets: ["GedsWire"]),
        .library(name: "GedsTier0", targets: ["GedsTier0"]),
        .library(name: "GedsCarrier", targets: ["GedsCarrier"]),
        .library(name: "GedsTCP", targets: ["GedsTCP"]),
        .library(name: "GedsMDS", targets: ["GedsMDS"]),
        // The C ABI (geds.h) for C, C++ and Fortran programs: libGedsC.so, whose soname is libgeds.so; tools/install.sh
        // installs it as lib/libgeds.so with pkg-config's geds.pc (a product named geds would clash with the CLI's).
        .library(name: "GedsC", type: .dynamic, targets: ["GedsC"]),
        // The decoders' fuzz entry points, for the fuzzing package in Fuzz/ (tools/fuzz.sh).
        .library(name: "GedsFuzzTargets", targets: ["GedsFuzzTargets"]),
        .executable(name: "geds", targets: ["geds"]),
        .executable(name: "geds-mds", targets: ["geds-mds"]),
        .executable(name: "gedsd", targets: ["gedsd"]),
        .executable(name: "geds-perf", targets: ["geds-perf"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        .target(name: "GedsCore", swiftSettings: strict),
        // C shims: only what Swift cannot call well itself.
        .target(name: "CVerbs", path: "CShims/CVerbs", linkerSettings: [.linkedLibrary("ibverbs"), .linkedLibrary("rdmacm")]),
        .target(name: "CCurl", path: "CShims/CCurl", linkerSettings: [.linkedLibrary("curl")]),
        .target(name: "CLinux", path: "CShims/CLinux", cSettings: [.define("_GNU_SOURCE")]),
        // geds.h, the public C header, as a module: Sources/GedsC implements it with its own types.
        .target(name: "CGeds", path: "CShims/CGeds"),
        .target(name: "GedsVerbs", dependencies: ["GedsCore", "CVerbs"], swiftSettings: strict),
        .target(name: "GedsS3", dependencies: ["GedsCore", "CCurl", .product(name: "Crypto", package: "swift-crypto"),
                                               .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .target(name: "GedsTier1", dependencies: ["GedsCore", "CLinux", .product(name: "NIOPosix", package: "swift-nio")],
                swiftSettings: strict),
        .target(name: "GedsWire", dependencies: ["GedsCore", .product(name: "NIOCore", package: "swift-nio")],
                swiftSettings: strict),
        .target(name: "GedsTier0", dependencies: ["GedsCore"], swiftSettings: strict),
        // The carriers' contracts (request services, read sinks, copy readers), free of any transport's types.
        // (and the deployment token's handshake, which every carrier runs: swift-crypto's HMAC-SHA-256)
        .target(name: "GedsCarrier", dependencies: ["GedsCore", "GedsWire", .product(name: "Crypto", package: "swift-crypto"),
                                                    .product(name: "Logging", package: "swift-log"),
                                                    .product(name: "Metrics", package: "swift-metrics")],
                swiftSettings: strict),
        // /metrics in Prometheus text format for geds-mds and gedsd (--metrics HOST:PORT); the layers below only
        // count through swift-metrics, which costs nothing until a process bootstraps it.
        .target(name: "GedsMetrics",
                dependencies: ["GedsCore",
                               .product(name: "Metrics", package: "swift-metrics"),
                               .product(name: "Prometheus", package: "swift-prometheus"),
                               .product(name: "NIOCore", package: "swift-nio"),
                               .product(name: "NIOPosix", package: "swift-nio"),
                               .product(name: "NIOHTTP1", package: "swift-nio")],
                swiftSettings: strict),
        .target(name: "GedsTCP",
                dependencies: ["GedsCore", "GedsWire", "GedsCarrier", .product(name: "Metrics", package: "swift-metrics"),
                               .product(name: "NIOCore", package: "swift-nio"),
                               .product(name: "NIOPosix", package: "swift-nio"),
                               .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        // The MDS's RDMA send/receive protocol, both sides: the listener (for GedsMDS) and the client (for GedsNode).
        .target(name: "GedsMetadataRDMA",
                dependencies: ["GedsCore", "GedsWire", "GedsCarrier", "GedsVerbs", .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        .target(name: "GedsMDS",
                // GedsTier1 and CLinux for CRC32C, the journal's record checksum.
                dependencies: ["GedsCore", "GedsWire", "GedsCarrier", "GedsTCP", "GedsMetadataRDMA", "GedsTier1", "CLinux",
                               .product(name: "Logging", package: "swift-log"),
                               .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")],
                swiftSettings: strict),
        .target(name: "GedsNode",
                dependencies: ["GedsCore", "GedsWire", "GedsCarrier", "GedsTier0", "GedsTier1", "GedsTCP", "GedsVerbs", "GedsS3", "CLinux",
                               "GedsMetadataRDMA",
                               .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
                               .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")],
                swiftSettings: strict),
        .target(name: "GEDS",
                dependencies: ["GedsCore", "GedsWire", "GedsCarrier", "GedsNode", "GedsTier0", "GedsTier1", .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        // The C ABI. Only the geds_* symbols are exported (geds.map), and the Swift runtime (with Foundation, which
        // dependencies import) is linked in statically, so C programs need nothing but libc, libstdc++ and the system
        // libraries GEDS uses. lld, because it leaves hidden symbols out of the dynamic symbol table altogether.
        .target(name: "GedsC", dependencies: ["CGeds", "CLinux", "GEDS", "GedsCore", "GedsNode", .product(name: "Logging", package: "swift-log")],
                exclude: ["geds.map"], swiftSettings: strict,
                linkerSettings: [.unsafeFlags(["-static-stdlib", "-use-ld=lld",
                                               // what the static Foundation (imported by dependencies) needs in turn
                                               "-lCoreFoundation", "-l_FoundationICU", "-l_FoundationCShims",
                                               "-l_FoundationCollections",
                                               "-Xlinker", "-soname=libgeds.so",
                                               "-Xlinker", "--version-script=\(Context.packageDirectory)/Sources/GedsC/geds.map"])]),
        .target(name: "GedsFuzzTargets",
                dependencies: ["GedsCore", "GedsWire", "GedsTCP", "GedsVerbs", "GedsS3", .product(name: "NIOCore", package: "swift-nio")],
                swiftSettings: strict),
        .executableTarget(name: "geds", dependencies: ["GEDS", "GedsCore", .product(name: "Logging", package: "swift-log"),
                               .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "tools/geds", swiftSettings: strict),
        .executableTarget(name: "geds-mds", dependencies: ["GedsMDS", "GedsMetadataRDMA", "GedsCarrier", "GedsCore", "GedsMetrics", .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
                               .product(name: "NIOPosix", package: "swift-nio"),
                               .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "tools/geds-mds", swiftSettings: strict),
        .executableTarget(name: "gedsd", dependencies: ["GEDS", "GedsCore", "GedsNode", "GedsMetrics", .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
                               .product(name: "NIOPosix", package: "swift-nio"),
                               .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "tools/gedsd", swiftSettings: strict),
        .executableTarget(name: "geds-perf", dependencies: ["GEDS", "GedsCore", "GedsNode", "GedsTCP", "GedsMDS", "GedsWire", "GedsTier1", "GedsVerbs", "GedsS3",
                               .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                               .product(name: "Logging", package: "swift-log"), .product(name: "Crypto", package: "swift-crypto"),
                               .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "tools/geds-perf", swiftSettings: strict),
        // Helpers shared by the test targets (deterministic random numbers, scratch folders, /proc/self/maps,
        // where RDMA tests can run, Python helper servers such as moto_server).
        .target(name: "GedsTestSupport", dependencies: ["GedsCore", "GedsVerbs"], path: "Tests/GedsTestSupport", swiftSettings: strict),
        .testTarget(name: "GedsCoreTests", dependencies: ["GedsTestSupport", "GedsCore"], swiftSettings: strict),
        .testTarget(name: "GedsWireTests", dependencies: ["GedsTestSupport", "GedsCore", "GedsWire",
                                                     .product(name: "NIOCore", package: "swift-nio")], swiftSettings: strict),
        .testTarget(name: "GedsTier0Tests", dependencies: ["GedsTestSupport", "GedsCore", "GedsTier0"], swiftSettings: strict),
        .testTarget(name: "GedsMDSTests", dependencies: ["GedsTestSupport", "GedsCore", "GedsWire", "GedsMDS", "GedsCarrier", "GedsTCP",
                                                    .product(name: "NIOCore", package: "swift-nio"),
                                                    .product(name: "NIOPosix", package: "swift-nio"),
                                                    .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .testTarget(name: "GedsVerbsTests", dependencies: ["GedsTestSupport", "GedsCore", "GedsVerbs", "GedsCarrier", "GedsMDS", "GedsMetadataRDMA", "GedsWire", "GedsTCP",
                                                      .product(name: "NIOPosix", package: "swift-nio"),
                                                      .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .testTarget(name: "GedsS3Tests", dependencies: ["GedsTestSupport", "GedsCore", "GedsS3", .product(name: "Crypto", package: "swift-crypto"),
                                                   .product(name: "Logging", package: "swift-log")],
                    swiftSettings: strict),
        .testTarget(name: "GedsNodeTests", dependencies: ["GedsTestSupport", "GedsCore", "GedsNode"], swiftSettings: strict),
        .testTarget(name: "GedsFuzzTests", dependencies: ["GedsTestSupport", "GedsFuzzTargets", "GedsVerbs", "GedsWire"], swiftSettings: strict),
        .testTarget(name: "GedsTier1Tests", dependencies: ["GedsTestSupport", "GedsCore", "GedsTier1"], swiftSettings: strict),
        .testTarget(name: "GEDSTests", dependencies: ["GedsTestSupport", "GEDS", "GedsCore", "GedsNode", "GedsWire", "GedsMDS", "GedsS3",
                               .product(name: "Crypto", package: "swift-crypto"),
                               .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
    ]
)
