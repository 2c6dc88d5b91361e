import CLinux
import GedsCore
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The files themselves: opening with O_DIRECT (or falling back), writing from aligned memory or through pooled
/// buffers with the last block zero-padded, reading whole blocks, and committing a written file into place.
extension Tier1Store {
    /// Can files in the configured folder be opened with O_DIRECT, and with what alignment? Says in the log when
    /// the store falls back to buffered I/O; throws when direct I/O is required and refused.
    static func probeDirectIO(_ configuration: Tier1Configuration) throws(GedsError) -> (direct: Bool, blockSize: Int) {
        let directory = configuration.directory
        let probePath = directory + "/.geds-tier1-probe-\(getpid())"
        var useDirect = configuration.directIO != .disabled
        var refusal: Int32 = 0
        let probe: FileDescriptor
        do {
            do {
                probe = try Tier1Store.open(probePath, .readWrite, useDirect ? [.create, .truncate, directOption] : [.create, .truncate],
                                            simulateRefusal: configuration.simulateDirectIORefusal)
            } catch let error as Errno where useDirect && error == .invalidArgument {
                refusal = error.rawValue
                useDirect = false
                probe = try Tier1Store.open(probePath, .readWrite, [.create, .truncate], simulateRefusal: false)
            }
        } catch {
            throw GedsError.io("cannot create files in tier 1 folder \(directory)", error)
        }
        var memoryAlignment: UInt32 = 0
        var offsetAlignment: UInt32 = 0
        // swift-system has no statx.
        let reported = clinux_dio_alignment(probe.rawValue, &memoryAlignment, &offsetAlignment) == 0
        try? probe.close()
        unlink(probePath)
        if refusal != 0 {
            if configuration.directIO == .required {
                throw GedsError(.invalidArgument,
                                "tier 1 folder \(directory) refuses O_DIRECT (\(describeErrno(refusal))) and direct I/O is required")
            }
            configuration.log("\(directory) refuses O_DIRECT (\(describeErrno(refusal))): tier 1 uses buffered I/O there")
        } else if configuration.directIO == .disabled {
            configuration.log("O_DIRECT disabled by configuration: tier 1 uses buffered I/O in \(directory)")
        }
        // Whole pages at least, which every device and file system accepts.
        let reportedAlignment = reported ? Int(max(memoryAlignment, offsetAlignment)) : 0
        return (useDirect, max(4096, reportedAlignment.nextPowerOfTwo))
    }

    /// O_DIRECT, which swift-system has no name for.
    static let directOption = FileDescriptor.OpenOptions(rawValue: clinux_o_direct())

    /// Opens `path` close-on-exec (created with mode 0644); throws swift-system's `Errno`.
    static func open(_ path: String, _ mode: FileDescriptor.AccessMode, _ options: FileDescriptor.OpenOptions,
                     simulateRefusal: Bool) throws -> FileDescriptor {
        if simulateRefusal && options.contains(directOption) { throw Errno.invalidArgument }
        return try path.withCString { path in
            try FileDescriptor.open(path, mode, options: options.union(.closeOnExec),
                                    permissions: [.ownerReadWrite, .groupRead, .otherRead])
        }
    }

    /// Opens with O_DIRECT where the store uses it; falls back (once, with a log line) where the file system
    /// refuses it after all. Throws swift-system's `Errno`.
    func openFile(_ path: String, _ mode: FileDescriptor.AccessMode,
                  _ options: FileDescriptor.OpenOptions = []) throws -> FileDescriptor {
        if usesDirectIO {
            do {
                return try Tier1Store.open(path, mode, options.union(Tier1Store.directOption), simulateRefusal: simulateRefusal)
            } catch let error as Errno where error == .invalidArgument {
                if direct.exchange(false, ordering: .relaxed) {
                    log("\(directory) refuses O_DIRECT (\(describeErrno(EINVAL))): tier 1 uses buffered I/O there")
                }
            }
        }
        return try Tier1Store.open(path, mode, options, simulateRefusal: false)
    }

    /// Creates the partial file and reserves its blocks; returns it open.
    func createPartial(_ blob: BlobID, allocated: UInt64) throws(GedsError) -> FileDescriptor {
        let partial = path(of: blob) + ".partial"
        let fd: FileDescriptor
        do {
            fd = try openFile(partial, .writeOnly, [.create, .truncate])
        } catch {
            throw GedsError.io("cannot open \(partial) in tier 1", error)
        }
        if allocated > 0 && preallocate {
            // swift-system has no fallocate.
            if clinux_fallocate(fd.rawValue, 0, 0, off_t(allocated)) != 0 && errno != EOPNOTSUPP && errno != ENOSYS {
                let error = GedsError.io("cannot reserve \(allocated) bytes for blob \(blob.fileName) in tier 1 folder \(directory)", errno: errno)
                discardPartial(fd, blob: blob)
                throw error
            }
        }
        return fd
    }

