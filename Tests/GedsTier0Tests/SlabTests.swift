import Foundation
import GedsCore
@testable import GedsTier0
import Testing
import GedsTestSupport
#if canImport(Glibc)
import Glibc
#endif

extension Tier0Store {
    /// Writes and seals a blob of `bytes`.
    func put(_ blob: BlobID, _ bytes: [UInt8]) throws {
        let writable = try create(blob)
        try writable.write(bytes, at: 0)
        _ = try writable.seal()
    }

    /// Receives a blob of `bytes` as a copy from a peer would arrive.
    func receiveWhole(_ blob: BlobID, _ bytes: [UInt8]) throws {
        let receiving = try receive(blob, size: UInt64(bytes.count))
        #expect(bytes.withUnsafeBytes { receiving.mapping.store($0, at: 0) })
        try receiving.seal()
    }
}

/// The bytes of the files in `folder` that the file system backs (st_blocks).
func backedBytes(of folder: String) -> UInt64 {
    var total: UInt64 = 0
    for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] {
        var status = stat()
        if stat(folder + "/" + name, &status) == 0 { total += UInt64(status.st_blocks) * 512 }
    }
    return total
}

@Suite struct SlabTests {
    @Test func slotSizesWasteAtMostAQuarter() {
        let limit = Tier0Store.defaultPackLimit
        let classes = SlotSizes.classes(upTo: limit)
        #expect(classes.allSatisfy { $0 % 8 == 0 })
        for size in 1...limit {
            let slot = classes.first { $0 >= size + SlotHeader.size }
            #expect(slot != nil)
            if size >= 103, let slot, Double(slot) > 1.25 * Double(size) {
                Issue.record("a blob of \(size) bytes takes a slot of \(slot)")
                return
            }
        }
        #expect(classes.contains(1024 + SlotHeader.size))
    }

