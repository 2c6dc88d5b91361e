import Foundation
import GedsCore
import GedsTier0
import Testing
#if canImport(Glibc)
import Glibc
import GedsTestSupport
#endif

/// A fresh tier-0 folder under /dev/shm; tests remove it with everything in it (`defer { folder.remove() }`).
struct TempFolder {
    let path: String

    init(prefix: String = "geds-unit") {
        path = "/dev/shm/\(prefix)-\(UInt64.random(in: 0...UInt64.max))"
    }

    func remove() { removeTree(path) }
}


func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

func fileMode(_ path: String) -> mode_t? {
    var status = stat()
    guard stat(path, &status) == 0 else { return nil }
    return status.st_mode & 0o777
}


func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: state >> 33)
    }
}

extension MappedBytes {
    /// A copy of the bytes. `self` is alive for the whole call, so the mapping cannot be unmapped while it
    /// is copied (`Array(try store.map(x).bytes)` would read a temporary that is already released).
    var array: [UInt8] { Array(bytes) }
}

extension WritableBlob {
    func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { (raw) throws in try write(raw, at: offset) }
    }

    func read(count: Int, at offset: UInt64) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0xEE, count: count)
        let got = try buffer.withUnsafeMutableBytes { (raw) throws in try read(into: raw, at: offset) }
        return Array(buffer[..<got])
    }
}

@Suite struct WritableBlobTests {
    @Test func sparseOutOfOrderWritesReadBack() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path)
        let blob = try store.create(7)
        #expect(blob.blob == 7)
        #expect(blob.path == folder.path + "/0000000000000007")
        #expect(blob.size == 0)
        try blob.write(Array("world".utf8), at: 6)
        #expect(blob.size == 11)
        try blob.write(Array("hello ".utf8), at: 0)
        #expect(try blob.read(count: 100, at: 0) == Array("hello world".utf8))
        // A write far beyond the end leaves a hole of zeros.
        let far: UInt64 = 3 << 20
        try blob.write([0xAB, 0xCD], at: far)
        #expect(blob.size == far + 2)
        #expect(try blob.read(count: 16, at: 1 << 20) == [UInt8](repeating: 0, count: 16))
        #expect(try blob.read(count: 8, at: far - 3) == [0, 0, 0, 0xAB, 0xCD])
        #expect(try blob.read(count: 8, at: far + 2) == [])
        #expect(try blob.read(count: 8, at: far + 1000) == [])
        // Overwrite in the middle.
        try blob.write(Array("W".utf8), at: 6)
        #expect(try blob.read(count: 11, at: 0) == Array("hello World".utf8))
        #expect(store.contains(7) == false, "not sealed yet")
        #expect(store.size(of: 7) == nil)
    }

    @Test func truncateShrinksAndGrows() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path)
        let blob = try store.create(1)
        let data = pattern(10_000, seed: 1)
        try blob.write(data, at: 0)
        try blob.truncate(to: 4000)
        #expect(blob.size == 4000)
        #expect(try blob.read(count: 10_000, at: 0) == Array(data[..<4000]))
        try blob.truncate(to: 5000)
        #expect(try blob.read(count: 10_000, at: 0) == Array(data[..<4000]) + [UInt8](repeating: 0, count: 1000))
        try blob.truncate(to: 0)
        #expect(blob.size == 0)
        #expect(try blob.read(count: 10, at: 0) == [])
        try blob.write([1, 2, 3], at: 2)
        #expect(try blob.read(count: 10, at: 0) == [0, 0, 1, 2, 3])
        #expect(try blob.seal() == 5)
        #expect(try store.map(1).array == [0, 0, 1, 2, 3])
    }

    @Test func sealMakesTheBlobImmutable() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path)
        let blob = try store.create(0xABC)
        let data = pattern(70_000, seed: 2)
        try blob.write(data, at: 0)
        #expect(try blob.seal() == 70_000)
        #expect(store.contains(0xABC))
        #expect(store.size(of: 0xABC) == 70_000)
        #expect(store.inventory == [0xABC: 70_000])
        #expect(store.usage.blobs == 1 && store.usage.bytes == 70_000)
        #expect(fileMode(store.path(of: 0xABC)) == 0o444)

        #expect(gedsError { try blob.write([1], at: 0) }?.code == .objectSealed)
        #expect(gedsError { try blob.write([1], at: 70_000) }?.code == .objectSealed)
        #expect(gedsError { try blob.truncate(to: 1) }?.code == .objectSealed)
        #expect(gedsError { _ = try blob.seal() }?.code == .objectSealed)
        #expect(blob.size == 70_000)
        #expect(try store.map(0xABC).array == data)
    }

    @Test func emptyBlob() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path)
        let blob = try store.create(5)
        #expect(try blob.seal() == 0)
        #expect(store.size(of: 5) == 0)
        let mapping = try store.map(5)
        #expect(mapping.count == 0)
        #expect(mapping.bytes.isEmpty)
    }

    @Test func blobIDsAreExclusive() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path)
        let first = try store.create(9)
        let error = gedsError { _ = try store.create(9) }
        #expect(error?.code == .io)
        try first.write([1], at: 0)
        _ = try first.seal()
        #expect(gedsError { _ = try store.create(9) }?.code == .io)
        #expect(try store.map(9).array == [1])
    }

    @Test func unsealedBlobIsRemovedWhenDropped() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, packLimit: 0)  // files only: this is about them
        var blob: WritableBlob? = try store.create(3)
        try blob!.write([1, 2, 3], at: 0)
        #expect(fileExists(store.path(of: 3)))
        blob = nil
        #expect(!fileExists(store.path(of: 3)))
        // A sealed one stays.
        var sealed: WritableBlob? = try store.create(4)
        try sealed!.write([4], at: 0)
        _ = try sealed!.seal()
        sealed = nil
        #expect(fileExists(store.path(of: 4)))
        #expect(try store.map(4).array == [4])
    }

    @Test func concurrentWritesAtDisjointOffsets() async throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path)
        let blob = try store.create(11)
        let chunk = 64 << 10
        let chunks = 48
        let data = pattern(chunk * chunks, seed: 3)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in (0..<chunks).reversed() {
                group.addTask {
                    try blob.write(Array(data[(index * chunk)..<((index + 1) * chunk)]), at: UInt64(index * chunk))
                }
            }
            try await group.waitForAll()
        }
        #expect(blob.size == UInt64(data.count))
        _ = try blob.seal()
        #expect(try store.map(11).array == data)
    }
}