    /// Cuts the block padding of the last block off: the file then has the object's true size.
    func truncatePartial(_ fd: FileDescriptor, blob: BlobID, size: UInt64) throws(GedsError) {
        do {
            try fd.resize(to: Int64(size))
        } catch {
            throw GedsError.io("cannot truncate \(path(of: blob)).partial to \(size) bytes", error)
        }
    }

    func discardPartial(_ fd: FileDescriptor, blob: BlobID) {
        try? fd.close()
        unlink(path(of: blob) + ".partial")
    }

    /// Creates the partial file, runs `fill`, truncates it to the true size; returns the open descriptor (`finish`
    /// records the checksum and moves the file into place). Removes the file on failure.
    func writeFile(_ blob: BlobID, size: UInt64, allocated: UInt64,
                           fill: (FileDescriptor, Tier1Store) throws(GedsError) -> Void) throws(GedsError) -> FileDescriptor {
        let fd = try createPartial(blob, allocated: allocated)
        do throws(GedsError) {
            try fill(fd, self)
            try truncatePartial(fd, blob: blob, size: size)
            return fd
        } catch {
            discardPartial(fd, blob: blob)
            throw error
        }
    }

    func finish(_ blob: BlobID, size: UInt64, allocated: UInt64, descriptor: Result<FileDescriptor, GedsError>,
                        checksum: UInt32) async throws(GedsError) -> Tier1Object {
        let fd: FileDescriptor
        switch descriptor {
        case .success(let value): fd = value
        case .failure(let error):
            release(blob, allocated: allocated)
            throw error
        }
        let object = Tier1Object(blob: blob, size: size, checksum: checksum)
        let partial = path(of: blob) + ".partial"
        let final = path(of: blob)
        do {
            try await onPool { () throws(GedsError) in
                defer { try? fd.close() }
                // Best effort: without the attribute (a file system without user xattrs) the object works, but is
                // not adopted by a later store. (swift-system has no extended attributes.)
                let record = Array("\(size) \(hex32(checksum))".utf8)
                _ = clinux_fsetxattr(fd.rawValue, Tier1Store.attributeName, record, record.count)
                guard rename(partial, final) == 0 else { throw GedsError.io("cannot rename \(partial)", errno: errno) }
            }
        } catch {
            unlink(partial)
            release(blob, allocated: allocated)
            throw error
        }
        state.withLock { $0.objects[blob] = .stored(object) }
        return object
    }

    /// Writes bytes `start..<end` of `source` (`start` a multiple of the block size) to the same place in the file,
    /// in chunks: from the memory itself where it is aligned, else through a buffer; a last partial block (at the
    /// object's end) through a zero-padded buffer. Returns their CRC-32C, computed chunk by chunk as they are written.
    func writeMemory(_ source: UnsafeRawBufferPointer, start: Int, end: Int, to fd: FileDescriptor,
                             blob: BlobID) throws(GedsError) -> UInt32 {
        let size = end
        let wholeBlocks = size / blockSize * blockSize
        guard end > start, let base = source.baseAddress else { return 0 }
        let aligned = Int(bitPattern: base) % blockSize == 0
        var crc: UInt32 = 0
        var offset = start
        var buffer: UnsafeMutableRawPointer?
        defer { if let buffer { buffers.give(buffer) } }
        while offset < wholeBlocks {
            let count = min(chunkSize, wholeBlocks - offset)
            crc = CRC32C.update(crc, UnsafeRawBufferPointer(start: base + offset, count: count))
            if aligned {
                try writeAll(fd, UnsafeRawBufferPointer(start: base + offset, count: count), at: offset, blob: blob)
            } else {
                let bounce = buffer ?? buffers.take()
                buffer = bounce
                bounce.copyMemory(from: base + offset, byteCount: count)
                try writeAll(fd, UnsafeRawBufferPointer(start: bounce, count: count), at: offset, blob: blob)
            }
            offset += count
        }
        if size > max(wholeBlocks, start) {
            let bounce = buffer ?? buffers.take()
            buffer = bounce
            let tail = size - wholeBlocks
            crc = CRC32C.update(crc, UnsafeRawBufferPointer(start: base + wholeBlocks, count: tail))
            bounce.copyMemory(from: base + wholeBlocks, byteCount: tail)
            (bounce + tail).initializeMemory(as: UInt8.self, repeating: 0, count: blockSize - tail)
            try writeAll(fd, UnsafeRawBufferPointer(start: bounce, count: blockSize), at: wholeBlocks, blob: blob)
        }
        return crc
    }

