import Foundation
import GedsCore
import GedsTestSupport
import GedsTier1
import Synchronization

/// A fresh folder on the file system holding the repository (ext4 or xfs, not tmpfs): under `.build`.
struct TestFolder {
    let path: String

    init(_ name: String) {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/geds-tier1-tests").path
        path = root + "/\(name)-\(UInt64.random(in: 0...UInt64.max))"
    }

    init(path: String) { self.path = path }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Deterministic test bytes.
func pattern(_ count: Int, seed: UInt64 = 1) -> [UInt8] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0..<count).map { _ in
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return UInt8(truncatingIfNeeded: state >> 32)
    }
}

/// Memory of its own, 4096-aligned (plus `offset` bytes, to make it unaligned on purpose).
final class TestBuffer: @unchecked Sendable {
    private let raw: UnsafeMutableRawBufferPointer
    let count: Int
    let offset: Int

    init(count: Int, offset: Int = 0, fill: UInt8 = 0) {
        self.count = count
        self.offset = offset
        raw = .allocate(byteCount: count + offset + 1, alignment: 4096)
        raw.initializeMemory(as: UInt8.self, repeating: fill)
    }

    convenience init(_ bytes: [UInt8], offset: Int = 0) {
        self.init(count: bytes.count, offset: offset)
        bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: raw[offset..<offset + count]).copyMemory(from: $0) }
    }

    var mutable: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(rebasing: raw[offset..<offset + count]) }
    var readable: UnsafeRawBufferPointer { UnsafeRawBufferPointer(mutable) }
    var bytes: [UInt8] { Array(readable) }

    deinit { raw.deallocate() }
}

final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    var sink: @Sendable (String) -> Void { { line in self.lines.withLock { $0.append(line) } } }
    var all: [String] { lines.withLock { $0 } }
}

func fileSize(_ path: String) -> Int? {
    (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue
}

func fileExists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

/// The file system type of the folder holding `path`, from /proc/self/mounts (longest matching mount point).
func fileSystemType(of path: String) -> String {
    guard let text = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return "?" }
    var best = ("", "?")
    for line in text.split(separator: "\n") {
        let fields = line.split(separator: " ")
        guard fields.count > 2 else { continue }
        let mount = String(fields[1])
        if (path == mount || path.hasPrefix(mount == "/" ? "/" : mount + "/")) && mount.count > best.0.count {
            best = (mount, String(fields[2]))
        }
    }
    return best.1
}
