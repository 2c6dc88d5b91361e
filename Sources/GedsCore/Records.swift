/// A network address written `HOST:PORT` (an IPv6 host in brackets).
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init(parsing text: String) throws(GedsError) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65535).contains(port) else {
            throw GedsError(.invalidArgument, "expected HOST:PORT, got '\(text)'")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw GedsError(.invalidArgument, "expected HOST:PORT, got '\(text)'") }
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Where a copy of an object's bytes lives.
public enum Tier: UInt8, Sendable, CustomStringConvertible {
    case tier0 = 0
    case tier1 = 1
    case s3 = 2

    public var description: String {
        switch self {
        case .tier0: "tier0"
        case .tier1: "tier1"
        case .s3: "s3"
        }
    }
}

/// The RDMA half of a location: what a peer needs for a one-sided READ of the owner's registered buffer.
public struct RDMAAccess: Hashable, Sendable {
    public var endpoint: Endpoint
    public var address: UInt64
    public var rkey: UInt32

    public init(endpoint: Endpoint, address: UInt64, rkey: UInt32) {
        self.endpoint = endpoint
        self.address = address
        self.rkey = rkey
    }
}

/// Where a small blob's tier-0 copy sits when it is packed into a slab file with others: the slab (a file named
/// `fileName` in the node's tier-0 folder) and the offset of its slot there. The slot starts with a header
/// naming the blob (GedsTier0's `SlotHeader`); its bytes follow.
public struct SlabSlot: Hashable, Sendable {
    public var slab: UInt32
    public var offset: UInt64

    public init(slab: UInt32, offset: UInt64) {
        self.slab = slab
        self.offset = offset
    }

    public var fileName: String { "slab-" + String(zeroPaddedHex: UInt64(slab), digits: 8) }

    public init?(fileName: String) {
        guard fileName.hasPrefix("slab-"), fileName.utf8.count == 13, let slab = UInt32(fileName.dropFirst(5), radix: 16) else { return nil }
        self.init(slab: slab, offset: 0)
    }
}

/// One copy of an object, as the MDS hands it out: a node's (in its tier 0 or tier 1), or an S3 object.
public enum Location: Hashable, Sendable {
    case node(NodeCopy)
    case s3(S3ObjectReference)

    /// The tier the copy is in (`s3` for an S3 object).
    public var tier: Tier {
        switch self {
        case .node(let copy): copy.tier
        case .s3: .s3
        }
    }

    /// Who holds the copy, as `geds stat` and `geds where` name it: the node's name, or the S3 object's URL.
    public var holder: String {
        switch self {
        case .node(let copy): copy.node
        case .s3(let object): object.url
        }
    }

    /// The node's copy (nil for an S3 object).
    public var nodeCopy: NodeCopy? {
        if case .node(let copy) = self { return copy }
        return nil
    }

    /// The S3 object (nil for a node's copy).
    public var s3Object: S3ObjectReference? {
        if case .s3(let object) = self { return object }
        return nil
    }

    /// The CRC-32C of the blob's bytes, known once a node wrote a copy of it to tier 1 (nil before, and for S3).
    public var checksum: UInt32? { nodeCopy?.checksum }

    /// The copies in the order the node `node` of host `hostID` reads them (the next one after an error): its own,
    /// then one on its host, then one reachable over RDMA (when it reads over RDMA), then the other nodes', then S3.
    /// Stable: among equals the MDS's order (the first copy published first) stays.
    public static func readingOrder(_ locations: [Location], node: String, hostID: String, overRDMA: Bool) -> [Location] {
        func rank(_ location: Location) -> Int {
            switch location {
            case .node(let copy): copy.node == node ? 0 : copy.hostID == hostID ? 1 : overRDMA && copy.rdma != nil ? 2 : 3
            case .s3: 4
            }
        }
        return locations.enumerated().sorted { (rank($0.element), $0.offset) < (rank($1.element), $1.offset) }.map(\.element)
    }
}