    /// Copies `length` bytes of `source` from `offset` into the file, block-padded; returns their CRC-32C.
    func copyDescriptor(_ source: FileDescriptor, offset: UInt64, length: UInt64, to fd: FileDescriptor,
                                blob: BlobID) throws(GedsError) -> UInt32 {
        let buffer = buffers.take()
        defer { buffers.give(buffer) }
        var crc: UInt32 = 0
        var done: UInt64 = 0
        while done < length {
            let count = Int(min(UInt64(chunkSize), length - done))
            var filled = 0
            while filled < count {
                let result: Int
                do {
                    result = try source.read(fromAbsoluteOffset: Int64(offset + done) + Int64(filled),
                                             into: UnsafeMutableRawBufferPointer(start: buffer + filled, count: count - filled))
                } catch {
                    throw GedsError.io("cannot read the source of blob \(blob.fileName)", error)
                }
                if result == 0 {
                    throw GedsError(.io, "the source of blob \(blob.fileName) ended after \(done + UInt64(filled)) of \(length) bytes")
                }
                filled += result
            }
            crc = CRC32C.update(crc, UnsafeRawBufferPointer(start: buffer, count: count))
            let padded = (count + blockSize - 1) / blockSize * blockSize
            if padded > count { (buffer + count).initializeMemory(as: UInt8.self, repeating: 0, count: padded - count) }
            try writeAll(fd, UnsafeRawBufferPointer(start: buffer, count: padded), at: Int(done), blob: blob)
            done += UInt64(count)
        }
        return crc
    }

    func writeAll(_ fd: FileDescriptor, _ bytes: UnsafeRawBufferPointer, at offset: Int, blob: BlobID) throws(GedsError) {
        do {
            try fd.writeAll(toAbsoluteOffset: Int64(offset), bytes)
        } catch {
            throw GedsError.io("cannot write blob \(blob.fileName) to tier 1 folder \(directory)", error)
        }
    }

    /// Opens the object's file, checks its size, and runs `body`.
    func readFile<T>(_ object: Tier1Object, _ body: (FileDescriptor) throws(GedsError) -> T) throws(GedsError) -> T {
        let path = path(of: object.blob)
        let fd: FileDescriptor
        do {
            fd = try openFile(path, .readOnly)
        } catch let error as Errno where error == .noSuchFileOrDirectory {
            throw GedsError(.noSuchBlob, "blob \(object.blob.fileName) is not in tier 1 (\(directory))")
        } catch {
            throw GedsError.io("cannot open \(path) in tier 1", error)
        }
        defer { try? fd.close() }
        let size: Int64
        do {
            size = try fd.stat().size
        } catch {
            throw GedsError.io("cannot stat \(path)", error)
        }
        guard UInt64(size) == object.size else {
            throw GedsError(.checksumMismatch, "checksum mismatch: tier-1 file \(path) is corrupt: \(size) bytes, expected \(object.size)"
                + (UInt64(size) < object.size ? " (truncated)" : ""))
        }
        return try body(fd)
    }

    /// Reads whole blocks (a short count only at the end of the file); returns the bytes read.
    func preadBlocks(_ fd: FileDescriptor, _ pointer: UnsafeMutableRawPointer, _ count: Int, offset: UInt64,
                             object: Tier1Object) throws(GedsError) -> Int {
        var done = 0
        while done < count {
            let result: Int
            do {
                result = try fd.read(fromAbsoluteOffset: Int64(offset) + Int64(done),
                                     into: UnsafeMutableRawBufferPointer(start: pointer + done, count: count - done))
            } catch {
                throw GedsError.io("cannot read tier-1 file \(path(of: object.blob))", error)
            }
            if result == 0 { break }
            done += result
        }
        return done
    }

    func shortRead(_ object: Tier1Object, at offset: UInt64) -> GedsError {
        GedsError(.checksumMismatch, "checksum mismatch: tier-1 file \(path(of: object.blob)) is corrupt: it ends at byte \(offset), expected \(object.size) (truncated)")
    }

