import GedsTestSupport
import Crypto
@testable import GEDS
import GedsCore
import GedsMDS
import Testing

let twoHosts: [(name: String, hostID: String, role: NodeRole)] = [("a", "host-a", .embedded), ("b", "host-b", .embedded)]

@Suite(.serialized) struct GEDSIntegrationTests {
    /// Objects written on one host read on another: whole (a copy fetched into the reader's tier 0, then
    /// mapped) and in ranges (straight into caller memory over TCP), compared by SHA-256 and byte by byte.
    /// Small objects' bytes stay off the MDS here, so that they cross the data plane too.
    @Test func bytesCrossHostsIntact() async throws {
        try await withCluster(twoHosts, inlineLimit: 0) { _, handles in
            try await GEDSIntegrationTests.crossHosts(a: handles[0], b: handles[1])
        }
    }

    static func crossHosts(a: GEDS, b: GEDS) async throws {
        try await a.createBucket("data")
        let sizes = [0, 1, 4095, 4097, (1 << 20) + 1, (64 << 20) + 3]
        var random = SplitMix64(seed: 2024)
        for (index, size) in sizes.enumerated() {
            let key = "objects/size-\(size)"
            let bytes = randomBytes(size, seed: UInt64(index + 1))
            let digest = sha256(bytes)
            if size > 8 << 20 {
                // Big ones through a writer, in chunks written back to front.
                let writer = try await a.create(bucket: "data", key: key)
                let chunk = 4 << 20
                try bytes.withUnsafeBytes { raw in
                    for start in stride(from: 0, to: size, by: chunk).reversed() {
                        try writer.write(UnsafeRawBufferPointer(rebasing: raw[start..<min(start + chunk, size)]), at: UInt64(start))
                    }
                }
                #expect(writer.size == UInt64(size))
                try await writer.seal(metadata: ["size": "\(size)"])
            } else {
                try await a.put(bucket: "data", key: key, bytes: bytes, metadata: ["size": "\(size)"])
            }

            let info = try await b.stat(bucket: "data", key: key)
            #expect(info.size == UInt64(size) && info.sealed && info.metadata == ["size": "\(size)"])
            #expect(info.locations.map(\.holder) == [a.node.configuration.name])

            // Ranges first, so that they travel over TCP from a (b holds no copy yet).
            let reader = try await b.open(bucket: "data", key: key)
            #expect(reader.size == UInt64(size))
            var ranges: [(offset: Int, length: Int)] = [(0, size), (0, 1), (max(size - 1, 0), 1), (size, 10),
                                                         (max(size - 3, 0), 100), (size / 2, 0)]
            for _ in 0..<12 where size > 0 {
                let offset = Int(random.next() % UInt64(size))
                ranges.append((offset, Int(random.next() % UInt64(min(size - offset, 300_000) + 1))))
            }
            for range in ranges {
                let got = try await reader.read(at: UInt64(range.offset), length: range.length)
                let end = min(range.offset + range.length, size)
                let want = range.offset < size ? Array(bytes[range.offset..<end]) : []
                #expect(got.count == want.count && got == want, "size \(size): read \(range.length) at \(range.offset)")
            }
            #expect(!b.node.tier0.contains(info.blob), "ranged reads leave no copy behind")

            // Into caller memory, without the array convenience.
            if size > 0 {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 64)
                defer { buffer.deallocate() }
                let offset = UInt64(size / 3)
                let count = try await reader.read(at: offset, into: buffer)
                #expect(count == min(4096, size - Int(offset)))
                #expect(Array(buffer[..<count]) == Array(bytes[Int(offset)..<(Int(offset) + count)]))
            }

            // The whole object: a zero-copy view of b's own copy.
            let view = try await reader.view()
            #expect(view.count == size)
            #expect(sha256(view) == digest, "size \(size)")
            if size > 0 {
                #expect(view.bytes.baseAddress == UnsafeRawPointer(view.base))
                #expect(mappedFile(of: view) == b.node.tier0.place(of: info.blob).path, "the view maps b's tier-0 file (or slab)")
                #expect(b.node.tier0.contains(info.blob))
            }
            let again = try await b.open(bucket: "data", key: key).view()
            #expect(sha256(again) == digest)
            if size > 0 { #expect(mappedFile(of: again) == b.node.tier0.place(of: info.blob).path) }
            // The writer maps its own file.
            let own = try await a.open(bucket: "data", key: key).view()
            #expect(sha256(own) == digest)
            if size > 0 { #expect(mappedFile(of: own) == a.node.tier0.place(of: info.blob).path) }
            if size <= 4 << 20 {
                #expect(try await b.get(bucket: "data", key: key) == bytes)
                #expect(try await a.get(bucket: "data", key: key) == bytes)
            }
            // b published its copy as a second location.
            let after = try await a.stat(bucket: "data", key: key)
            #expect(Set(after.locations.map(\.holder)) == [a.node.configuration.name, b.node.configuration.name])
            #expect(after.blob == info.blob)
        }
        let listed = try await b.listAll(bucket: "data", prefix: "objects/")
        #expect(listed.objects.map(\.key) == sizes.map { "objects/size-\($0)" }.sorted())
        #expect(listed.objects.map(\.size).sorted() == sizes.map(UInt64.init).sorted())
    }

    @Test func concurrentRangedReads() async throws {
        try await withCluster(twoHosts) { _, handles in
            let (a, b) = (handles[0], handles[1])
            try await a.createBucket("conc")
            let bytes = randomBytes((3 << 20) + 17, seed: 9)
            try await a.put(bucket: "conc", key: "k", bytes: bytes)
            let reader = try await b.open(bucket: "conc", key: "k")
            let results = try await withThrowingTaskGroup(of: (Int, [UInt8]).self) { group in
                for index in 0..<24 {
                    group.addTask {
                        let offset = index * 131_071
                        return (offset, try await reader.read(at: UInt64(offset), length: 200_000))
                    }
                }
                var results: [(Int, [UInt8])] = []
                for try await result in group { results.append(result) }
                return results
            }
            #expect(results.count == 24)
            for (offset, got) in results {
                #expect(got == Array(bytes[offset..<min(offset + 200_000, bytes.count)]), "read at \(offset)")
            }
        }
    }

    @Test func namespaceOperationsAcrossHandles() async throws {
        try await withCluster(twoHosts) { _, handles in
            let (a, b) = (handles[0], handles[1])
            try await a.createBucket("ns-one")
            try await b.createBucket("ns-two")
            #expect(try await b.listBuckets() == ["ns-one", "ns-two"])
            #expect(await gedsError { try await b.createBucket("ns-one") }?.code == .bucketExists)
            #expect(await gedsError { try await a.createBucket("Bad_Bucket") }?.code == .invalidName)
            #expect(await gedsError { try await a.put(bucket: "ns-one", key: "", bytes: [1]) }?.code == .invalidName)
            #expect(await gedsError { try await a.put(bucket: "no-such-bucket", key: "k", bytes: [1]) }?.code == .noSuchBucket)

            var contents: [String: [UInt8]] = [:]
            for (index, key) in ["dir/a", "dir/b", "dir/sub/c", "dir/sub/d/e", "top", "zeta/1"].enumerated() {
                let bytes = randomBytes(1000 + index * 3001, seed: UInt64(100 + index))
                contents[key] = bytes
                try await (index % 2 == 0 ? a : b).put(bucket: "ns-one", key: key, bytes: bytes, metadata: ["i": "\(index)"])
            }
            // Listing from either handle.
            for handle in [a, b] {
                let page = try await handle.list(bucket: "ns-one", prefix: "dir/", delimiter: "/")
                #expect(page.objects.map(\.key) == ["dir/a", "dir/b"])
                #expect(page.commonPrefixes == ["dir/sub/"])
                #expect(page.nextStartAfter == nil)
                #expect(page.objects.map(\.size) == [1000, 4001])
                let top = try await handle.list(bucket: "ns-one", delimiter: "/")
                #expect(top.objects.map(\.key) == ["top"])
                #expect(top.commonPrefixes == ["dir/", "zeta/"])
                let all = try await handle.listAll(bucket: "ns-one")
                #expect(all.objects.map(\.key) == contents.keys.sorted())
                let first = try await handle.list(bucket: "ns-one", maxKeys: 2)
                #expect(first.objects.map(\.key) == ["dir/a", "dir/b"] && first.nextStartAfter == "dir/b")
                let second = try await handle.list(bucket: "ns-one", startAfter: "dir/b", maxKeys: 2)
                #expect(second.objects.map(\.key) == ["dir/sub/c", "dir/sub/d/e"])
            }

            // Rename on b of an object a wrote: a reads it under the new name only.
            try await b.rename(bucket: "ns-one", key: "dir/a", toBucket: "ns-two", toKey: "moved/a")
            #expect(await gedsError { _ = try await a.stat(bucket: "ns-one", key: "dir/a") }?.code == .noSuchObject)
            #expect(try await a.get(bucket: "ns-two", key: "moved/a") == contents["dir/a"])
            #expect(try await b.get(bucket: "ns-two", key: "moved/a") == contents["dir/a"])
            #expect(try await a.metadata(bucket: "ns-two", key: "moved/a") == ["i": "0"])
            // Rename onto an existing key replaces it.
            try await a.rename(bucket: "ns-one", key: "zeta/1", toBucket: "ns-one", toKey: "top")
            #expect(try await b.get(bucket: "ns-one", key: "top") == contents["zeta/1"])
            #expect(await gedsError { _ = try await b.get(bucket: "ns-one", key: "zeta/1") }?.code == .noSuchObject)
            contents["top"] = contents["zeta/1"]
            contents["zeta/1"] = nil

            // Copy shares the bytes; deleting the source keeps the copy readable.
            try await a.copy(bucket: "ns-one", key: "dir/b", toBucket: "ns-two", toKey: "copy/b")
            let source = try await a.stat(bucket: "ns-one", key: "dir/b")
            let copy = try await b.stat(bucket: "ns-two", key: "copy/b")
            #expect(copy.blob == source.blob && copy.size == source.size)
            try await a.delete(bucket: "ns-one", key: "dir/b")
            #expect(await gedsError { _ = try await b.get(bucket: "ns-one", key: "dir/b") }?.code == .noSuchObject)
            #expect(try await a.get(bucket: "ns-two", key: "copy/b") == contents["dir/b"])
            #expect(try await b.get(bucket: "ns-two", key: "copy/b") == contents["dir/b"])

            // Metadata set on one handle is seen by the other.
            try await b.setMetadata(bucket: "ns-one", key: "top", ["content-type": "application/x-test", "owner": "b"])
            #expect(try await a.metadata(bucket: "ns-one", key: "top") == ["content-type": "application/x-test", "owner": "b"])
            #expect(await gedsError { try await a.setMetadata(bucket: "ns-one", key: "top", ["bad name": "x"]) }?.code == .invalidArgument)
            #expect(await gedsError {
                try await a.setMetadata(bucket: "ns-one", key: "top", ["big": String(repeating: "x", count: 3000)])
            }?.code == .metadataTooLarge)
            #expect(try await b.metadata(bucket: "ns-one", key: "top")["owner"] == "b")

            // Delete by prefix.
            #expect(try await b.delete(bucket: "ns-one", prefix: "dir/") == 2)
            #expect(try await a.list(bucket: "ns-one", prefix: "dir/").objects.isEmpty)
            #expect(try await a.listAll(bucket: "ns-one").objects.map(\.key) == ["top"])
            #expect(await gedsError { _ = try await a.get(bucket: "ns-one", key: "dir/sub/c") }?.code == .noSuchObject)

            // Buckets.
            #expect(await gedsError { try await a.deleteBucket("ns-one") }?.code == .bucketNotEmpty)
            try await a.deleteBucket("ns-one", force: true)
            #expect(try await b.listBuckets() == ["ns-two"])
            #expect(await gedsError { _ = try await b.get(bucket: "ns-one", key: "top") }?.code == .noSuchBucket)
            try await b.delete(bucket: "ns-two", prefix: "")
            try await b.deleteBucket("ns-two")
            #expect(try await a.listBuckets() == [])
        }
    }

    @Test func deletedObjectIsGone() async throws {
        try await withCluster(twoHosts, leaseMilliseconds: 2000) { _, handles in
            let (a, b) = (handles[0], handles[1])
            try await a.createBucket("del")
            let bytes = randomBytes(100_000, seed: 5)
            try await a.put(bucket: "del", key: "k", bytes: bytes)
            let blob = try await a.stat(bucket: "del", key: "k").blob
            let view = try await b.open(bucket: "del", key: "k").view()
            #expect(contents(view) == bytes)
            #expect(b.node.tier0.contains(blob))

            try await b.delete(bucket: "del", key: "k")
            for handle in [a, b] {
                #expect(await gedsError { _ = try await handle.open(bucket: "del", key: "k") }?.code == .noSuchObject)
                #expect(await gedsError { _ = try await handle.get(bucket: "del", key: "k") }?.code == .noSuchObject)
                #expect(await gedsError { _ = try await handle.stat(bucket: "del", key: "k") }?.code == .noSuchObject)
                #expect(await gedsError { try await handle.delete(bucket: "del", key: "k") }?.code == .noSuchObject)
            }
            // Both copies are dropped on the next heartbeats; a view handed out earlier stays valid.
            #expect(await eventually { !a.node.tier0.contains(blob) && !b.node.tier0.contains(blob) })
            #expect(!fileExists(a.node.tier0.path(of: blob)) && !fileExists(b.node.tier0.path(of: blob)))
            #expect(contents(view) == bytes)
            #expect(try await a.listAll(bucket: "del").objects.isEmpty)
        }
    }

    /// The copy a reader fetched into its tier 0 is recycled when the object is deleted: the next fetch is received
    /// into its file. A copy still viewed at the delete is not, and the view keeps its bytes through the next fetch.
    @Test func deletedCopiesAreRecycledUnlessViewed() async throws {
        try await withCluster(twoHosts, leaseMilliseconds: 2000) { _, handles in
            let (a, b) = (handles[0], handles[1])
            try await a.createBucket("recycle")
            let size = (4 << 20) + 5
            func put(_ key: String, seed: UInt64) async throws -> (blob: BlobID, digest: SHA256Digest) {
                let bytes = randomBytes(size, seed: seed)
                try await a.put(bucket: "recycle", key: key, bytes: bytes)
                return (try await a.stat(bucket: "recycle", key: key).blob, sha256(bytes))
            }
            let first = try await put("first", seed: 1)
            do {
                let view = try await b.open(bucket: "recycle", key: "first").view()
                #expect(sha256(view) == first.digest)
            }
            try await a.delete(bucket: "recycle", key: "first")
            #expect(await eventually { !b.node.tier0.contains(first.blob) })
            #expect(b.node.tier0.recycledFiles.files == 1 && b.node.tier0.recycledFiles.bytes == UInt64(size))

            let second = try await put("second", seed: 2)
            let held = try await b.open(bucket: "recycle", key: "second").view()
            #expect(sha256(held) == second.digest)
            #expect(b.node.tier0.recycledFiles.files == 0, "the fetch was received into the recycled file")
            try await a.delete(bucket: "recycle", key: "second")
            #expect(await eventually { !b.node.tier0.contains(second.blob) })
            #expect(b.node.tier0.recycledFiles.files == 0, "a viewed copy is not recycled")

            let third = try await put("third", seed: 3)
            #expect(sha256(try await b.open(bucket: "recycle", key: "third").view()) == third.digest)
            #expect(sha256(held) == second.digest)
        }
    }

    @Test func pendingObjectIsNotReadable() async throws {
        try await withCluster(twoHosts) { _, handles in
            let (a, b) = (handles[0], handles[1])
            try await a.createBucket("pend")
            let writer = try await a.create(bucket: "pend", key: "k")
            let bytes = randomBytes(50_000, seed: 6)
            try writer.write(Array(bytes[25_000...]), at: 25_000)
            try writer.write(Array(bytes[..<25_000]), at: 0)
            #expect(await gedsError { _ = try await b.open(bucket: "pend", key: "k") }?.code == .objectNotSealed)
            #expect(await gedsError { _ = try await b.get(bucket: "pend", key: "k") }?.code == .objectNotSealed)
            #expect(await gedsError { _ = try await a.stat(bucket: "pend", key: "k") }?.code == .objectNotSealed)
            #expect(try await b.listAll(bucket: "pend").objects.isEmpty)
            // The writer reads back what it wrote.
            var head = [UInt8](repeating: 0, count: 100)
            let got = try head.withUnsafeMutableBytes { try writer.read(into: $0, at: 24_950) }
            #expect(got == 100 && head == Array(bytes[24_950..<25_050]))

            try await writer.seal()
            #expect(gedsError { try writer.write([1], at: 0) }?.code == .objectSealed)
            #expect(try await b.get(bucket: "pend", key: "k") == bytes)

            // Overwriting: readers keep getting the old object until the new one is sealed.
            let replacement = randomBytes(7000, seed: 7)
            let second = try await b.create(bucket: "pend", key: "k")
            try second.write(replacement, at: 0)
            #expect(try await a.get(bucket: "pend", key: "k") == bytes)
            #expect(try await b.get(bucket: "pend", key: "k") == bytes)
            try await second.seal(metadata: ["v": "2"])
            #expect(try await a.get(bucket: "pend", key: "k") == replacement)
            #expect(try await a.metadata(bucket: "pend", key: "k") == ["v": "2"])
            #expect(try await a.listAll(bucket: "pend").objects.map(\.size) == [7000])
        }
    }

    @Test func relocateToAnotherNode() async throws {
        let nodes: [(name: String, hostID: String, role: NodeRole)] = [("a", "host-a", .embedded), ("d", "host-d", .daemon)]
        try await withCluster(nodes) { cluster, handles in
            let (a, daemon) = (handles[0], handles[1])
            try await a.createBucket("reloc")
            let bytes = randomBytes((2 << 20) + 5, seed: 8)
            try await a.put(bucket: "reloc", key: "x", bytes: bytes, metadata: ["m": "1"])
            let before = try await a.stat(bucket: "reloc", key: "x")
            #expect(a.node.tier0.contains(before.blob))

            #expect(await gedsError { _ = try await a.relocationTarget(named: "nobody") }?.code == .noSuchNode)
            let target = try await a.relocationTarget()
            #expect(target.name == daemon.node.configuration.name && target.role == .daemon)
            #expect(try await a.relocationTarget(named: daemon.node.configuration.name).name == target.name)
            try await a.relocate(bucket: "reloc", key: "x", to: target)

            let after = try await daemon.stat(bucket: "reloc", key: "x")
            #expect(after.blob == before.blob && after.size == before.size && after.metadata == ["m": "1"])
            #expect(after.locations.map(\.holder) == [daemon.node.configuration.name])
            #expect(!a.node.tier0.contains(before.blob))
            #expect(daemon.node.tier0.contains(before.blob))
            #expect(sha256(try daemon.node.tier0.map(before.blob)) == sha256(bytes))

            // The object outlives its writer.
            await a.close()
            #expect(try await daemon.get(bucket: "reloc", key: "x") == bytes)
            let c = try await cluster.handle("c", hostID: "host-c")
            do {
                let reader = try await c.open(bucket: "reloc", key: "x")
                #expect(try await reader.read(at: 1_000_000, length: 1000) == Array(bytes[1_000_000..<1_001_000]))
                #expect(sha256(try await reader.view()) == sha256(bytes))
            } catch {
                Issue.record("reading the relocated object from a third node failed: \(error)")
            }
            await c.close()
            removeTree(c.node.configuration.tier0Directory)
        }
    }

    /// A reader on the writer's host maps the writer's own file: no network, no copy.
    @Test func sameHostReadsMapTheOwnersFile() async throws {
        let nodes: [(name: String, hostID: String, role: NodeRole)] = [("a", "shared-host", .embedded), ("b", "shared-host", .embedded)]
        try await withCluster(nodes) { _, handles in
            let (a, b) = (handles[0], handles[1])
            try await a.createBucket("local")
            let bytes = randomBytes(1 << 20, seed: 10)
            try await a.put(bucket: "local", key: "k", bytes: bytes)
            let info = try await b.stat(bucket: "local", key: "k")
            let view = try await b.open(bucket: "local", key: "k").view()
            #expect(mappedFile(of: view) == a.node.tier0.path(of: info.blob))
            #expect(!b.node.tier0.contains(info.blob))
            #expect(sha256(view) == sha256(bytes))
            let range = try await b.open(bucket: "local", key: "k").read(at: 12345, length: 5000)
            #expect(range == Array(bytes[12345..<17345]))
            #expect(try await a.stat(bucket: "local", key: "k").locations.count == 1)
        }
    }

    /// Objects up to the MDS's inline limit come with their lookup: every read of them (whole, ranges, through an
    /// open reader) is answered from those bytes; larger ones are not carried. Bytes compared by SHA-256.
    @Test func smallObjectsComeWithTheirLookup() async throws {
        try await withCluster(twoHosts) { _, handles in
            let (a, b) = (handles[0], handles[1])
            try await a.createBucket("small")
            let limit = Int(InlineContents.defaultLimit)
            for (index, size) in [1, 4096, limit, limit + 1].enumerated() {
                let bytes = randomBytes(size, seed: UInt64(100 + index))
                try await a.put(bucket: "small", key: "k\(size)", bytes: bytes)
                let info = try await b.stat(bucket: "small", key: "k\(size)")
                #expect(info.contents.map { sha256($0) } == (size <= limit ? sha256(bytes) : nil), "size \(size)")
                #expect(sha256(try await b.get(bucket: "small", key: "k\(size)")) == sha256(bytes))
                let reader = try await b.open(bucket: "small", key: "k\(size)")
                #expect(try await reader.read(at: UInt64(size / 2), length: 100) == Array(bytes[(size / 2)..<min(size / 2 + 100, size)]))
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size + 10, alignment: 8)
                defer { buffer.deallocate() }
                let got = try await b.read(bucket: "small", key: "k\(size)", into: buffer)
                #expect(got == size && sha256(UnsafeRawBufferPointer(rebasing: buffer[..<size])) == sha256(bytes))
                // Looked up on this thread (the C ABI's and Python's path): the same object, the same bytes.
                let direct = try #require(try b.openOnCallerThread(bucket: "small", key: "k\(size)"))
                #expect(direct.info.blob == info.blob && direct.info.contents == info.contents)
                #expect(sha256(try await direct.read(at: 0, length: size + 1)) == sha256(bytes))
            }
            #expect(try b.openOnCallerThread(bucket: "small", key: "absent") == nil)
            #expect(gedsError { _ = try b.openOnCallerThread(bucket: "no-such-bucket", key: "k") }?.code == .noSuchBucket)
            // Overwritten: the lookup brings the new bytes, never the old ones.
            try await a.put(bucket: "small", key: "k1", bytes: [42])
            #expect(try await b.get(bucket: "small", key: "k1") == [42])
        }
    }

    /// When the only node holding an object leaves, readers get a clear error instead of a hang.
    @Test func objectWhoseHolderLeftIsLost() async throws {
        try await withCluster(twoHosts) { _, handles in
            let (a, b) = (handles[0], handles[1])
            try await a.createBucket("lost")
            try await a.put(bucket: "lost", key: "k", bytes: [1, 2, 3])
            await a.close()
            let info = try await b.stat(bucket: "lost", key: "k")
            #expect(info.locations.isEmpty)
            #expect(await gedsError { _ = try await b.get(bucket: "lost", key: "k") }?.code == .objectLost)
            #expect(await gedsError { _ = try await b.open(bucket: "lost", key: "k").read(at: 0, length: 3) }?.code == .objectLost)
            #expect(try await b.nodes().map(\.name) == [b.node.configuration.name])
        }
    }
}

