import GedsCore
import GedsWire

/// A range of a blob to read: what every carrier of blob bytes is given.
public struct CopyRange: Sendable {
    public var blob: BlobID
    /// The whole object's size (an RDMA registration covers all of it).
    public var objectSize: UInt64
    public var offset: UInt64
    public var length: UInt64

    public init(blob: BlobID, objectSize: UInt64, offset: UInt64, length: UInt64) {
        self.blob = blob
        self.objectSize = objectSize
        self.offset = offset
        self.length = length
    }
}

/// Reads ranges of one copy of a blob (the one it was made for) into a sink over one carrier (one-sided RDMA READs,
/// bulk TCP, multiplexed TCP, S3).
public protocol CopyReader: Sendable {
    /// Reads `range` into `sink.destination` (which has room for `range.length` bytes); returns the bytes delivered.
    func read(_ range: CopyRange, into sink: any ReadSink) async throws(GedsError) -> UInt64
}

/// Sends requests to the MDS over one carrier (TCP, RDMA send/receive).
public protocol MetadataCarrier: Sendable {
    /// The MDS's reply (a `.failure` reply is returned, not thrown); what is thrown is the carrier's own failure.
    func call(_ request: Request) async throws(GedsError) -> Reply
}