@Suite struct MappingTests {
    @Test func mapIsZeroCopyAndStableAfterRemove() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path)
        let data = pattern(1 << 20 | 123, seed: 4)
        let blob = try store.create(0x77)
        try blob.write(data, at: 0)
        _ = try blob.seal()

        let first = try store.map(0x77)
        let second = try store.map(0x77)
        #expect(first.count == data.count)
        #expect(first.array == data)
        #expect(first.array == second.array)
        // The view is the mapping itself: its bytes start at `base`, which lies in a shared, read-only
        // mapping of the blob's file.
        let base = try #require(first.base)
        #expect(first.bytes.baseAddress == UnsafeRawPointer(base))
        let region = try #require(mappingOf(base))
        #expect(region.path == store.path(of: 0x77))
        #expect(region.permissions == "r--s")
        let last = try #require(mappingOf(base + (data.count - 1)))
        #expect(last.path == store.path(of: 0x77))
        #expect(mappingOf(try #require(second.base))?.path == store.path(of: 0x77))

        // Removing the blob ends it for the store, not for views already handed out.
        store.remove(0x77)
        #expect(!store.contains(0x77))
        #expect(!fileExists(store.path(of: 0x77)))
        #expect(gedsError { _ = try store.map(0x77) }?.code == .noSuchBlob)
        #expect(first.array == data)
        #expect(second.array == data)
        #expect(mappingOf(base)?.path.hasPrefix(store.path(of: 0x77)) == true)  // "... (deleted)"
        store.remove(0x77)  // twice is harmless
    }

    @Test func mapByPathReadsAnotherStoresBlob() throws {
        let folderA = TempFolder()
        defer { folderA.remove() }
        let folderB = TempFolder()
        defer { folderB.remove() }
        let a = try Tier0Store(directory: folderA.path, packLimit: 0)  // blobs in files of their own (see SlabTests)
        let b = try Tier0Store(directory: folderB.path, packLimit: 0)
        let data = pattern(5000, seed: 5)
        let blob = try a.create(21)
        try blob.write(data, at: 0)
        _ = try blob.seal()
        #expect(try Tier0Store.map(path: a.path(of: 21)).array == data)
        #expect(gedsError { _ = try Tier0Store.map(path: b.path(of: 21)) }?.code == .noSuchBlob)
        // Same file system: adopting is a hard link, no copy.
        #expect(b.adopt(21, linkingFrom: a.path(of: 21)))
        #expect(b.contains(21) && b.size(of: 21) == 5000)
        a.remove(21)
        #expect(try b.map(21).array == data)
        #expect(!b.adopt(22, linkingFrom: a.path(of: 22)))
        #expect(!b.contains(22))
    }

    @Test func openForReading() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, packLimit: 0)
        let data = pattern(3000, seed: 6)
        let blob = try store.create(2)
        try blob.write(data, at: 0)
        #expect(gedsError { _ = try store.openForReading(2) }?.code == .noSuchBlob)
        _ = try blob.seal()
        let (descriptor, offset, size) = try store.openForReading(2)
        defer { try? descriptor.close() }
        #expect(size == 3000 && offset == 0)
        var buffer = [UInt8](repeating: 0, count: 4000)
        let got = buffer.withUnsafeMutableBytes { pread(descriptor.rawValue, $0.baseAddress!, 4000, 0) }
        #expect(got == 3000)
        #expect(Array(buffer[..<3000]) == data)
        #expect(gedsError { _ = try store.openForReading(999) }?.code == .noSuchBlob)
    }
}

