import GedsCore
import GedsNode
import GedsWire

extension GEDS {
    // MARK: S3 persistence

    /// Gives a bucket an S3 store (or with nil takes it away), creating the bucket when it does not exist.
    /// Only the address, prefix, region and persistency go to the MDS: every node signs with its own credentials.
    public func setBucketStorage(_ bucket: BucketName, _ storage: BucketStorage?) async throws(GedsError) {
        let name = bucket.rawValue
        if let attachment { return try attachment.expectOK(.call(.setBucketStorage(bucket: name, storage: storage))) }
        try await node.mds.expectOK(.setBucketStorage(bucket: name, storage: storage))
    }

    public func setBucketStorage(_ bucket: String, _ storage: BucketStorage?) async throws(GedsError) {
        try await setBucketStorage(BucketName(bucket), storage)
    }

    public func bucketStorage(_ bucket: BucketName) async throws(GedsError) -> BucketStorage? {
        let name = bucket.rawValue
        if let attachment {
            let reply = try attachment.call(.call(.bucketStorage(bucket: name)))
            guard case .storage(let storage) = reply else { throw Attachment.unexpected(reply) }
            return storage
        }
        return try await node.bucketStorage(name)
    }

    public func bucketStorage(_ bucket: String) async throws(GedsError) -> BucketStorage? {
        try await bucketStorage(BucketName(bucket))
    }

    /// Waits until every write-back upload queued on any live node is in S3; `timedOut` naming the node and
    /// its last error when one is still uploading after `timeoutMilliseconds`.
    public func flush(timeoutMilliseconds: UInt64 = 300_000) async throws(GedsError) {
        if let attachment { return try attachment.expectOK(.call(.flush(timeoutMilliseconds: timeoutMilliseconds))) }
        try await node.flushEverywhere(timeoutMilliseconds: timeoutMilliseconds)
    }
}