    /// Reads bytes `start..<end` of the object (`start` a multiple of the block size) into the same place of
    /// `destination`; returns their CRC-32C.
    func readInto(_ destination: UnsafeMutableRawBufferPointer, from fd: FileDescriptor, object: Tier1Object,
                          start: Int, end: Int) throws(GedsError) -> UInt32 {
        let size = end
        guard end > start, let base = destination.baseAddress else { return 0 }
        let wholeBlocks = size / blockSize * blockSize
        let aligned = Int(bitPattern: base) % blockSize == 0
        var buffer: UnsafeMutableRawPointer?
        defer { if let buffer { buffers.give(buffer) } }
        var crc: UInt32 = 0
        var offset = start
        while offset < wholeBlocks {
            let count = min(chunkSize, wholeBlocks - offset)
            if aligned {
                guard try preadBlocks(fd, base + offset, count, offset: UInt64(offset), object: object) == count else {
                    throw shortRead(object, at: UInt64(offset))
                }
            } else {
                let bounce = buffer ?? buffers.take()
                buffer = bounce
                guard try preadBlocks(fd, bounce, count, offset: UInt64(offset), object: object) == count else {
                    throw shortRead(object, at: UInt64(offset))
                }
                (base + offset).copyMemory(from: bounce, byteCount: count)
            }
            crc = CRC32C.update(crc, UnsafeRawBufferPointer(start: base + offset, count: count))
            offset += count
        }
        if size > max(wholeBlocks, start) {
            let bounce = buffer ?? buffers.take()
            buffer = bounce
            let tail = size - wholeBlocks
            guard try preadBlocks(fd, bounce, blockSize, offset: UInt64(wholeBlocks), object: object) >= tail else {
                throw shortRead(object, at: UInt64(wholeBlocks))
            }
            (base + wholeBlocks).copyMemory(from: bounce, byteCount: tail)
            crc = CRC32C.update(crc, UnsafeRawBufferPointer(start: base + wholeBlocks, count: tail))
        }
        return crc
    }

    /// Reads bytes `start..<end` of the file (`start` a multiple of the block size; the whole file by default) in
    /// chunks, copying them into `target` (when given) at `targetOffset` plus their offset; returns their CRC-32C.
    func copyOut(from fd: FileDescriptor, object: Tier1Object, start: UInt64 = 0, end: UInt64? = nil, to target: FileDescriptor?,
                         at targetOffset: UInt64) throws(GedsError) -> UInt32 {
        let end = end ?? object.size
        let buffer = buffers.take()
        defer { buffers.give(buffer) }
        var crc: UInt32 = 0
        var offset = start
        while offset < end {
            let want = Int(min(UInt64(chunkSize), roundUp(end - offset)))
            let expected = Int(min(UInt64(want), end - offset))
            guard try preadBlocks(fd, buffer, want, offset: offset, object: object) >= expected else {
                throw shortRead(object, at: offset)
            }
            crc = CRC32C.update(crc, UnsafeRawBufferPointer(start: buffer, count: expected))
            if let target {
                do {
                    try target.writeAll(toAbsoluteOffset: Int64(targetOffset + offset), UnsafeRawBufferPointer(start: buffer, count: expected))
                } catch {
                    throw GedsError.io("cannot write blob \(object.blob.fileName) out of tier 1", error)
                }
            }
            offset += UInt64(expected)
        }
        return crc
    }

    func readRange(from fd: FileDescriptor, object: Tier1Object, start: UInt64, count: Int,
                           into destination: UnsafeMutableRawBufferPointer) throws(GedsError) {
        let buffer = buffers.take()
        defer { buffers.give(buffer) }
        var copied = 0
        while copied < count {
            let position = start + UInt64(copied)
            let blockStart = position / UInt64(blockSize) * UInt64(blockSize)
            let skip = Int(position - blockStart)
            let want = min(chunkSize, (skip + count - copied + blockSize - 1) / blockSize * blockSize)
            let got = try preadBlocks(fd, buffer, want, offset: blockStart, object: object)
            let useful = min(got - skip, count - copied)
            guard useful > 0 else { throw shortRead(object, at: blockStart + UInt64(got)) }
            (destination.baseAddress! + copied).copyMemory(from: buffer + skip, byteCount: useful)
            copied += useful
        }
    }
}

extension Int {
    var nextPowerOfTwo: Int {
        guard self > 1 else { return 1 }
        return 1 << (Int.bitWidth - (self - 1).leadingZeroBitCount)
    }
}