@Suite struct ReceiveTests {
    @Test func receiveStoreSeal() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path)
        let data = pattern(300_001, seed: 7)
        let receiving = try store.receive(0x42, size: UInt64(data.count))
        #expect(receiving.blob == 0x42)
        #expect(receiving.mapping.count == data.count)
        let base = try #require(receiving.mapping.base)
        // Received into a partial file of its own, renamed to the blob's name at seal.
        #expect(mappingOf(base)?.path.hasPrefix(store.path(of: 0x42) + ".") == true)
        #expect(mappingOf(base)?.path.hasSuffix(".partial") == true)
        #expect(mappingOf(base)?.permissions == "rw-s")
        // Chunks arrive in any order.
        let chunk = 65_536
        let starts = Array(stride(from: 0, to: data.count, by: chunk)).reversed()
        for start in starts {
            let end = min(start + chunk, data.count)
            #expect(data[start..<end].withUnsafeBytes { receiving.mapping.store($0, at: start) })
        }
        // Nothing is written outside the mapping.
        #expect(![UInt8](repeating: 1, count: 2).withUnsafeBytes { receiving.mapping.store($0, at: data.count - 1) })
        #expect(![UInt8](repeating: 1, count: 1).withUnsafeBytes { receiving.mapping.store($0, at: data.count) })
        #expect(![UInt8](repeating: 1, count: 1).withUnsafeBytes { receiving.mapping.store($0, at: -1) })
        #expect(![UInt8](repeating: 1, count: 1).withUnsafeBytes { receiving.mapping.store($0, at: .max) })
        #expect([UInt8]().withUnsafeBytes { receiving.mapping.store($0, at: data.count) })
        #expect(!store.contains(0x42))
        try receiving.seal()
        #expect(store.contains(0x42))
        #expect(store.size(of: 0x42) == UInt64(data.count))
        #expect(fileMode(store.path(of: 0x42)) == 0o444)
        let mapped = try store.map(0x42)
        #expect(mapped.array == data)
        #expect(receiving.mapping.array == mapped.array)
    }

    @Test func unsealedReceiveIsRemovedWhenDropped() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, packLimit: 0)
        func partials() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0.hasSuffix(".partial") }
        }
        var receiving: ReceivingBlob? = try store.receive(8, size: 100)
        // A copy being received is a partial file of its own; the blob's name appears only at seal.
        #expect(partials().count == 1)
        #expect(!fileExists(store.path(of: 8)))
        let mapping = receiving!.mapping
        receiving = nil
        #expect(partials().isEmpty)
        #expect(!fileExists(store.path(of: 8)))
        #expect(!store.contains(8))
        #expect(mapping.count == 100)  // the mapping itself is still usable
    }

    @Test func emptyReceive() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path)
        let receiving = try store.receive(12, size: 0)
        #expect(receiving.mapping.count == 0)
        try receiving.seal()
        #expect(store.size(of: 12) == 0)
        #expect(try store.map(12).count == 0)
    }
}