struct ScenarioFailure: Error, CustomStringConvertible {
    var description: String
}

extension GEDSIntegrationTests {
    /// Several readers on one node ask for the same remote object at once; each must get the whole object.
    /// Run in a child process (an exit test), so that a crash fails this test instead of the whole run.
    @Test func concurrentWholeObjectReads() async {
        await #expect(processExitsWith: .success) {
            try await GEDSIntegrationTests.concurrentViews()
        }
        removeFolders(prefix: "geds-unit-race-")
    }

    static func concurrentViews() async throws {
        try await withCluster(twoHosts, folderPrefix: "geds-unit-race") { _, handles in
            let (a, b) = (handles[0], handles[1])
            try await a.createBucket("race")
            for round in 0..<3 {
                let bytes = randomBytes(16 << 20, seed: UInt64(12 + round))
                let digest = Array(sha256(bytes))
                try await a.put(bucket: "race", key: "k\(round)", bytes: bytes)
                let digests = try await withThrowingTaskGroup(of: [UInt8].self) { group in
                    for _ in 0..<4 {
                        group.addTask { Array(sha256(try await b.open(bucket: "race", key: "k\(round)").view())) }
                    }
                    var digests: [[UInt8]] = []
                    for try await digest in group { digests.append(digest) }
                    return digests
                }
                guard digests.count == 4, digests.allSatisfy({ $0 == digest }) else {
                    throw ScenarioFailure(description: "round \(round): a concurrent view returned other bytes")
                }
                guard Array(sha256(try await b.open(bucket: "race", key: "k\(round)").view())) == digest else {
                    throw ScenarioFailure(description: "round \(round): a later view returned other bytes")
                }
            }
        }
    }
}

