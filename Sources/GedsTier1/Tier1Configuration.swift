import GedsCore

/// How tier 1 uses `O_DIRECT`.
public enum Tier1DirectIO: Sendable, Equatable {
    /// Direct I/O where the file system takes it; buffered I/O, with one log line, where it refuses.
    case auto
    /// Direct I/O or nothing: a file system that refuses it makes `Tier1Store.init` fail.
    case required
    /// Buffered I/O (through the page cache), said once in the log.
    case disabled
}

/// What a new store does with object files it finds in its folder (left by an earlier process).
public enum Tier1Leftovers: Sendable, Equatable {
    /// Deletes them (and any `.partial` file).
    case remove
    /// Keeps the complete ones whose size and checksum were recorded (in the `user.geds.tier1` extended
    /// attribute) and whose size still matches, listed in `Tier1Store.objects`; deletes the others.
    case adopt
}

public struct Tier1Configuration: Sendable {
    /// The folder holding the objects (created if missing); an NVMe mount in production.
    public var directory: String
    /// Bytes the objects may take, counted in whole blocks (a 1-byte object takes one block).
    public var capacity: UInt64
    public var directIO: Tier1DirectIO
    /// Threads of the store's own NIOThreadPool: the most I/O calls in flight at once.
    public var threads: Int
    /// Bytes per read or write call (rounded up to whole blocks); also the size of each pooled buffer.
    public var chunkSize: Int
    /// Aligned buffers kept for reuse (more are allocated, and freed after use, when all are busy).
    public var pooledBuffers: Int
    public var leftovers: Tier1Leftovers
    /// Whether each object's blocks are reserved (`fallocate`) before it is written: one extent where the file
    /// system can, and a full disk found before any byte is written.
    public var preallocate: Bool
    /// Objects of at least twice this size are read as parts of this size on several threads at once (more I/O
    /// in flight, and the checksum computed alongside).
    public var stripeSize: Int
    /// Where the store's few log lines go (default: standard error).
    public var log: @Sendable (String) -> Void
    /// Makes opening with O_DIRECT fail with EINVAL, as on a file system that refuses it (for tests of the fallback).
    @_spi(Testing) public var simulateDirectIORefusal = false

    public init(directory: String, capacity: UInt64, directIO: Tier1DirectIO = .auto, threads: Int = 4,
                chunkSize: Int = 4 << 20, pooledBuffers: Int = 8, leftovers: Tier1Leftovers = .remove,
                preallocate: Bool = true, stripeSize: Int = 16 << 20,
                log: @escaping @Sendable (String) -> Void = { line in printError("geds tier1: " + line) }) {
        self.directory = directory
        self.capacity = capacity
        self.directIO = directIO
        self.threads = max(1, threads)
        self.chunkSize = max(4096, chunkSize)
        self.pooledBuffers = max(0, pooledBuffers)
        self.leftovers = leftovers
        self.preallocate = preallocate
        self.stripeSize = stripeSize
        self.log = log
    }
}

/// An object held in tier 1: its true size (the file holds exactly that many bytes) and the CRC-32C of its bytes.
public struct Tier1Object: Sendable, Hashable {
    public var blob: BlobID
    public var size: UInt64
    public var checksum: UInt32

    public init(blob: BlobID, size: UInt64, checksum: UInt32) {
        self.blob = blob
        self.size = size
        self.checksum = checksum
    }
}

public struct Tier1Usage: Sendable, Equatable {
    public var objects: Int
    /// The objects' true sizes added up.
    public var bytes: UInt64
    /// Bytes counted against the capacity: every object and every write in progress, in whole blocks.
    public var reserved: UInt64
    public var capacity: UInt64

    public init(objects: Int, bytes: UInt64, reserved: UInt64, capacity: UInt64) {
        self.objects = objects
        self.bytes = bytes
        self.reserved = reserved
        self.capacity = capacity
    }
}
