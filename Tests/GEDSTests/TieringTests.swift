import GedsTestSupport
@testable import GEDS
import GedsCore
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// Tier 0 with a capacity, spilling to a tier 1 on the repository's disk (O_DIRECT), and readers racing it.
@Suite(.serialized) struct TieringTests {
    static let MiB = 1 << 20

    /// Objects of 2 MiB into a tier 0 of 8 MiB (spills above 7.2 MiB, down to 6 MiB); readers on the owner's host
    /// and on another one (which publishes the copies it fetches).
    func withTieredOwner(tier1: Bool = true, inlineLimit: UInt32 = InlineContents.defaultLimit,
                         _ body: (_ owner: GEDS, _ sameHostReader: GEDS, _ otherHostReader: GEDS) async throws -> Void) async throws {
        let cluster = try await Cluster.start(inlineLimit: inlineLimit, folderPrefix: "geds-tiering")
        // The repository's file system takes O_DIRECT (tmpfs may not): .build/tmp, beside the sources.
        let repository = "/" + #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        var handles: [GEDS] = []
        do {
            handles.append(try await cluster.handle("owner", hostID: "host-t") { configuration in
                configuration.tier0Capacity = 8 << 20
                if tier1 {
                    configuration.tier1 = Tier1Configuration(directory: "\(repository)/.build/tmp/\(cluster.run)-tier1",
                                                             capacity: 64 << 20)
                }
            })
            handles.append(try await cluster.handle("reader", hostID: "host-t"))
            handles.append(try await cluster.handle("elsewhere", hostID: "host-e"))
            try await body(handles[0], handles[1], handles[2])
        } catch {
            await cluster.close(handles)
            throw error
        }
        await cluster.close(handles)
    }

    func tiers(_ geds: GEDS, _ key: String) async throws -> [Tier] {
        try await geds.stat(bucket: "tiers", key: key).locations.map(\.tier)
    }

    /// Waits for the background spill pass (tier 0 back under its high-water mark).
    func settle(_ owner: GEDS) async throws {
        for _ in 0..<200 where owner.node.tier0.usage.bytes > 7 << 20 { try await Task.sleep(for: .milliseconds(10)) }
    }

    @Test func spillsLeastRecentlyUsedAndReadersFollowTheMove() async throws {
        try await withTieredOwner { owner, reader, _ in
            try await owner.createBucket("tiers")
            var objects: [[UInt8]] = []
            try await owner.put(bucket: "tiers", key: "k0", bytes: randomBytes(2 * TieringTests.MiB, seed: 100))
            objects.append(randomBytes(2 * TieringTests.MiB, seed: 100))
            // A same-host reader opens k0 while it is in tier 0: its location is a file it would map.
            let early = try await reader.open(bucket: "tiers", key: "k0")
            #expect(early.info.locations.map(\.tier) == [.tier0])
            for index in 1..<6 {
                let bytes = randomBytes(2 * TieringTests.MiB, seed: 100 + UInt64(index))
                try await owner.put(bucket: "tiers", key: "k\(index)", bytes: bytes)
                objects.append(bytes)
                #expect(owner.node.tier0.usage.bytes <= 8 << 20)
            }
            try await settle(owner)
            // 12 MiB through 8 MiB: the oldest went to tier 1, the newest stayed.
            #expect(try await tiers(owner, "k0") == [.tier1])
            #expect(try await tiers(owner, "k1") == [.tier1])
            #expect(try await tiers(owner, "k5") == [.tier0])
            #expect(owner.node.tier1?.object(early.info.blob) != nil)
            #expect(!owner.node.tier0.contains(early.info.blob))

            // The reader's location is stale (the tier-0 file is gone): it looks again and reads through the
            // owner, which promotes k0 back into tier 0.
            #expect(try await early.read(at: 1000, length: 5000) == Array(objects[0][1000..<6000]))
            #expect(try await tiers(owner, "k0") == [.tier0])
            #expect(owner.node.tier1?.object(early.info.blob) == nil)
            #expect(owner.node.tier0.usage.bytes <= 8 << 20)
            try await settle(owner)

            // Every object reads back intact from the other node, whichever tier it is in now.
            for (index, bytes) in objects.enumerated() {
                let view = try await reader.open(bucket: "tiers", key: "k\(index)").view()
                #expect(sha256(view) == sha256(bytes), "k\(index)")
            }
            // And on the owner itself (its own tier-1 copies are promoted).
            for (index, bytes) in objects.enumerated() {
                #expect(try await owner.get(bucket: "tiers", key: "k\(index)") == bytes, "k\(index)")
                #expect(owner.node.tier0.usage.bytes <= 8 << 20)
            }
            // Deleting a spilled object removes its tier-1 file (with the owner's next heartbeat).
            try await settle(owner)
            let spilled = try await owner.stat(bucket: "tiers", key: "k0")
            #expect(spilled.locations.map(\.tier) == [.tier1])
            try await owner.delete(bucket: "tiers", key: "k0")
            for _ in 0..<300 where owner.node.tier1?.object(spilled.blob) != nil { try await Task.sleep(for: .milliseconds(10)) }
            #expect(owner.node.tier1?.object(spilled.blob) == nil)
        }
    }