extension GEDSIntegrationTests {
    /// `listAll` with a delimiter over more than one page: a page that ends on a common prefix must not
    /// make the next page start inside it.
    @Test func listAllWithDelimiterAcrossPages() async throws {
        try await withCluster([("a", "host-a", .embedded)]) { _, handles in
            let a = handles[0]
            try await a.createBucket("pages")
            for index in 0..<999 { try await a.put(bucket: "pages", key: "k\(1000 + index)", bytes: []) }
            for key in ["p/1", "p/2", "q"] { try await a.put(bucket: "pages", key: key, bytes: [1]) }
            let first = try await a.list(bucket: "pages", delimiter: "/")
            #expect(first.objects.count + first.commonPrefixes.count == 1000)
            #expect(first.commonPrefixes == ["p/"])
            #expect(first.nextStartAfter != nil)
            let all = try await a.listAll(bucket: "pages", delimiter: "/")
            #expect(all.objects.count == 1000)
            #expect(all.objects.last?.key == "q")
            #expect(all.commonPrefixes == ["p/"], "each common prefix once")
            let flat = try await a.listAll(bucket: "pages")
            #expect(flat.objects.count == 1002)
        }
    }

    /// A small object is packed into a slot of the owner's slab file: a reader on the same host copies it out of
    /// the slot, checking the slot's header before and after; once the object is deleted, the stale location fails
    /// instead of yielding what the slot holds next.
    @Test func sameHostReadsOfPackedObjectsCheckTheSlot() async throws {
        let nodes: [(name: String, hostID: String, role: NodeRole)] = [("a", "shared-host", .embedded), ("b", "shared-host", .embedded)]
        try await withCluster(nodes, inlineLimit: 0) { _, handles in  // the bytes stay off the MDS: reads take tier 0
            let (a, b) = (handles[0], handles[1])
            try await a.createBucket("local")
            let bytes = randomBytes(1000, seed: 11)
            try await a.put(bucket: "local", key: "k", bytes: bytes)
            let info = try await b.stat(bucket: "local", key: "k")
            let location = try #require(info.locations.first?.nodeCopy)
            #expect(location.offset != nil && location.path == a.node.tier0.place(of: info.blob).path)
            let view = try await b.open(bucket: "local", key: "k").view()
            #expect(contents(view) == bytes)
            #expect(!b.node.tier0.contains(info.blob), "read in place, not fetched")
            #expect(try await b.open(bucket: "local", key: "k").read(at: 10, length: 100) == Array(bytes[10..<110]))
            try await a.delete(bucket: "local", key: "k")
            #expect(await eventually { !a.node.tier0.contains(info.blob) })
            try await a.put(bucket: "local", key: "next", bytes: randomBytes(1000, seed: 12))
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1000, alignment: 16)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            let error = await gedsError { _ = try await b.node.read(info, at: 0, into: buffer) }
            #expect(error?.code == .noSuchBlob || error?.code == .noSuchObject, "got \(String(describing: error))")
            #expect(buffer.allSatisfy { $0 == 0 })
            #expect(contents(view) == bytes, "a view outlives the delete")
        }
    }

    /// Relocation between two nodes of one host takes the file without copying it over the network.
    @Test func relocateOnTheSameHost() async throws {
        let nodes: [(name: String, hostID: String, role: NodeRole)] = [("a", "one-host", .embedded), ("d", "one-host", .daemon)]
        try await withCluster(nodes) { _, handles in
            let (a, daemon) = (handles[0], handles[1])
            try await a.createBucket("local-reloc")
            let bytes = randomBytes(300_000, seed: 13)
            try await a.put(bucket: "local-reloc", key: "k", bytes: bytes)
            let blob = try await a.stat(bucket: "local-reloc", key: "k").blob
            try await a.relocate(bucket: "local-reloc", key: "k", to: try await a.relocationTarget())
            #expect(!fileExists(a.node.tier0.path(of: blob)))
            #expect(daemon.node.tier0.contains(blob))
            #expect(try await daemon.stat(bucket: "local-reloc", key: "k").locations.map(\.holder) == [daemon.node.configuration.name])
            await a.close()
            let view = try await daemon.open(bucket: "local-reloc", key: "k").view()
            #expect(mappedFile(of: view) == daemon.node.tier0.path(of: blob))
            #expect(contents(view) == bytes)
        }
    }

    /// Once a create found its bucket, creates there ask the MDS nothing (reserved ids) and the seal announces the
    /// object: the MDS knows nothing of it before (not even as unsealed). Aborts, hand-offs, exclusive creates and a
    /// bucket deleted meanwhile behave as with a create at the MDS.
    @Test func objectsCreatedWithoutTheMDS() async throws {
        let nodes: [(name: String, hostID: String, role: NodeRole)] = [("a", "host-a", .embedded), ("b", "host-b", .daemon)]
        try await withCluster(nodes) { _, handles in
            let (a, b) = (handles[0], handles[1])
            try await a.createBucket("local-create")
            let first = randomBytes(5000, seed: 21)
            try await a.put(bucket: "local-create", key: "first", bytes: first)

            let bytes = randomBytes(300_000, seed: 22)
            let writer = try await a.create(bucket: "local-create", key: "second")
            try writer.write(bytes, at: 0)
            #expect(await gedsError { _ = try await b.stat(bucket: "local-create", key: "second") }?.code == .noSuchObject)
            try await writer.seal(metadata: ["m": "2"])
            #expect(sha256(try await b.get(bucket: "local-create", key: "second")) == sha256(bytes))
            #expect(try await b.stat(bucket: "local-create", key: "second").metadata == ["m": "2"])

            // Given up: the older object under the key stays as it was.
            let dropped = try await a.create(bucket: "local-create", key: "first")
            try dropped.write(randomBytes(100, seed: 23), at: 0)
            try await dropped.abort()
            #expect(try await b.get(bucket: "local-create", key: "first") == first)

            // Handed off: the daemon takes it before it is published, and owns it.
            let handed = try await a.create(bucket: "local-create", key: "handed")
            try handed.write(bytes, at: 0)
            try await handed.seal(handingOffTo: try await a.relocationTarget())
            let info = try await b.stat(bucket: "local-create", key: "handed")
            #expect(info.locations.map(\.holder) == [b.node.configuration.name])
            #expect(sha256(try await a.get(bucket: "local-create", key: "handed")) == sha256(bytes))

            // Exclusive creates still reserve the key at the MDS.
            let exclusive = try await a.create(bucket: "local-create", key: "only", exclusive: true)
            #expect(await gedsError { _ = try await b.stat(bucket: "local-create", key: "only") }?.code == .objectNotSealed)
            try await exclusive.abort()

            // The bucket deleted by another node: the seal says so, and the next create asks the MDS again.
            let late = try await a.create(bucket: "local-create", key: "late")
            try late.write(bytes, at: 0)
            try await b.deleteBucket("local-create", force: true)
            #expect(await gedsError { try await late.seal() }?.code == .noSuchBucket)
            #expect(await gedsError { _ = try await a.create(bucket: "local-create", key: "later") }?.code == .noSuchBucket)
        }
    }
}