@Suite struct StoreFolderTests {
    @Test func createsNestedFoldersAndClearsLeftovers() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let nested = folder.path + "/a/b/c"
        let first = try Tier0Store(directory: nested)
        #expect(first.directory == nested)
        let blob = try first.create(0x10)
        try blob.write([1, 2, 3], at: 0)
        _ = try blob.seal()
        let stray = nested + "/notes.txt"
        let partial = nested + "/0000000000000011.partial"
        for path in [stray, partial] {
            let fd = open(path, O_CREAT | O_WRONLY, 0o644)
            #expect(fd >= 0)
            close(fd)
        }
        // A new store on the same folder: blobs of the earlier process are gone, other files stay.
        let second = try Tier0Store(directory: nested)
        #expect(!fileExists(first.path(of: 0x10)))
        #expect(!fileExists(partial))
        #expect(fileExists(stray))
        #expect(second.inventory.isEmpty)
        #expect(second.usage.blobs == 0 && second.usage.bytes == 0)
    }

    @Test func usageCountsSealedBlobs() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, packLimit: 0)  // packed blobs count their slots (SlabTests)
        var total: UInt64 = 0
        for id in UInt64(1)...20 {
            let blob = try store.create(BlobID(id))
            try blob.write(pattern(Int(id) * 100, seed: id), at: 0)
            total += try blob.seal()
        }
        _ = try store.create(99)  // unsealed: not counted
        #expect(store.usage.blobs == 20 && store.usage.bytes == total)
        #expect(store.inventory.count == 20)
        store.remove(1)
        #expect(store.usage.blobs == 19 && store.usage.bytes == total - 100)
    }

    @Test func refusesAFolderItCannotCreate() {
        #expect(gedsError { _ = try Tier0Store(directory: "/proc/geds-cannot-exist/t0") } != nil)
    }
}

struct ScenarioFailure: Error {
    var description: String
}

@Suite struct HugeOffsetTests {
    /// Offsets are UInt64: any value must give an error (the file system cannot go there), never a trap.
    /// Run in a child process (an exit test), so that a crash fails this test instead of the whole run.
    @Test func hugeOffsetsAreErrorsNotCrashes() async {
        await #expect(processExitsWith: .success) {
            let folder = TempFolder(prefix: "geds-unit-huge")
            defer { folder.remove() }
            let store = try Tier0Store(directory: folder.path)
            let blob = try store.create(1)
            for offset in [UInt64(Int64.max) - 4, UInt64(Int64.max), UInt64(Int64.max) + 1, UInt64.max - 4] {
                guard gedsError({ try blob.write([1, 2, 3, 4, 5, 6, 7, 8], at: offset) }) != nil else {
                    throw ScenarioFailure(description: "a write at \(offset) succeeded")
                }
            }
            guard gedsError({ try blob.truncate(to: .max) }) != nil else {
                throw ScenarioFailure(description: "truncating to UInt64.max succeeded")
            }
            // The blob is still usable afterwards.
            try blob.write([9], at: 0)
            guard blob.size == 1, try blob.seal() == 1, try store.map(1).array == [9] else {
                throw ScenarioFailure(description: "the blob changed after failed writes")
            }
        }
        removeFolders(prefix: "geds-unit-huge-")
    }
}

func removeFolders(prefix: String) {
    guard let dir = opendir("/dev/shm") else { return }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name.hasPrefix(prefix) { names.append(name) }
    }
    closedir(dir)
    for name in names { removeTree("/dev/shm/" + name) }
}
