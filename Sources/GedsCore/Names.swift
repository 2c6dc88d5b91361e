/// Bucket names follow S3's rules for new buckets: 3–63 characters of lowercase letters, digits, dots and
/// hyphens, starting and ending with a letter or digit, no "..", not shaped like an IPv4 address, and none of
/// the prefixes and suffixes S3 reserves.
public struct BucketName: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: String

    public init(_ name: String) throws(GedsError) {
        if let reason = BucketName.violation(in: name) {
            throw GedsError(.invalidName, "invalid bucket name '\(name)': \(reason)")
        }
        rawValue = name
    }

    public var description: String { rawValue }
    public static func < (lhs: BucketName, rhs: BucketName) -> Bool { lhs.rawValue < rhs.rawValue }

    static func violation(in name: String) -> String? {
        let bytes = Array(name.utf8)
        guard (3...63).contains(bytes.count) else { return "must be 3 to 63 characters long" }
        func isLowerAlnum(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) }
        for b in bytes where !(isLowerAlnum(b) || b == 0x2E || b == 0x2D) {
            return "only lowercase letters, digits, '.' and '-' are allowed"
        }
        guard isLowerAlnum(bytes.first!), isLowerAlnum(bytes.last!) else {
            return "must begin and end with a letter or digit"
        }
        if name.contains("..") { return "must not contain two adjacent periods" }
        if name.contains(".-") || name.contains("-.") { return "must not contain '.-' or '-.'" }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count == 4, parts.allSatisfy({ !$0.isEmpty && $0.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }) {
            return "must not be formatted as an IP address"
        }
        for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] where name.hasPrefix(prefix) {
            return "must not begin with '\(prefix)'"
        }
        for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] where name.hasSuffix(suffix) {
            return "must not end with '\(suffix)'"
        }
        return nil
    }
}

/// Object keys follow S3: 1 to 1024 bytes of UTF-8. GEDS also refuses control characters, which S3 only
/// discourages, because they break listings and the command line.
public struct ObjectKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public static let maximumLength = 1024
    public let rawValue: String

    public init(_ key: String) throws(GedsError) {
        let count = key.utf8.count
        guard count >= 1, count <= ObjectKey.maximumLength else {
            throw GedsError(.invalidName, "invalid object key: must be 1 to \(ObjectKey.maximumLength) bytes of UTF-8, got \(count)")
        }
        if key.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }) {
            throw GedsError(.invalidName, "invalid object key '\(key.debugDescription)': control characters are not allowed")
        }
        rawValue = key
    }

    public var description: String { rawValue }
    public static func < (lhs: ObjectKey, rhs: ObjectKey) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// `bucket/key`, as the CLI and logs write it.
public struct ObjectPath: Hashable, Sendable, CustomStringConvertible {
    public let bucket: BucketName
    public let key: ObjectKey

    public init(bucket: BucketName, key: ObjectKey) {
        self.bucket = bucket
        self.key = key
    }

    /// Parses `bucket/key`; the key is everything after the first '/'.
    public init(parsing text: String) throws(GedsError) {
        guard let slash = text.firstIndex(of: "/") else {
            throw GedsError(.invalidName, "expected BUCKET/KEY, got '\(text)'")
        }
        bucket = try BucketName(String(text[..<slash]))
        key = try ObjectKey(String(text[text.index(after: slash)...]))
    }

    public var description: String { "\(bucket.rawValue)/\(key.rawValue)" }
}

/// User metadata: short names, UTF-8 values, 2 KiB in all (as S3's user-defined metadata).
public enum UserMetadata {
    public static let maximumTotalBytes = 2048

    public static func validate(_ metadata: [String: String]) throws(GedsError) {
        var total = 0
        for (name, value) in metadata {
            guard !name.isEmpty, name.utf8.count <= 128,
                  name.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A)
                      || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D || $0 == 0x5F || $0 == 0x2E }) else {
                throw GedsError(.invalidArgument, "invalid metadata name '\(name)': use 1 to 128 of A-Z a-z 0-9 - _ .")
            }
            total += name.utf8.count + value.utf8.count
        }
        if total > maximumTotalBytes {
            throw GedsError(.metadataTooLarge, "metadata is \(total) bytes; at most \(maximumTotalBytes) are allowed")
        }
    }
}
