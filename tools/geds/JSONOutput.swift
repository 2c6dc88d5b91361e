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
        let host: Nullable<String>
        /// For an S3 copy: its region.
        let region: Nullable<String>
        let transports: [String]


        init(_ location: Location) {
            node = location.holder
            tier = "\(location.tier)"
            switch location {
            case .node(let copy):
                host = Nullable(copy.hostID)
                region = Nullable(nil)
                transports = copy.transportURLs
            case .s3(let object):
                host = Nullable(nil)
                region = Nullable(object.region)
                transports = []
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
        let crc32c: Nullable<String>
        let copies: [Copy]
        let metadata: [String: String]
        /// The replication factor, and the copies on nodes now (S3 not counted).
        let wantedCopies: Int
        let presentCopies: Int


        init(_ info: ObjectInfo) {
            bucket = info.bucket
            key = info.key
            size = info.size
            sealed = info.sealed
            modified = JSONOutput.timestamp(info.modified)
            blob = info.blob.fileName
            crc32c = Nullable(info.locations.lazy.compactMap(\.checksum).first.map(hex32))
            copies = info.locations.map(Copy.init)
            metadata = info.metadata
            wantedCopies = info.wantedCopies
            presentCopies = info.presentCopies
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
            let rdma: Nullable<String>
            let objects: UInt64
            let bytes: UInt64
            let draining: Bool
            let drainFailure: Nullable<String>
        }

        let nodes: [Node]
    }

    /// An optional that is written as `null` instead of being left out.
    struct Nullable<Value: Encodable>: Encodable {
        let value: Value?

        init(_ value: Value?) {
            self.value = value
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            if let value { try container.encode(value) } else { try container.encodeNil() }
        }
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