    /// A blob stored whole from bytes in hand (a put): packed into a slot when small, a file of its own when large; it
    /// reads back the bytes stored.
    @Test func storedBytesReadBackPackedWhenSmallAndFromAFileWhenLarge() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, quarantine: .zero)
        let small = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        let large = (0..<(Tier0Store.defaultPackLimit + 1)).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
        for (blob, bytes) in [(BlobID(1), small), (BlobID(2), large)] {
            try bytes.withUnsafeBytes { try store.store(blob, bytes: $0) }
            #expect(store.size(of: blob) == UInt64(bytes.count))
            let mapping = try store.map(blob)
            withExtendedLifetime(mapping) { #expect(Array(mapping.bytes) == bytes, "blob \(blob)") }
        }
        #expect(store.place(of: 1).slot != nil, "a small blob is packed")
        #expect(store.place(of: 2).slot == nil && FileManager.default.fileExists(atPath: store.path(of: 2)))
        try [UInt8]().withUnsafeBytes { try store.store(3, bytes: $0) }
        #expect(store.size(of: 3) == 0)
    }

    /// Blobs of mixed sizes (packed and not), written and received, deleted and replaced (reusing the freed
    /// slots): every blob reads back its own bytes throughout.
    @Test func mixedSizesWrittenReadDeletedReused() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, quarantine: .zero)
        var generator = SystemRandomNumberGenerator()
        var expected: [BlobID: [UInt8]] = [:]
        func add(_ blob: BlobID) throws {
            let size = [Int.random(in: 1...200, using: &generator), Int.random(in: 1...5000, using: &generator),
                        Int.random(in: 1...70_000, using: &generator)].randomElement(using: &generator)!
            let bytes = pattern(size, seed: blob.rawValue)
            if blob.rawValue % 2 == 0 { try store.put(blob, bytes) } else { try store.receiveWhole(blob, bytes) }
            expected[blob] = bytes
        }
        func check() throws {
            for (blob, bytes) in expected {
                #expect(try store.map(blob).array == bytes, "blob \(blob)")
                let (descriptor, offset, size) = try store.openForReading(blob)
                defer { try? descriptor.close() }
                var read = [UInt8](repeating: 0, count: Int(size))
                let got = read.withUnsafeMutableBytes { pread(descriptor.rawValue, $0.baseAddress, Int(size), off_t(offset)) }
                #expect(got == bytes.count && read == bytes, "blob \(blob) through its descriptor")
            }
        }
        for id in UInt64(1)...1500 { try add(BlobID(id)) }
        try check()
        let packed = expected.keys.filter { store.place(of: $0).slot != nil }
        #expect(packed.count > 1000)
        let slotsBefore = Set(packed.map { store.place(of: $0).slot! })
        for blob in expected.keys.filter({ $0.rawValue % 3 == 0 }) {
            store.remove(blob)
            expected[blob] = nil
        }
        for id in UInt64(2001)...2500 { try add(BlobID(id)) }
        try check()
        // Freed slots were used again.
        let reused = expected.keys.filter { $0 > 2000 }.compactMap { store.place(of: $0).slot }.filter(slotsBefore.contains)
        #expect(!reused.isEmpty)
        #expect(store.usage.blobs == UInt64(expected.count))
    }

    @Test func aViewKeepsItsSlotAcrossADelete() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, quarantine: .zero)
        let data = pattern(1024, seed: 1)
        try store.put(1, data)
        let slot = try #require(store.place(of: 1).slot)
        var view: MappedBytes? = try store.map(1)
        // Zero-copy: the view lies in the slab's shared mapping.
        #expect(mappingOf(try #require(view?.base))?.path == folder.path + "/" + slot.fileName)
        store.remove(1)
        #expect(!store.contains(1))
        #expect(gedsError { _ = try store.map(1) }?.code == .noSuchBlob)
        for id in UInt64(2)...50 { try store.put(BlobID(id), pattern(1024, seed: id)) }
        #expect(view?.array == data)
        #expect(!(UInt64(2)...50).contains { store.place(of: BlobID($0)).slot == slot }, "the viewed slot is not handed out again")
        view = nil
        try store.put(51, pattern(1024, seed: 51))
        #expect(store.place(of: 51).slot == slot, "free again once the view went")
        #expect(try store.map(51).array == pattern(1024, seed: 51))
    }

    @Test func aStaleLocationFindsNoSuchBlobNotOtherBytes() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, quarantine: .zero)
        let data = pattern(3000, seed: 7)
        try store.put(7, data)
        let (path, slot) = store.place(of: 7)
        let offset = try #require(slot).offset
        #expect(try Tier0Store.copy(7, size: 3000, packedIn: path, at: offset).array == data)
        #expect(gedsError { _ = try Tier0Store.copy(7, size: 2999, packedIn: path, at: offset) }?.code == .noSuchBlob)
        store.remove(7)
        #expect(gedsError { _ = try Tier0Store.copy(7, size: 3000, packedIn: path, at: offset) }?.code == .noSuchBlob)
        try store.put(8, pattern(3000, seed: 8))
        #expect(store.place(of: 8).slot == slot, "the slot was reused")
        #expect(gedsError { _ = try Tier0Store.copy(7, size: 3000, packedIn: path, at: offset) }?.code == .noSuchBlob)
        #expect(try Tier0Store.copy(8, size: 3000, packedIn: path, at: offset).array == pattern(3000, seed: 8))
        #expect(gedsError { _ = try Tier0Store.copy(8, size: 3000, packedIn: path + "-gone", at: offset) }?.code == .noSuchBlob)
    }

    @Test func aFreedSlotWaitsOutItsQuarantine() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, quarantine: .milliseconds(300))
        try store.put(1, pattern(500, seed: 1))
        let slot = store.place(of: 1).slot
        store.remove(1)
        try store.put(2, pattern(500, seed: 2))
        #expect(store.place(of: 2).slot != slot)
        usleep(400_000)
        try store.put(3, pattern(500, seed: 3))
        #expect(store.place(of: 3).slot == slot)
    }

    @Test func packedBlobsCountTheirSlotsAndSlabsGoAtStart() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path)
        try store.put(1, pattern(1024, seed: 1))
        try store.receiveWhole(2, pattern(1024, seed: 2))
        #expect(store.usage.blobs == 2 && store.usage.bytes == 2 * 1040)
        #expect(store.inventory == [1: 1024, 2: 1024])
        #expect(!fileExists(store.path(of: 1)) && !fileExists(store.path(of: 2)))
        store.remove(1)
        #expect(store.usage.blobs == 1 && store.usage.bytes == 1040)
        let slab = store.place(of: 2).path
        #expect(fileExists(slab))
        _ = try Tier0Store(directory: folder.path)
        #expect(!fileExists(slab))
    }

    /// The goal of packing: 20,000 objects of 1 KiB take at most 1.25× their bytes of the memory file system
    /// (one file each took 4×).
    @Test func twentyThousandSmallObjectsTakeLittleMoreThanTheirBytes() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path)
        let count = 20_000
        for id in 1...UInt64(count) {
            let blob = BlobID(id), bytes = pattern(1024, seed: id)
            if id % 2 == 0 { try store.put(blob, bytes) } else { try store.receiveWhole(blob, bytes) }
        }
        let used = backedBytes(of: folder.path)
        let payload = UInt64(count * 1024)
        #expect(Double(used) <= 1.25 * Double(payload), "\(used) bytes of tmpfs for \(payload) bytes of objects")
        for id in stride(from: UInt64(1), through: UInt64(count), by: 997) {
            #expect(try store.map(BlobID(id)).array == pattern(1024, seed: id))
        }
    }
}
