import Foundation
import GEDS
import GedsCore
#if canImport(Glibc)
import Glibc
#endif

/// The memory tier 0 takes for many small objects: `count` objects of 1 KiB put through the public API into this
/// process's node, then the bytes the memory file system backs for its tier-0 folder (st_blocks), beside the
/// `used_memory` of a redis-server holding the same values under the same keys; and how fast they were put (16
/// writers).
enum Tier0Memory {
    static let size = 1024
    /// The goal of the issue that asked for this figure: at most 1.25× the objects' bytes.
    static let goal = 1.25

    static func measure(geds: GEDS, bucket: String, folder: String, count: Int) async throws -> [Measurement] {
        // Printable, so that redis gets the same bytes in a plain RESP command.
        let payload = (0..<size).map { UInt8(0x21 + ($0 * 31 + 7) % 94) }
        let before = folderBytes(folder)
        let heapBefore = anonymousResidentBytes()
        progress("tier0-memory: \(count.formatted()) objects of 1 KiB into this process's node")
        let start = DispatchTime.now().uptimeNanoseconds
        try await NodeScale.put(count, of: payload, geds: geds, bucket: bucket, prefix: "memory/")
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let used = folderBytes(folder) - before
        let heap = anonymousResidentBytes() - heapBefore
        // A sample read back, every byte compared.
        for index in stride(from: 0, to: count, by: max(1, count / 1000)) {
            let got = try await geds.get(bucket: bucket, key: "memory/\(index)")
            precondition(got == payload, "object memory/\(index) read back wrong")
        }
        try await geds.delete(bucket: bucket, prefix: "memory/")

        let values = Double(count * size)
        let factor = Double(used) / values
        let redis = References.redisUsedMemory(count: count, value: payload)
        let reference = Reference("redis-server used_memory per 1 KiB value, same keys",
                                  redis.map { Double($0.loaded) / Double(count) })
        var result = Measurement(workload: Workload.tier0Memory.rawValue, transport: "none", size_bytes: size, objects: count,
                                 ops_per_s: Double(count) / seconds, bytes_per_object: Double(used) / Double(count))
        result.compare(with: reference, higherIsBetter: false, value: Double(used) / Double(count))
        let redisNote = (try? redis.get()).map { ", redis used_memory \(mebibytes($0.loaded)) (\(mebibytes($0.empty)) of it empty)" } ?? ""
        result.note = "tier-0 folder: \(mebibytes(used)) (\(used / count) B per object) for \(mebibytes(Int(values))) of values = "
            + String(format: "%.3f×", factor) + " (goal ≤ \(goal)×, " + (factor <= goal ? "met" : "NOT met") + ")"
            + "; the node process's anonymous resident memory grew \(mebibytes(heap)) (its index of the blobs; the MDS keeps the keys)"
            + redisNote
        return [result]
    }

    /// The bytes the file system backs for the files in `folder` (not in subfolders).
    static func folderBytes(_ folder: String) -> Int {
        var total = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] {
            var status = stat()
            if lstat(folder + "/" + name, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG { total += Int(status.st_blocks) * 512 }
        }
        return total
    }

    /// This process's resident memory that is not a file's (RssAnon): its heap, without the tier-0 pages it maps.
    static func anonymousResidentBytes() -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("RssAnon:") }),
              let kibibytes = Int(line.split(whereSeparator: \.isWhitespace).dropFirst().first ?? "") else { return 0 }
        return kibibytes * 1024
    }

    static func mebibytes(_ bytes: Int) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
}

extension References {
    /// A redis-server's `used_memory` before and after `count` SETs of `value` under the keys tier0-memory uses.
    static func redisUsedMemory(count: Int, value: [UInt8]) -> Result<(empty: Int, loaded: Int), Missing> {
        Result {
            let (process, port) = try startRedisServer()
            progress("reference: redis-server used_memory for \(count.formatted()) values of \(value.count) B")
            defer { process.terminate() }
            let connection = try RESPConnection.waitingForServer(port: port)
            let empty = try usedMemory(connection)
            let valueText = String(decoding: value, as: UTF8.self)
            precondition(valueText.utf8.count == value.count, "values are sent as they are: ASCII only")
            let batch = 100
            for start in stride(from: 0, to: count, by: batch) {
                let end = min(start + batch, count)
                var commands = ""
                for index in start..<end {
                    let key = "memory/\(index)"
                    commands += "*3\r\n$3\r\nSET\r\n$\(key.utf8.count)\r\n\(key)\r\n$\(value.count)\r\n\(valueText)\r\n"
                }
                try connection.send(commands)
                try connection.receive(exactly: (end - start) * "+OK\r\n".utf8.count)
            }
            return (empty, try usedMemory(connection))
        }.mapError { $0 as? Missing ?? Missing(reason: "\($0)") }
    }

    private static func usedMemory(_ connection: RESPConnection) throws -> Int {
        try connection.send("INFO memory\r\n")
        let info = try connection.receiveBulkString()
        guard let line = info.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("used_memory:") }),
              let bytes = Int(line.dropFirst("used_memory:".count)) else {
            throw Missing(reason: "redis-server's INFO memory had no used_memory")
        }
        return bytes
    }
}
