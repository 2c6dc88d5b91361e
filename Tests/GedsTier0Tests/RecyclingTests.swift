import Foundation
import GedsCore
import GedsTestSupport
import GedsTier0
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A 64-bit FNV-1a digest: compared instead of megabytes of bytes, which a failed expectation would print whole.
func digest(_ bytes: some Sequence<UInt8>) -> UInt64 {
    bytes.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
}

extension MappedBytes {
    var digest: UInt64 { GedsTier0Tests.digest(bytes) }
}

/// The files of dropped blobs kept for later copies (Recycling.swift): a copy lands in such a file only when
/// nobody else could still see the file's bytes.
@Suite struct RecyclingTests {
    /// Receives `data` as `blob` and seals it; the receiving mapping is gone when this returns.
    func receive(_ data: [UInt8], as blob: BlobID, into store: Tier0Store) throws -> (inode: ino_t, partialPath: String) {
        let receiving = try store.receive(blob, size: UInt64(data.count))
        let base = try #require(receiving.mapping.base)
        let partialPath = try #require(mappingOf(base)?.path)
        let fileInode = try #require(inode(of: partialPath))
        #expect(data.withUnsafeBytes { receiving.mapping.store($0, at: 0) })
        try receiving.seal()
        return (fileInode, partialPath)
    }

    /// Receives a copy of `count` pattern bytes as `blob` and drops it again, as a fetch followed by a delete does.
    func receiveAndDrop(_ count: Int, seed: UInt64, as blob: BlobID, in store: Tier0Store,
                        recyclingUnder ceiling: UInt64 = .max) throws {
        _ = try receive(pattern(count, seed: seed), as: blob, into: store)
        store.remove(blob, recyclingUnder: ceiling)
    }

    func inode(of path: String) -> ino_t? {
        var status = stat()
        return stat(path, &status) == 0 ? status.st_ino : nil
    }

