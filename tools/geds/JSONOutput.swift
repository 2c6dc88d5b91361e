import Foundation
import GedsCore

/// `--json` output of `ls`, `stat`, `where` and `nodes`: one JSON document on stdout with stable snake_case
/// keys (scripts depend on them: add keys, never rename or remove one; an absent value is null, not a missing
/// key). Times are RFC 3339 in UTC.
enum JSONOutput {
    struct Buckets: Encodable {
        let buckets: [String]
    }

    struct Listing: Encodable {
        struct Object: Encodable {
            let key: String
            let size: UInt64
            let modified: String
        }

        let bucket: String
        let prefix: String
        let delimiter: String
        let objects: [Object]
        let commonPrefixes: [String]
    }

    struct Copy: Encodable {
        let node: String
        let tier: String
        /// The host id of a node's copy; nil for an S3 copy.
        let host: String?
        /// For an S3 copy: its region.
        let region: String?
        let transports: [String]

        enum CodingKeys: CodingKey { case node, tier, host, region, transports }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(node, forKey: .node)
            try container.encode(tier, forKey: .tier)
            try container.encode(host, forKey: .host)
            try container.encode(region, forKey: .region)
            try container.encode(transports, forKey: .transports)
        }

        init(_ location: Location) {
            node = location.node
            tier = "\(location.tier)"
            if location.tier == .s3 {
                host = nil
                region = location.hostID
                transports = []
            } else {
                host = location.hostID
                region = nil
                transports = location.transportURLs
            }
        }
    }

    struct Stat: Encodable {
        let bucket: String
        let key: String
        let size: UInt64
        let sealed: Bool
        let modified: String
        let blob: String
        let crc32c: String?
        let copies: [Copy]
        let metadata: [String: String]

        enum CodingKeys: CodingKey { case bucket, key, size, sealed, modified, blob, crc32c, copies, metadata }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(bucket, forKey: .bucket)
            try container.encode(key, forKey: .key)
            try container.encode(size, forKey: .size)
            try container.encode(sealed, forKey: .sealed)
            try container.encode(modified, forKey: .modified)
            try container.encode(blob, forKey: .blob)
            try container.encode(crc32c, forKey: .crc32c)
            try container.encode(copies, forKey: .copies)
            try container.encode(metadata, forKey: .metadata)
        }

        init(_ info: ObjectInfo) {
            bucket = info.bucket
            key = info.key
            size = info.size
            sealed = info.sealed
            modified = JSONOutput.timestamp(info.modified)
            blob = info.blob.fileName
            crc32c = info.locations.lazy.compactMap(\.checksum).first.map(hex32)
            copies = info.locations.map(Copy.init)
            metadata = info.metadata
        }
    }

    struct Copies: Encodable {
        let object: String
        let copies: [Copy]
    }

    struct Nodes: Encodable {
        struct Node: Encodable {
            let name: String
            let alive: Bool
            let role: String
            let host: String
            let tcp: String
            let rdma: String?
            let objects: UInt64
            let bytes: UInt64

            enum CodingKeys: CodingKey { case name, alive, role, host, tcp, rdma, objects, bytes }

            func encode(to encoder: any Encoder) throws {
                var container = encoder.container(keyedBy: CodingKeys.self)
                try container.encode(name, forKey: .name)
                try container.encode(alive, forKey: .alive)
                try container.encode(role, forKey: .role)
                try container.encode(host, forKey: .host)
                try container.encode(tcp, forKey: .tcp)
                try container.encode(rdma, forKey: .rdma)
                try container.encode(objects, forKey: .objects)
                try container.encode(bytes, forKey: .bytes)
            }
        }

        let nodes: [Node]
    }

    static func print(_ value: some Encodable) throws(GedsError) {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do {
            printLine(String(decoding: try encoder.encode(value), as: UTF8.self))
        } catch {
            throw GedsError(.invalidArgument, "cannot write JSON: \(error)")
        }
    }

    static func timestamp(_ milliseconds: UInt64) -> String {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000).formatted(.iso8601)
    }
}
