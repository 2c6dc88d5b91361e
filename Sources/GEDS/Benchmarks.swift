import GedsCore
import GedsNode

/// What geds-perf measures beside the public API: the embedded node's tier 0 and its own MDS client. Not for
/// programs (an attached handle has no node: these trap there).
extension GEDS {
    /// Drops the node's tier-0 copy of `blob` as a delete does, so that the next view reads it into tier 0 again.
    @_spi(Benchmarks) public func dropTier0Copy(of blob: BlobID) { node.discardTier0Copy(blob) }

    /// The file holding `blob` in the node's tier 0.
    @_spi(Benchmarks) public func tier0Path(of blob: BlobID) -> String { node.tier0.path(of: blob) }

    /// How many blobs the node's tier 0 holds.
    @_spi(Benchmarks) public var tier0BlobCount: UInt64 { node.tier0.usage.blobs }

    /// The node's MDS client (over RDMA send/receive where the node talks to the MDS that way).
    @_spi(Benchmarks) public var metadataClient: MDSClient { node.mds }

    /// The node's index at the MDS.
    @_spi(Benchmarks) public var nodeIndex: UInt32 { node.index }
}