    func recycledNames(in folder: TempFolder) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0.hasPrefix(".recycle-") }
    }

    @Test func aDroppedFileReceivesTheNextCopy() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, recycleBudget: 64 << 20)
        let first = pattern(1 << 20 | 123, seed: 1)
        let (firstInode, _) = try receive(first, as: 1, into: store)
        #expect(store.usage.bytes == UInt64(first.count) && store.recycledFiles.files == 0)

        store.remove(1)
        #expect(!fileExists(store.path(of: 1)))
        #expect(store.usage.blobs == 0 && store.usage.bytes == 0)
        #expect(store.recycledFiles.files == 1 && store.recycledFiles.bytes == UInt64(first.count))
        let pooled = try #require(recycledNames(in: folder).first)
        #expect(fileMode(folder.path + "/" + pooled) == 0o444, "read-only until a copy is received into it")

        // A smaller copy (within twice its size) goes into the same file, cut to its size; its bytes are exactly
        // what was received, none of the old ones.
        let second = pattern(700_001, seed: 2)
        let secondDigest = digest(second)
        let (secondInode, partialPath) = try receive(second, as: 2, into: store)
        #expect(secondInode == firstInode)
        #expect(partialPath.hasPrefix(store.path(of: 2) + ".") && partialPath.hasSuffix(".partial"))
        #expect(store.recycledFiles.files == 0 && store.recycledFiles.bytes == 0)
        #expect(recycledNames(in: folder).isEmpty)
        #expect(store.usage.blobs == 1 && store.usage.bytes == UInt64(second.count))
        #expect(fileMode(store.path(of: 2)) == 0o444)
        var status = stat()
        #expect(stat(store.path(of: 2), &status) == 0 && status.st_size == second.count)
        #expect(try store.map(2).digest == secondDigest)
    }

    @Test func aFileFarLargerThanTheCopyIsNotCutDown() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, recycleBudget: 64 << 20)
        let (bigInode, _) = try receive(pattern(4 << 20, seed: 3), as: 1, into: store)
        store.remove(1)
        let small = pattern(1 << 20, seed: 4)
        let smallDigest = digest(small)
        let (smallInode, _) = try receive(small, as: 2, into: store)
        #expect(smallInode != bigInode)
        #expect(store.recycledFiles.files == 1 && store.recycledFiles.bytes == 4 << 20)
        #expect(try store.map(2).digest == smallDigest)
    }

    /// A view in this process, a same-host reader's mapping by path, or an open descriptor (as one handed to an
    /// attached process): the file is not recycled, and the reader's bytes stay what they were.
    @Test(arguments: ["view", "mapped by path", "descriptor"])
    func aFileStillOpenIsNotRecycled(_ reader: String) throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, recycleBudget: 64 << 20)
        let first = pattern(2 << 20, seed: 5)
        let firstDigest = digest(first)
        _ = try receive(first, as: 1, into: store)
        let view = reader == "view" ? try store.map(1)
            : reader == "mapped by path" ? try Tier0Store.map(path: store.path(of: 1)) : nil
        let descriptor = reader == "descriptor" ? try store.openForSharing(1) : nil
        store.remove(1)
        #expect(!fileExists(store.path(of: 1)))
        #expect(store.recycledFiles.files == 0)
        #expect(recycledNames(in: folder).isEmpty)

        let second = pattern(2 << 20, seed: 6)

        let secondDigest = digest(second)
        _ = try receive(second, as: 2, into: store)
        #expect(try store.map(2).digest == secondDigest)
        if let view { #expect(view.digest == firstDigest) }
        if let descriptor {
            defer { try? descriptor.close() }
            let mapped = try MappedBytes(descriptor: descriptor, size: first.count, writable: false)
            #expect(mapped.digest == firstDigest)
        }
    }

    /// A reader in another process (as a same-host node or an attached process): its mapping's digest is the
    /// same before and after the blob was dropped and another copy received.
    @Test func aFileMappedByAnotherProcessIsNotRecycled() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, recycleBudget: 64 << 20)
        let size = 2 << 20
        _ = try receive(pattern(size, seed: 7), as: 1, into: store)
        let reader = Process()
        reader.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        reader.arguments = ["python3", "-c", """
            import hashlib, mmap, sys
            with open(sys.argv[1], 'rb') as f:
                m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            for line in sys.stdin:
                print(hashlib.sha256(m).hexdigest(), flush=True)
            """, store.path(of: 1)]
        let input = Pipe()
        let output = Pipe()
        reader.standardInput = input
        reader.standardOutput = output
        try reader.run()
        defer { reader.terminate() }
        func readerDigest() throws -> String {
            try input.fileHandleForWriting.write(contentsOf: Data("digest\n".utf8))
            var line = Data()
            while let byte = try output.fileHandleForReading.read(upToCount: 1), !byte.isEmpty, byte != Data("\n".utf8) {
                line.append(byte)
            }
            return String(decoding: line, as: UTF8.self)
        }
        let before = try readerDigest()
        #expect(before.count == 64)

        store.remove(1)
        #expect(store.recycledFiles.files == 0)
        let second = pattern(size, seed: 8)
        let secondDigest = digest(second)
        _ = try receive(second, as: 2, into: store)
        #expect(try store.map(2).digest == secondDigest)
        #expect(try readerDigest() == before)
        try input.fileHandleForWriting.close()
        reader.waitUntilExit()
    }

    /// A file with another name (a same-host node adopted it as a hard link) stays that node's.
    @Test func aFileLinkedElsewhereIsNotRecycled() throws {
        let folderA = TempFolder()
        defer { folderA.remove() }
        let folderB = TempFolder()
        defer { folderB.remove() }
        let a = try Tier0Store(directory: folderA.path, recycleBudget: 64 << 20)
        let b = try Tier0Store(directory: folderB.path)
        let first = pattern(1 << 20, seed: 9)
        let firstDigest = digest(first)
        _ = try receive(first, as: 1, into: a)
        #expect(b.adopt(1, linkingFrom: a.path(of: 1)))
        a.remove(1)
        #expect(a.recycledFiles.files == 0)
        _ = try receive(pattern(1 << 20, seed: 10), as: 2, into: a)
        #expect(try b.map(1).digest == firstDigest)
    }

    /// Bytes sent with sendfile may still be queued in a socket after the descriptor is closed, referring to the
    /// file's pages: a file opened for sending is recycled only after the quarantine.
    @Test func aFileOpenedForSendingWaitsOutTheQuarantine() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let quarantine = Duration.seconds(2)
        let store = try Tier0Store(directory: folder.path, quarantine: quarantine, recycleBudget: 64 << 20)
        let (soon, later) = (pattern(1 << 20, seed: 21), pattern(1 << 20, seed: 22))
        let (soonDigest, laterDigest) = (digest(soon), digest(later))
        let (sentInode, _) = try receive(pattern(1 << 20, seed: 20), as: 1, into: store)
        try store.openForReading(1).descriptor.close()
        let dropped = ContinuousClock.now
        store.remove(1)
        #expect(store.recycledFiles.files == 1)
        let (soonInode, _) = try receive(soon, as: 2, into: store)
        if ContinuousClock.now < dropped + quarantine {
            #expect(soonInode != sentInode && store.recycledFiles.files == 1)
        }
        #expect(try store.map(2).digest == soonDigest)
        usleep(2_100_000)
        let (laterInode, _) = try receive(later, as: 3, into: store)
        #expect(laterInode == sentInode && store.recycledFiles.files == 0)
        #expect(try store.map(3).digest == laterDigest)
    }

    @Test func thePoolKeepsToItsBudgetAndCeiling() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let mib: UInt64 = 1 << 20
        let store = try Tier0Store(directory: folder.path, recycleBudget: 3 * mib)
        for blob: UInt64 in 1...5 { _ = try receive(pattern(Int(mib), seed: blob), as: BlobID(blob), into: store) }
        for blob: UInt64 in 1...5 { store.remove(BlobID(blob)) }
        // The oldest go first; the files beyond the budget are unlinked.
        #expect(store.recycledFiles.files == 3 && store.recycledFiles.bytes == 3 * mib)
        #expect(recycledNames(in: folder).count == 3)

        // Bigger than the whole budget: not kept.
        try receiveAndDrop(Int(4 * mib), seed: 6, as: 6, in: store)
        #expect(store.recycledFiles.bytes == 3 * mib)

        // Sealed blobs and recycled files together under a ceiling: 2 MiB of blobs leave room for 1 MiB.
        _ = try receive(pattern(Int(2 * mib), seed: 7), as: 7, into: store)
        store.trimRecyclePool(under: 3 * mib)
        #expect(store.recycledFiles.files == 1 && store.recycledFiles.bytes == mib)
        #expect(recycledNames(in: folder).count == 1)
        // The file an incoming copy would go into is spared (it is that copy's room).
        store.trimRecyclePool(under: 2 * mib, keepingFitFor: mib)
        #expect(store.recycledFiles.files == 1)
        store.trimRecyclePool(under: 2 * mib)
        #expect(store.recycledFiles.files == 0)
        #expect(recycledNames(in: folder).isEmpty)

        // A drop past the ceiling unlinks the file.
        try receiveAndDrop(Int(mib), seed: 8, as: 8, in: store, recyclingUnder: 2 * mib + mib / 2)
        #expect(store.recycledFiles.files == 0)
        store.remove(7, recyclingUnder: 3 * mib)
        #expect(store.recycledFiles.files == 1 && store.recycledFiles.bytes == 2 * mib)
        #expect(store.usage.blobs == 0 && store.usage.bytes == 0)
    }

    @Test func smallOrWrittenBlobsFollowTheSameRules() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, recycleBudget: 64 << 20)
        // Packed into a slot: nothing to recycle.
        try receiveAndDrop(1000, seed: 11, as: 1, in: store)
        #expect(store.recycledFiles.files == 0)
        // Written here in a file of its own, with a hole: recycled, and the copy received into it reads back exactly.
        let written = try store.create(2)
        try written.write(pattern(100, seed: 12), at: 1 << 20)
        _ = try written.seal()
        store.remove(2)
        #expect(store.recycledFiles.files == 1)
        let copy = pattern(1 << 20 | 100, seed: 13)
        let copyDigest = digest(copy)
        _ = try receive(copy, as: 3, into: store)
        #expect(store.recycledFiles.files == 0)
        #expect(try store.map(3).digest == copyDigest)
    }

    @Test func leftoversGoAtStartAndThePoolAtShutdown() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, recycleBudget: 64 << 20)
        try receiveAndDrop(1 << 20, seed: 14, as: 1, in: store)
        #expect(recycledNames(in: folder).count == 1)
        let restarted = try Tier0Store(directory: folder.path, recycleBudget: 64 << 20)
        #expect(recycledNames(in: folder).isEmpty)

        try receiveAndDrop(1 << 20, seed: 15, as: 2, in: restarted)
        #expect(restarted.recycledFiles.files == 1)
        restarted.stopRecycling()
        #expect(restarted.recycledFiles.files == 0 && recycledNames(in: folder).isEmpty)
        try receiveAndDrop(1 << 20, seed: 16, as: 3, in: restarted)
        #expect(restarted.recycledFiles.files == 0 && recycledNames(in: folder).isEmpty)
        #expect(!fileExists(restarted.path(of: 3)))
    }

    @Test func aFileLeftUnusedIsGivenBack() throws {
        let folder = TempFolder()
        defer { folder.remove() }
        let store = try Tier0Store(directory: folder.path, recycleBudget: 64 << 20)
        try receiveAndDrop(1 << 20, seed: 17, as: 1, in: store)
        let removed = ContinuousClock.now
        try receiveAndDrop(2 << 20, seed: 18, as: 2, in: store)
        #expect(store.recycledFiles.files == 2)

        store.releaseRecycledFiles(keptBefore: removed - .seconds(1))
        #expect(store.recycledFiles.files == 2, "files kept since are not idle yet")
        store.releaseRecycledFiles(keptBefore: removed)
        #expect(store.recycledFiles.files == 1 && store.recycledFiles.bytes == 2 << 20, "only the older one went")
        #expect(recycledNames(in: folder).count == 1)
        store.releaseRecycledFiles(keptBefore: .now)
        #expect(store.recycledFiles.files == 0 && store.recycledFiles.bytes == 0 && recycledNames(in: folder).isEmpty)
    }
}
