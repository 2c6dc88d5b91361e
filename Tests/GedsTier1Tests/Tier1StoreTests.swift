import Foundation
import GedsCore
import GedsTestSupport
@_spi(Testing) import GedsTier1
import SystemPackage
import Testing

@Suite struct CRC32CTests {
    @Test func knownValues() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum([]) == 0)
        let software = Array("123456789".utf8).withUnsafeBytes { CRC32C.softwareUpdate(0, $0) }
        #expect(software == 0xE306_9283)
    }

    @Test func checksumsOfPartsCombine() {
        let bytes = pattern(100_000, seed: 6)
        for cut in [0, 1, 7, 4096, 65_536, 99_999, 100_000] {
            let first = CRC32C.checksum(Array(bytes[..<cut]))
            let second = CRC32C.checksum(Array(bytes[cut...]))
            #expect(CRC32C.combine(first, second, secondLength: UInt64(bytes.count - cut)) == CRC32C.checksum(bytes), "cut at \(cut)")
        }
    }

    @Test func hardwareMatchesSoftwareAtEveryLengthAndAlignment() {
        let bytes = pattern(200_000, seed: 5)
        bytes.withUnsafeBytes { all in
            var length = 0
            while length < 150_000 {
                for start in 0..<3 {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<start + length])
                    #expect(CRC32C.update(0, slice) == CRC32C.softwareUpdate(0, slice), "length \(length) at \(start)")
                }
                length = length < 64 ? length + 1 : length * 2 + 7
            }
            // Running values continue across pieces.
            let whole = CRC32C.checksum(all)
            let split = CRC32C.update(CRC32C.update(0, UnsafeRawBufferPointer(rebasing: all[0..<77_777])),
                                      UnsafeRawBufferPointer(rebasing: all[77_777...]))
            #expect(whole == split)
        }
    }
}

@Suite struct Tier1StoreTests {
    func makeStore(_ folder: TestFolder, capacity: UInt64 = 1 << 30, logs: LogLines = LogLines(),
                   configure: (inout Tier1Configuration) -> Void = { _ in }) throws -> Tier1Store {
        var configuration = Tier1Configuration(directory: folder.path, capacity: capacity, chunkSize: 1 << 20, log: logs.sink)
        configure(&configuration)
        return try Tier1Store(configuration)
    }

    static let sizes = [0, 1, 4095, 4096, 4097, (1 << 20) + 3, (3 << 20) + 4096 + 5]

    @Test func theRepositoryFolderTakesODirect() async throws {
        let folder = TestFolder("odirect")
        defer { folder.remove() }
        let logs = LogLines()
        let store = try makeStore(folder, logs: logs) { $0.directIO = .required }
        #expect(store.usesDirectIO, "on \(fileSystemType(of: folder.path))")
        #expect(store.blockSize >= 4096 && store.blockSize.nonzeroBitCount == 1)
        #expect(logs.all.isEmpty, "\(logs.all)")
        await store.shutdown()
    }

