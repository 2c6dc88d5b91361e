/// When a sealed object reaches a more durable place than its node's memory.
public enum Persistency: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Tier 0 only: gone when its nodes are.
    case ephemeral = 0
    /// Also written to the sealing node's tier 1 before the seal returns.
    case tier1 = 1
    /// In S3 before the seal returns.
    case writeThrough = 2
    /// Uploaded to S3 in the background after the seal, retried until it is there.
    case writeBack = 3

    public var description: String {
        switch self {
        case .ephemeral: "ephemeral"
        case .tier1: "tier1"
        case .writeThrough: "write-through"
        case .writeBack: "write-back"
        }
    }

    /// Whether objects with this persistency go to S3 (so their bucket needs an S3 store).
    public var uploadsToS3: Bool { self == .writeThrough || self == .writeBack }

    public init(parsing text: String) throws(GedsError) {
        guard let value = Persistency.allCases.first(where: { $0.description == text }) else {
            throw GedsError(.invalidArgument, "persistency: expected ephemeral, tier1, write-through or write-back, got '\(text)'")
        }
        self = value
    }
}

/// One object in an S3 service: where an S3 copy of a blob is (or is to be). No credentials: each node signs
/// with its own.
public struct S3ObjectReference: Sendable, Hashable, CustomStringConvertible {
    /// `http(s)://HOST[:PORT]`
    public var endpoint: String
    public var bucket: String
    public var key: String
    public var region: String

    public init(endpoint: String, bucket: String, key: String, region: String) {
        self.endpoint = endpoint
        self.bucket = bucket
        self.key = key
        self.region = region
    }

    /// `ENDPOINT/BUCKET/KEY`, as `geds stat` shows it.
    public var url: String { endpoint + "/" + bucket + "/" + key }
    public var description: String { url }
}

/// A GEDS bucket's S3 store, as the MDS holds it for every node: the S3 bucket, the prefix GEDS keys get there,
/// its region, and the persistency of objects sealed into the bucket (unless an object says otherwise).
public struct BucketStorage: Sendable, Equatable, CustomStringConvertible {
    /// `http(s)://HOST[:PORT]`
    public var endpoint: String
    public var bucket: String
    public var prefix: String
    public var region: String
    public var persistency: Persistency

    public init(endpoint: String, bucket: String, prefix: String = "", region: String = "us-east-1",
                persistency: Persistency) {
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix
        self.region = region
        self.persistency = persistency
    }

    /// Where the object under a GEDS `key` of this bucket is kept in S3.
    public func object(forKey key: String) -> S3ObjectReference {
        S3ObjectReference(endpoint: endpoint, bucket: bucket, key: prefix + key, region: region)
    }

    /// The GEDS key of an S3 key under the prefix (nil when it is outside it).
    public func gedsKey(forS3Key s3Key: String) -> String? {
        s3Key.hasPrefix(prefix) ? String(s3Key.dropFirst(prefix.count)) : nil
    }

    public var description: String {
        "s3=\(endpoint)/\(bucket) prefix=\(prefix) region=\(region) persistency=\(persistency)"
    }
}

/// What a seal into a bucket with an S3 store tells the sealing node: the bucket's persistency and where the
/// blob's S3 copy goes.
public struct S3Assignment: Sendable, Equatable {
    public var object: S3ObjectReference
    public var persistency: Persistency
    /// The object's user metadata as it is now: uploaded as `x-amz-meta-*` headers.
    public var metadata: [String: String]
    /// A node has put the blob there already (so spilling it there from tier 1 needs no upload).
    public var stored: Bool

    public init(object: S3ObjectReference, persistency: Persistency, metadata: [String: String] = [:], stored: Bool = false) {
        self.object = object
        self.persistency = persistency
        self.metadata = metadata
        self.stored = stored
    }
}
