// swift-tools-version:6.1
// libFuzzer harness over GEDS's decoders: built by tools/fuzz.sh with -sanitize=fuzzer, never by the main build
// (a libFuzzer executable has no main of its own).
import PackageDescription

let package = Package(
    name: "geds-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "geds", path: "..")],
    targets: [
        .executableTarget(name: "geds-fuzz",
                          dependencies: [.product(name: "GedsFuzzTargets", package: "geds")],
                          swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