    @Test func blobsWithAViewOpenAreNotSpilled() async throws {
        try await withTieredOwner { owner, _, _ in
            try await owner.createBucket("tiers")
            try await owner.put(bucket: "tiers", key: "k0", bytes: randomBytes(2 * TieringTests.MiB, seed: 0))
            var view: MappedBytes? = try await owner.open(bucket: "tiers", key: "k0").view()
            for index in 1..<5 {
                try await owner.put(bucket: "tiers", key: "k\(index)", bytes: randomBytes(2 * TieringTests.MiB, seed: UInt64(index)))
            }
            try await settle(owner)
            #expect(try await tiers(owner, "k0") == [.tier0])
            #expect(try await tiers(owner, "k1") == [.tier1])
            #expect(view.map(contents) == randomBytes(2 * TieringTests.MiB, seed: 0))
            view = nil
            // Closed: k0 is now the least recently used blob, and the next pass takes it.
            try await owner.put(bucket: "tiers", key: "k5", bytes: randomBytes(2 * TieringTests.MiB, seed: 5))
            try await settle(owner)
            #expect(try await tiers(owner, "k0") == [.tier1])
        }
    }

    /// Small objects live in slab slots: they count their slots against the capacity, spill from their slot to a
    /// tier-1 file and come back into a slot, and every reader gets their bytes throughout.
    @Test func packedObjectsSpillAndComeBack() async throws {
        try await withTieredOwner(inlineLimit: 0) { owner, reader, elsewhere in  // reads take the tiers, not the MDS
            try await owner.createBucket("tiers")
            let count = 800  // of 16 KiB: 12.5 MiB of slots into 8 MiB
            func bytes(_ index: Int) -> [UInt8] { randomBytes(16 << 10, seed: 7000 + UInt64(index)) }
            for index in 0..<count {
                try await owner.put(bucket: "tiers", key: "p\(index)", bytes: bytes(index))
                #expect(owner.node.tier0.usage.bytes <= 8 << 20)
            }
            try await settle(owner)
            #expect(try await tiers(owner, "p0") == [.tier1])
            #expect(try await tiers(owner, "p\(count - 1)") == [.tier0])
            let packed = try await owner.stat(bucket: "tiers", key: "p\(count - 1)").locations[0].nodeCopy
            #expect(packed?.offset != nil, "a tier-0 copy in a slot")
            for index in stride(from: 0, to: count, by: 7) {
                #expect(try await owner.get(bucket: "tiers", key: "p\(index)") == bytes(index), "p\(index) on its owner")
                #expect(try await reader.get(bucket: "tiers", key: "p\(index)") == bytes(index), "p\(index) on the same host")
                #expect(try await elsewhere.open(bucket: "tiers", key: "p\(index)").read(at: 100, length: 1000)
                        == Array(bytes(index)[100..<1100]), "p\(index) on another host")
            }
            #expect(try await tiers(owner, "p0") == [.tier0], "promoted back (into a slot)")
            #expect(try await owner.stat(bucket: "tiers", key: "p0").locations[0].nodeCopy?.offset != nil)
        }
    }

    @Test func capacityWithoutTier1IsAHardLimit() async throws {
        try await withTieredOwner(tier1: false) { owner, _, _ in
            try await owner.createBucket("tiers")
            for index in 0..<4 {
                try await owner.put(bucket: "tiers", key: "k\(index)", bytes: randomBytes(2 * TieringTests.MiB, seed: UInt64(index)))
            }
            let error = await gedsError {
                try await owner.put(bucket: "tiers", key: "k4", bytes: randomBytes(2 * TieringTests.MiB, seed: 4))
            }
            #expect(error?.code == .outOfSpace)
            #expect(error?.message.contains("no tier 1") == true)
            #expect(await gedsError { _ = try await owner.stat(bucket: "tiers", key: "k4") }?.code == .noSuchObject)
            #expect(try await owner.get(bucket: "tiers", key: "k3") == randomBytes(2 * TieringTests.MiB, seed: 3))
        }
    }

    @Test func aCorruptTier1CopyIsWithdrawnAndAnotherCopyServes() async throws {
        try await withTieredOwner { owner, reader, elsewhere in
            try await owner.createBucket("tiers")
            let k0 = randomBytes(2 * TieringTests.MiB, seed: 200)
            try await owner.put(bucket: "tiers", key: "k0", bytes: k0)
            // A second copy on another host (a cached copy, published), then k0 pushed out to the owner's tier 1.
            #expect(sha256(try await elsewhere.open(bucket: "tiers", key: "k0").view()) == sha256(k0))
            for index in 1..<6 {
                try await owner.put(bucket: "tiers", key: "k\(index)", bytes: randomBytes(2 * TieringTests.MiB, seed: 200 + UInt64(index)))
            }
            try await settle(owner)
            let info = try await owner.stat(bucket: "tiers", key: "k0")
            #expect(Set(info.locations.map { "\($0.tier) \($0.nodeCopy?.hostID ?? "")" }) == ["tier1 host-t", "tier0 host-e"])
            // The MDS hands out, with every copy, the checksum the owner recorded writing its tier-1 file (that it is
            // the CRC-32C of the bytes is checked in test_tier1.py, against Python's own computation).
            let recorded = try #require(owner.node.tier1?.object(info.blob)?.checksum)
            #expect(info.locations.map(\.checksum) == [recorded, recorded])

            // One flipped byte in the owner's tier-1 file.
            let path = try #require(owner.node.tier1?.path(of: info.blob))
            let fd = open(path, O_RDWR)
            var byte: UInt8 = 0
            #expect(pread(fd, &byte, 1, 777_777) == 1)
            byte ^= 0x40
            #expect(pwrite(fd, &byte, 1, 777_777) == 1)
            close(fd)

            // The same-host reader tries the owner first (same host), whose promotion fails its checksum; it then
            // reads the other copy: the bytes written.
            #expect(sha256(try await reader.open(bucket: "tiers", key: "k0").view()) == sha256(k0))
            // The corrupt copy was withdrawn and its file deleted: left are the other host's copy and the one the
            // reader just made (it publishes what it fetched). The other objects are untouched.
            let names = [elsewhere, reader].map(\.node.configuration.name)
            #expect(try await owner.stat(bucket: "tiers", key: "k0").locations.map { "\($0.tier) \($0.holder)" }.sorted()
                    == names.map { "tier0 \($0)" }.sorted())
            #expect(owner.node.tier1?.object(info.blob) == nil && access(path, F_OK) != 0)
            for index in 1..<6 {
                #expect(try await reader.get(bucket: "tiers", key: "k\(index)") == randomBytes(2 * TieringTests.MiB, seed: 200 + UInt64(index)))
            }
        }
    }

    /// Recycled files of a node with a capacity live only in the room its blobs leave under the high-water mark:
    /// copies fetched later push them out (the file a copy fits in is taken, not counted twice), so tier 0's memory
    /// stays within its capacity.
    @Test func recycledFilesGiveWayToCopies() async throws {
        let cluster = try await Cluster.start(leaseMilliseconds: 2000, folderPrefix: "geds-tiering")
        var handles: [GEDS] = []
        do {
            handles.append(try await cluster.handle("owner", hostID: "host-o"))
            handles.append(try await cluster.handle("reader", hostID: "host-r") { configuration in
                configuration.tier0Capacity = 8 << 20  // high water 7.2 MiB
                configuration.tier0RecycleBudget = 4 << 20
            })
            let (owner, reader) = (handles[0], handles[1])
            let tier0 = reader.node.tier0
            let highWater = UInt64(Double(8 << 20) * 0.9)
            try await owner.createBucket("recycle")
            func put(_ key: String, size: Int, seed: UInt64) async throws -> [UInt8] {
                let bytes = randomBytes(size, seed: seed)
                try await owner.put(bucket: "recycle", key: key, bytes: bytes)
                return bytes
            }
            for (index, key) in ["a1", "a2"].enumerated() {
                let bytes = try await put(key, size: 2 * TieringTests.MiB, seed: UInt64(index))
                #expect(sha256(try await reader.open(bucket: "recycle", key: key).view()) == sha256(bytes))
            }
            #expect(try await owner.delete(bucket: "recycle", prefix: "a") == 2)
            #expect(await eventually { tier0.usage.blobs == 0 })
            #expect(tier0.recycledFiles.files == 2 && tier0.recycledFiles.bytes == 4 << 20)

            // Copies of 3 MiB do not fit the recycled files of 2 MiB: fresh ones, and the recycled go as they come in.
            var views: [MappedBytes] = []
            for (index, key) in ["b1", "b2"].enumerated() {
                let bytes = try await put(key, size: 3 * TieringTests.MiB, seed: 10 + UInt64(index))
                views.append(try await reader.open(bucket: "recycle", key: key).view())
                #expect(sha256(views[index]) == sha256(bytes))
                #expect(tier0.usage.bytes + tier0.recycledFiles.bytes <= highWater)
            }
            #expect(tier0.usage.bytes == 6 << 20 && tier0.recycledFiles.files == 0)
        } catch {
            await cluster.close(handles)
            throw error
        }
        await cluster.close(handles)
    }
}