    @Test(arguments: sizes)
    func roundTripsOddSizes(_ size: Int) async throws {
        let folder = TestFolder("sizes")
        defer { folder.remove() }
        let store = try makeStore(folder)
        let bytes = pattern(size, seed: UInt64(size))
        // From aligned memory (written in place) and from unaligned memory (through a buffer).
        for (blob, offset) in [(BlobID(1), 0), (BlobID(2), 1)] {
            let source = TestBuffer(bytes, offset: offset)
            let object = try await store.write(blob, from: source.readable)
            withExtendedLifetime(source) {}
            #expect(object == Tier1Object(blob: blob, size: UInt64(size), checksum: CRC32C.checksum(bytes)))
            #expect(fileSize(store.path(of: blob)) == size, "the file is truncated to the true size")
            #expect(!fileExists(store.path(of: blob) + ".partial"))
            for destinationOffset in [0, 3] {
                let destination = TestBuffer(count: size + 10, offset: destinationOffset, fill: 0xEE)
                let count = try await store.read(blob, into: destination.mutable)
                #expect(count == size)
                #expect(Array(destination.bytes.prefix(size)) == bytes)
                #expect(destination.bytes.suffix(10).allSatisfy { $0 == 0xEE }, "nothing written past the object")
            }
        }
        #expect(store.usage == Tier1Usage(objects: 2, bytes: 2 * UInt64(size), reserved: 2 * store.allocation(forSize: UInt64(size)),
                                          capacity: 1 << 30))
        #expect(try await store.remove(1))
        #expect(try await store.remove(2))
        #expect(try await !store.remove(2))
        #expect(store.usage.reserved == 0 && store.usage.objects == 0)
        #expect(!fileExists(store.path(of: 1)))
        await store.shutdown()
    }

    @Test(arguments: sizes)
    func fileDescriptorsInAndOut(_ size: Int) async throws {
        let folder = TestFolder("descriptors")
        defer { folder.remove() }
        let store = try makeStore(folder)
        let bytes = pattern(size + 100, seed: 9)
        let sourcePath = folder.path + "/source.bin"
        #expect(FileManager.default.createFile(atPath: sourcePath, contents: Data(bytes)))
        let source = try FileDescriptor.open(FilePath(sourcePath), .readOnly)
        defer { try? source.close() }
        let object = try await store.write(7, fromDescriptor: source, offset: 100, length: UInt64(size))
        #expect(object.checksum == CRC32C.checksum(Array(bytes[100...])))
        let targetPath = folder.path + "/target.bin"
        let target = try FileDescriptor.open(FilePath(targetPath), .readWrite, options: [.create, .truncate],
                                             permissions: [.ownerReadWrite, .groupRead, .otherRead])
        defer { try? target.close() }
        #expect(try await store.read(7, toDescriptor: target, offset: 5) == UInt64(size))
        let copied = try Data(contentsOf: URL(fileURLWithPath: targetPath))
        #expect(copied.count == (size == 0 ? 0 : size + 5))
        #expect(Array(copied.dropFirst(5)) == Array(bytes[100...]))
        // A source shorter than announced fails cleanly and leaves nothing behind.
        let error = await gedsError { try await store.write(8, fromDescriptor: source, offset: UInt64(size + 50), length: 100) }
        #expect(error?.message.contains("ended after 50 of 100 bytes") == true, "\(error?.message ?? "")")
        #expect(store.object(8) == nil && !fileExists(store.path(of: 8)) && !fileExists(store.path(of: 8) + ".partial"))
        #expect(store.usage.reserved == store.allocation(forSize: UInt64(size)))
        await store.shutdown()
    }

    // Between one and two stripes is one part: it must still be the whole object.
    @Test(arguments: [(64 << 10) * 5, (64 << 10) * 5 + 1, (1 << 20) + 3, (64 << 10) * 3 / 2 + 7])
    func largeObjectsAreReadInPartsOnSeveralThreads(_ size: Int) async throws {
        let folder = TestFolder("stripes")
        defer { folder.remove() }
        let store = try makeStore(folder) { $0.chunkSize = 16 << 10; $0.stripeSize = 64 << 10 }
        let bytes = pattern(size, seed: 77)
        let source = TestBuffer(bytes)
        defer { withExtendedLifetime(source) {} }
        try await store.write(1, from: source.readable)
        try await store.write(2, from: source.readable)
        for offset in [0, 5] {
            let destination = TestBuffer(count: size, offset: offset)
            #expect(try await store.read(1, into: destination.mutable) == size)
            #expect(destination.bytes == bytes)
        }
        // A flipped byte in the last part is still caught.
        let fd = open(store.path(of: 2), O_RDWR)
        var byte: UInt8 = 0
        #expect(pread(fd, &byte, 1, off_t(size - 1)) == 1)
        byte ^= 1
        #expect(pwrite(fd, &byte, 1, off_t(size - 1)) == 1)
        close(fd)
        let destination = TestBuffer(count: size)
        defer { withExtendedLifetime(destination) {} }
        let error = await gedsError { _ = try await store.read(2, into: destination.mutable) }
        #expect(error?.message.contains("is corrupt: CRC-32C") == true)
        // The whole-file check of a restart, striped the same way.
        #expect(try await store.verifiedChecksum(of: 1) == CRC32C.checksum(bytes))
        #expect(await gedsError { _ = try await store.verifiedChecksum(of: 2) }?.code == .checksumMismatch)
        await store.shutdown()
    }

    @Test func rangedReads() async throws {
        let folder = TestFolder("ranges")
        defer { folder.remove() }
        let store = try makeStore(folder)
        let size = (2 << 20) + 777
        let bytes = pattern(size, seed: 4)
        let source = TestBuffer(bytes)
        try await store.write(3, from: source.readable)
        withExtendedLifetime(source) {}
        let destination = TestBuffer(count: size, offset: 1)
        for range: Range<UInt64> in [0..<1, 4095..<4097, 1..<(1 << 20) + 9, 4096..<8192, UInt64(size - 5)..<UInt64(size),
                                     UInt64(size - 5)..<UInt64(size + 100), 0..<UInt64(size)] {
            let count = try await store.read(3, range: range, into: destination.mutable)
            let end = min(Int(range.upperBound), size)
            #expect(count == end - Int(range.lowerBound))
            #expect(Array(destination.bytes.prefix(count)) == Array(bytes[Int(range.lowerBound)..<end]), "\(range)")
        }
        #expect(try await store.read(3, range: UInt64(size)..<UInt64(size + 10), into: destination.mutable) == 0)
        await store.shutdown()
    }

    @Test func capacityIsEnforcedInWholeBlocks() async throws {
        let folder = TestFolder("capacity")
        defer { folder.remove() }
        let store = try makeStore(folder, capacity: 3 * 4096)
        let block = store.blockSize
        try #require(block == 4096, "this test assumes 4 KiB blocks")
        let one = TestBuffer(pattern(1))
        let two = TestBuffer(pattern(4097))
        defer { withExtendedLifetime((one, two)) {} }
        try await store.write(1, from: one.readable)                  // 1 block
        try await store.write(2, from: two.readable)                  // 2 blocks: full
        #expect(store.usage.reserved == 3 * 4096)
        let full = await gedsError { try await store.write(3, from: one.readable) }
        #expect(full?.code == .outOfSpace)
        #expect(full?.message.hasPrefix("tier 1 full") == true, "\(full?.message ?? "")")
        #expect(full?.message.contains(folder.path) == true)
        #expect(!fileExists(store.path(of: 3)) && !fileExists(store.path(of: 3) + ".partial"))
        // An empty object takes no block.
        try await store.write(4, from: UnsafeRawBufferPointer(start: nil, count: 0))
        // Deleting frees the room.
        try await store.remove(2)
        try await store.write(3, from: two.readable)
        #expect(store.usage.objects == 3)
        // A blob is stored once.
        try await store.remove(1)
        let duplicate = await gedsError { try await store.write(3, from: one.readable) }
        #expect(duplicate?.code == .invalidArgument)
        #expect(duplicate?.message.contains("already in tier 1") == true)
        let missing = await gedsError { _ = try await store.read(99, into: one.mutable) }
        #expect(missing?.code == .noSuchBlob)
        await store.shutdown()
    }

    @Test func corruptAndTruncatedFilesAreDetected() async throws {
        let folder = TestFolder("corrupt")
        defer { folder.remove() }
        let store = try makeStore(folder)
        let size = (1 << 20) + 3
        let bytes = pattern(size, seed: 8)
        let source = TestBuffer(bytes)
        defer { withExtendedLifetime(source) {} }
        for blob in (1...4).map({ BlobID($0) }) { try await store.write(blob, from: source.readable) }
        let destination = TestBuffer(count: size)
        defer { withExtendedLifetime(destination) {} }

        // One flipped bit in the middle.
        let flip = open(store.path(of: 1), O_RDWR)
        var byte: UInt8 = 0
        #expect(pread(flip, &byte, 1, 500_000) == 1)
        byte ^= 0x10
        #expect(pwrite(flip, &byte, 1, 500_000) == 1)
        close(flip)
        let corrupt = await gedsError { _ = try await store.read(1, into: destination.mutable) }
        #expect(corrupt?.code == .checksumMismatch)
        #expect(corrupt?.message.contains("checksum mismatch: tier-1 file") == true, "\(corrupt?.message ?? "")")
        #expect(corrupt?.message.contains("is corrupt: CRC-32C") == true, "\(corrupt?.message ?? "")")
        #expect(corrupt?.message.contains(store.path(of: 1)) == true)

        // Truncated by one byte, and by a whole block.
        #expect(truncate(store.path(of: 2), off_t(size - 1)) == 0)
        let truncated = await gedsError { _ = try await store.read(2, into: destination.mutable) }
        #expect(truncated?.message.contains("truncated") == true, "\(truncated?.message ?? "")")
        #expect(truncate(store.path(of: 3), off_t(size - 4096)) == 0)
        let shorter = await gedsError { _ = try await store.read(3, range: 0..<UInt64(size), into: destination.mutable) }
        #expect(shorter?.message.contains("truncated") == true)

        // Grown.
        #expect(truncate(store.path(of: 4), off_t(size + 1)) == 0)
        let grown = await gedsError { _ = try await store.read(4, into: destination.mutable) }
        #expect(grown?.message.contains("\(size + 1) bytes, expected \(size)") == true, "\(grown?.message ?? "")")
        #expect(truncate(store.path(of: 4), off_t(size)) == 0)
        #expect(try await store.read(4, into: destination.mutable) == size)

        // A checksum kept elsewhere (the location record) is checked too.
        let mismatch = await gedsError {
            _ = try await store.read(4, into: destination.mutable, expectedChecksum: CRC32C.checksum(bytes) ^ 1)
        }
        #expect(mismatch?.message.contains("is corrupt") == true)
        #expect(try await store.read(4, into: destination.mutable, expectedChecksum: CRC32C.checksum(bytes)) == size)

        // A whole-file check without a destination (what a restarted node does before offering a file back).
        #expect(try await store.verifiedChecksum(of: 4) == CRC32C.checksum(bytes))
        let unverified = await gedsError { _ = try await store.verifiedChecksum(of: 1) }
        #expect(unverified?.code == .checksumMismatch)
        let unverifiedShort = await gedsError { _ = try await store.verifiedChecksum(of: 2) }
        #expect(unverifiedShort?.code == .checksumMismatch && unverifiedShort?.message.contains("truncated") == true)
        await store.shutdown()
    }

    @Test func aRefusedODirectFallsBackWithOneLogLine() async throws {
        let folder = TestFolder("fallback")
        defer { folder.remove() }
        let logs = LogLines()
        let store = try makeStore(folder, logs: logs) { $0.simulateDirectIORefusal = true }
        #expect(!store.usesDirectIO)
        #expect(logs.all.count == 1)
        #expect(logs.all.first?.contains("\(folder.path) refuses O_DIRECT") == true, "\(logs.all)")
        #expect(logs.all.first?.contains("buffered I/O") == true)
        for (blob, size) in Self.sizes.enumerated() {
            let bytes = pattern(size, seed: UInt64(blob))
            let source = TestBuffer(bytes, offset: blob % 2)
            try await store.write(BlobID(UInt64(blob)), from: source.readable)
            let destination = TestBuffer(count: size)
            #expect(try await store.read(BlobID(UInt64(blob)), into: destination.mutable) == size)
            #expect(destination.bytes == bytes)
            withExtendedLifetime((source, destination)) {}
        }
        #expect(logs.all.count == 1, "still one line: \(logs.all)")
        await store.shutdown()

        // Where direct I/O is required, a refusal is an error; where it is disabled, one line says so.
        let required = gedsError {
            _ = try makeStore(folder) { $0.simulateDirectIORefusal = true; $0.directIO = .required }
        }
        #expect(required?.message.contains("refuses O_DIRECT") == true)
        let disabledLogs = LogLines()
        let disabled = try makeStore(TestFolder(path: folder.path + "/disabled"), logs: disabledLogs) { $0.directIO = .disabled }
        #expect(!disabled.usesDirectIO)
        #expect(disabledLogs.all == ["O_DIRECT disabled by configuration: tier 1 uses buffered I/O in \(folder.path)/disabled"])
        await disabled.shutdown()
    }

    @Test func worksOnTmpfsWhateverItSaysAboutODirect() async throws {
        let folder = TestFolder(path: "/dev/shm/geds-tier1-test-\(UInt64.random(in: 0...UInt64.max))")
        defer { folder.remove() }
        let logs = LogLines()
        let store = try makeStore(folder, logs: logs)
        // This kernel's tmpfs takes O_DIRECT (older ones refuse it: then one line says so).
        #expect(store.usesDirectIO == logs.all.isEmpty, "\(logs.all)")
        let bytes = pattern(10_000)
        let source = TestBuffer(bytes)
        let destination = TestBuffer(count: 10_000)
        defer { withExtendedLifetime((source, destination)) {} }
        try await store.write(1, from: source.readable)
        #expect(try await store.read(1, into: destination.mutable) == 10_000)
        #expect(destination.bytes == bytes)
        await store.shutdown()
    }

    @Test func leftoversAreAdoptedOrRemoved() async throws {
        let folder = TestFolder("leftovers")
        defer { folder.remove() }
        let first = try makeStore(folder)
        var written: [Tier1Object] = []
        for (blob, size) in [(BlobID(1), 10), (BlobID(2), 5000), (BlobID(3), 70_000)] {
            let source = TestBuffer(pattern(size, seed: blob.rawValue))
            written.append(try await first.write(blob, from: source.readable))
            withExtendedLifetime(source) {}
        }
        await first.shutdown()
        // What a crash leaves: a half-written file, a truncated object, a stranger's file.
        _ = FileManager.default.createFile(atPath: first.path(of: 9) + ".partial", contents: Data([1, 2, 3]))
        #expect(truncate(first.path(of: 3), 1000) == 0)
        _ = FileManager.default.createFile(atPath: folder.path + "/notes.txt", contents: Data([1]))

        let logs = LogLines()
        let adopting = try makeStore(folder, logs: logs) { $0.leftovers = .adopt }
        #expect(Set(adopting.objects) == Set(written.prefix(2)))
        #expect(adopting.usage.reserved == adopting.allocation(forSize: 10) + adopting.allocation(forSize: 5000))
        #expect(!fileExists(first.path(of: 9) + ".partial") && !fileExists(first.path(of: 3)))
        #expect(fileExists(folder.path + "/notes.txt"), "files that are not blobs are left alone")
        #expect(logs.all.contains { $0.contains("adopted 2 object(s)") }, "\(logs.all)")
        let destination = TestBuffer(count: 5000)
        defer { withExtendedLifetime(destination) {} }
        #expect(try await adopting.read(2, into: destination.mutable) == 5000)
        #expect(destination.bytes == pattern(5000, seed: 2))
        await adopting.shutdown()

        let removing = try makeStore(folder)
        #expect(removing.objects.isEmpty)
        #expect(!fileExists(first.path(of: 1)) && !fileExists(first.path(of: 2)))
        await removing.shutdown()
    }

    @Test func manyConcurrentWritesAndReads() async throws {
        let folder = TestFolder("concurrent")
        defer { folder.remove() }
        let store = try makeStore(folder)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for blob in 0..<48 {
                group.addTask {
                    let size = (blob * 37_337) % 3_000_000 + blob
                    let bytes = pattern(size, seed: UInt64(blob))
                    let source = TestBuffer(bytes, offset: blob % 3)
                    let object = try await store.write(BlobID(UInt64(blob)), from: source.readable)
                    withExtendedLifetime(source) {}
                    #expect(object.size == UInt64(size))
                    let destination = TestBuffer(count: size, offset: blob % 2)
                    #expect(try await store.read(BlobID(UInt64(blob)), into: destination.mutable) == size)
                    #expect(destination.bytes == bytes)
                }
            }
            try await group.waitForAll()
        }
        #expect(store.usage.objects == 48)
        await store.shutdown()
        let after = await gedsError { _ = try await store.remove(1) }
        #expect(after != nil, "calls after shutdown fail")
    }
}
