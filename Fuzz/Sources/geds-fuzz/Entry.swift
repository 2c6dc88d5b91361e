#if canImport(Glibc)
import Glibc
#endif
import GedsFuzzTargets

/// The target this process fuzzes, named by `GEDS_FUZZ_TARGET` (tools/fuzz.sh sets it).
private let target: FuzzTarget = {
    guard let name = getenv("GEDS_FUZZ_TARGET").map({ String(cString: $0) }), let target = FuzzTarget(rawValue: name) else {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
        complain("set GEDS_FUZZ_TARGET to one of: \(names)")
        exit(2)
    }
    return target
}()

private func complain(_ message: String) {
    var line = "geds-fuzz: \(message)\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

/// With `GEDS_FUZZ_SEEDS=DIR`, writes the target's seed inputs into DIR and exits (tools/fuzz.sh starts a new
/// corpus with them).
@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    guard let directory = getenv("GEDS_FUZZ_SEEDS").map({ String(cString: $0) }) else { return 0 }
    for (index, seed) in target.seeds.enumerated() {
        guard let file = fopen("\(directory)/seed-\(index)", "wb") else {
            complain("cannot write \(directory)/seed-\(index)")
            exit(1)
        }
        _ = seed.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        fclose(file)
    }
    exit(0)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    target.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// libFuzzer's driver (`-sanitize=fuzzer` links it in).
@_silgen_name("LLVMFuzzerRunDriver")
private func runFuzzerDriver(_ argc: UnsafeMutablePointer<CInt>,
                             _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                             _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// SwiftPM links an executable's entry point as `<module>_main`; built as a library (-parse-as-library), this
/// module supplies it and hands over to libFuzzer's driver.
@_cdecl("geds_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return runFuzzerDriver(&count, &arguments) { data, size in testOneInput(data, size) }
}
