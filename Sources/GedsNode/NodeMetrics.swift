import Metrics

/// What a node counts for `/metrics` (swift-metrics; nothing is recorded unless the process bootstrapped a
/// backend, as `gedsd --metrics` does before it starts the node). Each update is one atomic add. Levels (tier
/// bytes and objects, pending uploads) are read at scrape time from `Node.levels` instead.
enum NodeMetrics {
    /// Object bytes this node read, by the carrier they came over (a one-sided RDMA READ is invisible to the
    /// owner, so the reader counts it).
    static let readRDMA = Counter(label: "geds_read_bytes_total", dimensions: [("carrier", "rdma")])
    static let readTCP = Counter(label: "geds_read_bytes_total", dimensions: [("carrier", "tcp")])
    static let readLocal = Counter(label: "geds_read_bytes_total", dimensions: [("carrier", "local")])
    static let readS3 = Counter(label: "geds_read_bytes_total", dimensions: [("carrier", "s3")])
    /// Bytes that came with the lookup (kept inline by the MDS).
    static let readInline = Counter(label: "geds_read_bytes_total", dimensions: [("carrier", "inline")])
    /// Object bytes written: sealed here (local), uploaded to S3.
    static let writtenLocal = Counter(label: "geds_written_bytes_total", dimensions: [("carrier", "local")])
    static let writtenS3 = Counter(label: "geds_written_bytes_total", dimensions: [("carrier", "s3")])
    static let spills = Counter(label: "geds_spills_total")
    static let promotions = Counter(label: "geds_promotions_total")
    static let s3UploadFailures = Counter(label: "geds_s3_upload_failures_total")
}

extension Node {
    /// The levels `/metrics` reports, read when scraped.
    public struct Levels: Sendable {
        public var tier0Objects: UInt64
        public var tier0Bytes: UInt64
        /// Nil without a limit.
        public var tier0Capacity: UInt64?
        public var tier1Objects: UInt64
        public var tier1Bytes: UInt64
        public var tier1Capacity: UInt64
        public var s3UploadsPending: UInt64
    }

    public var levels: Levels {
        let tier0Usage = tier0.usage
        let tier1Usage = tier1?.usage
        return Levels(tier0Objects: tier0Usage.blobs, tier0Bytes: tier0Usage.bytes, tier0Capacity: configuration.tier0Capacity,
                      tier1Objects: UInt64(tier1Usage?.objects ?? 0), tier1Bytes: tier1Usage?.bytes ?? 0,
                      tier1Capacity: tier1Usage?.capacity ?? 0,
                      s3UploadsPending: UInt64(persistence.pendingUploads))
    }
}
