#if canImport(Glibc)
import Glibc
#endif

/// A small deterministic generator, so failures reproduce.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Removes a file or a folder with everything in it (tests' scratch folders).
public func removeTree(_ path: String) {
    guard let dir = opendir(path) else {
        unlink(path)
        return
    }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name != "." && name != ".." { names.append(name) }
    }
    closedir(dir)
    for name in names { removeTree(path + "/" + name) }
    rmdir(path)
}

/// The /proc/self/maps entry (permissions, file) of the mapping that holds `address`: how the tests show a
/// view is the tier-0 file itself, not a copy.
public func mappingOf(_ address: UnsafeRawPointer) -> (permissions: String, path: String)? {
    guard let file = fopen("/proc/self/maps", "r") else { return nil }
    defer { fclose(file) }
    let target = UInt(bitPattern: address)
    var line = [CChar](repeating: 0, count: 4096)
    while fgets(&line, Int32(line.count), file) != nil {
        let text = String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let fields = text.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
        guard fields.count >= 5 else { continue }
        let range = fields[0].split(separator: "-")
        guard range.count == 2, let start = UInt(range[0], radix: 16), let end = UInt(range[1], radix: 16) else { continue }
        if start <= target, target < end {
            return (String(fields[1]), fields.count == 6 ? String(fields[5].drop { $0 == " " }) : "")
        }
    }
    return nil
}
