import CLinux
import GedsCore
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Restart adoption: each committed file records its size and checksum in an extended attribute, so that a
/// later store (`Tier1Leftovers.adopt`) can take the complete files back instead of deleting them.
extension Tier1Store {
    static let attributeName = "user.geds.tier1"

    /// Files found at start: removed, or adopted (see `Tier1Leftovers`).
    func scanLeftovers(_ policy: Tier1Leftovers) {
        guard let dir = opendir(directory) else { return }
        var names: [String] = []
        while let entry = readdir(dir) {
            names.append(withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            })
        }
        closedir(dir)
        var adopted: [BlobID: Tier1Object] = [:]
        var removed = 0
        for name in names {
            let path = directory + "/" + name
            if name.hasSuffix(".partial"), BlobID(fileName: String(name.dropLast(8))) != nil {
                unlink(path)
                removed += 1
                continue
            }
            guard let blob = BlobID(fileName: name) else { continue }
            if policy == .adopt, let object = recordedObject(blob, path: path) {
                adopted[blob] = object
            } else {
                unlink(path)
                removed += 1
            }
        }
        if removed > 0 { log("removed \(removed) file(s) left in \(directory) by an earlier process") }
        guard !adopted.isEmpty else { return }
        state.withLock { state in
            for (blob, object) in adopted {
                state.objects[blob] = .stored(object)
                state.reserved += roundUp(object.size)
            }
        }
        let total = adopted.values.reduce(UInt64(0)) { $0 + $1.size }
        log("adopted \(adopted.count) object(s) (\(total) bytes) left in \(directory) by an earlier process")
    }

    func recordedObject(_ blob: BlobID, path: String) -> Tier1Object? {
        guard let fd = try? Tier1Store.open(path, .readOnly, [], simulateRefusal: false) else { return nil }
        defer { try? fd.close() }
        var value = [UInt8](repeating: 0, count: 64)
        // swift-system has no extended attributes.
        let length = clinux_fgetxattr(fd.rawValue, Tier1Store.attributeName, &value, value.count)
        guard length > 0 else { return nil }
        let fields = String(decoding: value.prefix(length), as: UTF8.self).split(separator: " ")
        guard fields.count == 2, let size = UInt64(fields[0]), let checksum = UInt32(fields[1], radix: 16),
              let status = try? fd.stat(), UInt64(status.size) == size else { return nil }
        return Tier1Object(blob: blob, size: size, checksum: checksum)
    }
}
