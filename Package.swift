// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "geds",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "GEDS", targets: ["GEDS"]),
        .executable(name: "geds", targets: ["geds"]),
        .executable(name: "geds-mds", targets: ["geds-mds"]),
        .executable(name: "gedsd", targets: ["gedsd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
    ],
    targets: [
        .target(name: "GedsCore", swiftSettings: strict),
        .target(name: "GedsWire", dependencies: ["GedsCore", .product(name: "NIOCore", package: "swift-nio")],
                swiftSettings: strict),
        .target(name: "GedsTier0", dependencies: ["GedsCore"], swiftSettings: strict),
        .target(name: "GedsTCP",
                dependencies: ["GedsCore", "GedsWire",
                               .product(name: "NIOCore", package: "swift-nio"),
                               .product(name: "NIOPosix", package: "swift-nio"),
                               .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        .target(name: "GedsMDS",
                dependencies: ["GedsCore", "GedsWire", "GedsTCP",
                               .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        .target(name: "GedsNode",
                dependencies: ["GedsCore", "GedsWire", "GedsTier0", "GedsTCP",
                               .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        .target(name: "GEDS",
                dependencies: ["GedsCore", "GedsNode", "GedsTier0", .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        .executableTarget(name: "geds", dependencies: ["GEDS",
                               .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "tools/geds", swiftSettings: strict),
        .executableTarget(name: "geds-mds", dependencies: ["GedsMDS",
                               .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "tools/geds-mds", swiftSettings: strict),
        .executableTarget(name: "gedsd", dependencies: ["GEDS",
                               .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "tools/gedsd", swiftSettings: strict),
        .testTarget(name: "GedsCoreTests", dependencies: ["GedsCore"], swiftSettings: strict),
        .testTarget(name: "GedsWireTests", dependencies: ["GedsWire"], swiftSettings: strict),
        .testTarget(name: "GedsTier0Tests", dependencies: ["GedsTier0"], swiftSettings: strict),
        .testTarget(name: "GedsMDSTests", dependencies: ["GedsMDS"], swiftSettings: strict),
        .testTarget(name: "GEDSTests", dependencies: ["GEDS", "GedsMDS",
                               .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strict),
    ]
)