/// A copy of an object that a node holds, and how to reach it.
public struct NodeCopy: Hashable, Sendable {
    /// The node's name.
    public var node: String
    public var hostID: String
    /// `tier0` or `tier1`.
    public var tier: Tier
    public var tcp: Endpoint
    public var rdma: RDMAAccess?
    /// The copy's file, for readers on the same host, which map it instead of using the network.
    public var path: String
    /// Set when the copy is packed into the slab file at `path`: its slot's offset there (see `SlabSlot`).
    /// Readers check the slot's header, which names the blob (a stale location finds another one).
    public var offset: UInt64?
    /// The CRC-32C of the blob's bytes, known once a copy of it was written to tier 1 (nil before).
    public var checksum: UInt32?

    public init(node: String, hostID: String, tier: Tier, tcp: Endpoint, rdma: RDMAAccess?, path: String,
                offset: UInt64? = nil, checksum: UInt32? = nil) {
        self.node = node
        self.hostID = hostID
        self.tier = tier
        self.tcp = tcp
        self.rdma = rdma
        self.path = path
        self.offset = offset
        self.checksum = checksum
    }

    /// How a reader can reach this copy, as URLs (`tcp://HOST:PORT`, then `rdma://HOST:PORT` when the copy is
    /// registered for one-sided READs).
    public var transportURLs: [String] {
        ["tcp://\(tcp)"] + (rdma.map { ["rdma://\($0.endpoint)"] } ?? [])
    }
}

/// Identifies the immutable bytes of one sealed object. Keys point at blobs: rename moves a key, copy adds a
/// key for the same blob, overwriting binds the key to a new blob. A blob id is never reused, so a stale
/// location can never yield another object's bytes. On the wire and in files it is its 64-bit `rawValue`.
public struct BlobID: Hashable, Comparable, Sendable, ExpressibleByIntegerLiteral, CustomStringConvertible {
    public let rawValue: UInt64

    public init(_ rawValue: UInt64) {
        self.rawValue = rawValue
    }

    public init(integerLiteral value: UInt64) {
        rawValue = value
    }

    public static func < (lhs: BlobID, rhs: BlobID) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The next id an MDS hands out.
    public var next: BlobID { BlobID(rawValue + 1) }

    public var description: String { fileName }
}

public struct ObjectInfo: Sendable, Equatable {
    public var bucket: String
    public var key: String
    public var blob: BlobID
    public var size: UInt64
    public var sealed: Bool
    public var modified: UInt64  // milliseconds since 1970
    public var metadata: [String: String]
    public var locations: [Location]
    /// The bytes themselves, for a small object the MDS keeps inline (see `InlineContents`): a lookup then
    /// answers a read without a second round trip. Nil for larger objects, or when the MDS keeps none.
    public var contents: [UInt8]?
    /// How many copies on distinct hosts the object should have (its replication factor; 1 unless replicated).
    /// `presentCopies` says how many it has now.
    public var wantedCopies: Int

    public init(bucket: String, key: String, blob: BlobID, size: UInt64, sealed: Bool, modified: UInt64,
                metadata: [String: String], locations: [Location], contents: [UInt8]? = nil, wantedCopies: Int = 1) {
        self.wantedCopies = wantedCopies
        self.bucket = bucket
        self.key = key
        self.blob = blob
        self.size = size
        self.sealed = sealed
        self.modified = modified
        self.metadata = metadata
        self.locations = locations
        self.contents = contents
    }

    /// The copies on nodes now (an S3 copy is not counted: the replication factor is about nodes).
    public var presentCopies: Int { locations.lazy.filter { $0.nodeCopy != nil }.count }

    /// Copies bytes from `offset` (up to `buffer.count`, clipped to the object) out of the inline contents; nil
    /// when the object's bytes did not come with it.
    public func copyContents(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        guard let contents, contents.count == Int(size) else { return nil }
        guard offset < size, buffer.count > 0 else { return 0 }
        let count = min(buffer.count, Int(size - offset))
        contents.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + Int(offset), byteCount: count) }
        return count
    }
}

/// Small objects' bytes kept by the MDS beside their metadata, so that one lookup answers a get (one round trip
/// where a node copy costs two). A node sends a sealed object's bytes with its seal when the object is at most
/// the limit the MDS announced at registration; the MDS keeps them while its budget lasts.
public enum InlineContents {
    /// The MDS's default: objects up to 64 KiB.
    public static let defaultLimit: UInt32 = 64 << 10
    /// The largest limit an MDS may set (what a seal or a lookup may carry).
    public static let maximumLimit: UInt32 = 1 << 20
    /// The MDS's default budget for all inline bytes together.
    public static let defaultBudget: UInt64 = 1 << 30
}

/// How many copies of an object to keep, each on a distinct host (`geds put --replicas N`, `geds bucket B --replicas
/// N`), and whether its seal waits until all of them are published (else it returns after the first and the MDS
/// makes the others).
public struct Replicas: Sendable, Equatable {
    /// The largest replication factor (more copies than that buy nothing but traffic).
    public static let maximum = 16
    public var copies: Int
    public var waitForAll: Bool

    public init(copies: Int, waitForAll: Bool = true) throws(GedsError) {
        try Replicas.check(copies)
        self.copies = copies
        self.waitForAll = waitForAll
    }

    public static func check(_ copies: Int) throws(GedsError) {
        guard (1...maximum).contains(copies) else {
            throw GedsError(.invalidArgument, "replicas must be 1 to \(maximum), got \(copies)")
        }
    }
}

public struct ListEntry: Sendable, Equatable {
    public var key: String
    public var size: UInt64
    public var modified: UInt64

    public init(key: String, size: UInt64, modified: UInt64) {
        self.key = key
        self.size = size
        self.modified = modified
    }
}

/// One page of a listing, shaped like S3's ListObjectsV2.
public struct ListPage: Sendable, Equatable {
    public var objects: [ListEntry]
    public var commonPrefixes: [String]
    /// Set when the page is full; pass it as `startAfter` to get the next page.
    public var nextStartAfter: String?

    public init(objects: [ListEntry], commonPrefixes: [String], nextStartAfter: String?) {
        self.objects = objects
        self.commonPrefixes = commonPrefixes
        self.nextStartAfter = nextStartAfter
    }
}

public enum NodeRole: UInt8, Sendable {
    /// A process that links the library (a task); its objects live as long as it does.
    case embedded = 0
    /// A long-lived `gedsd`: where objects are relocated to outlive the tasks that wrote them.
    case daemon = 1
}

public struct NodeInfo: Sendable, Equatable {
    public var name: String
    public var hostID: String
    public var role: NodeRole
    public var tcp: Endpoint
    /// Where the node takes RDMA connections; nil when it offers TCP only.
    public var rdma: Endpoint?
    public var alive: Bool
    public var blobs: UInt64
    public var bytes: UInt64
    /// Moving its copies to other nodes before it leaves (`geds drain`): no new objects go to it.
    public var draining: Bool
    /// Why its last drain stopped short (it kept serving); nil when none failed since it registered.
    public var drainFailure: String?

    public init(name: String, hostID: String, role: NodeRole, tcp: Endpoint, rdma: Endpoint? = nil, alive: Bool,
                blobs: UInt64, bytes: UInt64, draining: Bool = false, drainFailure: String? = nil) {
        self.draining = draining
        self.drainFailure = drainFailure
        self.name = name
        self.hostID = hostID
        self.role = role
        self.tcp = tcp
        self.rdma = rdma
        self.alive = alive
        self.blobs = blobs
        self.bytes = bytes
    }
}

extension Sequence<NodeInfo> {
    /// The nodes other than `name` that new copies may go to (alive, not draining), fewest bytes first.
    public func copyTargets(besides name: String) -> [NodeInfo] {
        filter { $0.alive && !$0.draining && $0.name != name }.sorted { $0.bytes < $1.bytes }
    }
}

extension BlobID {
    /// The blob's file name in any tier folder: 16 hex digits, so names sort and never collide.
    public var fileName: String { String(zeroPaddedHex: rawValue, digits: 16) }

    public init?(fileName: String) {
        guard fileName.utf8.count == 16,
              fileName.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }),
              let value = UInt64(fileName, radix: 16) else { return nil }
        rawValue = value
    }
}

extension String {
    /// The low `digits` hex digits of `value` (lowercase, zero-padded), written in place: the MDS names a copy's file
    /// on every lookup.
    init(zeroPaddedHex value: UInt64, digits: Int) {
        self.init(unsafeUninitializedCapacity: digits) { bytes in
            var rest = value
            for index in stride(from: digits - 1, through: 0, by: -1) {
                let digit = UInt8(truncatingIfNeeded: rest & 0xF)
                bytes[index] = digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "a") - 10 + digit
                rest >>= 4
            }
            return digits
        }
    }
}
