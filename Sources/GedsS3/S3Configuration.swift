import GedsCore
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The keys an S3 client signs with. Its descriptions never show the secret or the session token (and show only
/// the last four characters of the access key id), so a configuration can be logged or put in an error message.
public struct S3Credentials: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
                             CustomReflectable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, when set, `AWS_SESSION_TOKEN`; nil when either of the
    /// first two is missing or empty.
    public init?(environment: [String: String]) {
        guard let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty,
              let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty else { return nil }
        let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        self.init(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
    }

    /// A profile of an AWS shared credentials file (`~/.aws/credentials` format: `[profile]` sections of
    /// `aws_access_key_id = …`, `aws_secret_access_key = …`, `aws_session_token = …`).
    public init(credentialsFile path: String, profile: String = "default") throws(GedsError) {
        let text = String(decoding: try readSmallFile(path, limit: 1 << 20, cannotOpen: "cannot open \(path)",
                                                      cannotRead: "cannot read \(path)"), as: UTF8.self)
        var section: String?
        var values: [String: String] = [:]
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let line = rawLine.trimmingSpaces()
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("["), line.hasSuffix("]") {
                var name = String(line.dropFirst().dropLast()).trimmingSpaces()
                if name.hasPrefix("profile ") { name = String(name.dropFirst(8)).trimmingSpaces() }
                section = name
                continue
            }
            guard section == profile, let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals]).trimmingSpaces().lowercased()] =
                String(line[line.index(after: equals)...]).trimmingSpaces()
        }
        guard let id = values["aws_access_key_id"], !id.isEmpty,
              let secret = values["aws_secret_access_key"], !secret.isEmpty else {
            throw GedsError(.invalidArgument, "no credentials for profile '\(profile)' in \(path)")
        }
        self.init(accessKeyID: id, secretAccessKey: secret,
                  sessionToken: values["aws_session_token"].flatMap { $0.isEmpty ? nil : $0 })
    }

    /// The environment's credentials, else the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default
    /// `~/.aws/credentials`, profile `AWS_PROFILE`, default `default`).
    public static func resolve(environment: [String: String] = processEnvironment()) throws(GedsError) -> S3Credentials {
        if let credentials = S3Credentials(environment: environment) { return credentials }
        let file = environment["AWS_SHARED_CREDENTIALS_FILE"] ?? (environment["HOME"].map { $0 + "/.aws/credentials" } ?? "")
        let profile = environment["AWS_PROFILE"] ?? "default"
        guard !file.isEmpty, access(file, R_OK) == 0 else {
            throw GedsError(.invalidArgument,
                            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or write \(file.isEmpty ? "~/.aws/credentials" : file)")
        }
        return try S3Credentials(credentialsFile: file, profile: profile)
    }

    /// The access key id with all but its last four characters hidden.
    public var maskedAccessKeyID: String {
        accessKeyID.count <= 4 ? "****" : "****" + accessKeyID.suffix(4)
    }

    public var description: String {
        "S3Credentials(accessKeyID: \(maskedAccessKeyID), secretAccessKey: <redacted>, sessionToken: \(sessionToken == nil ? "none" : "<redacted>"))"
    }

    public var debugDescription: String { description }

    public var customMirror: Mirror {
        Mirror(self, children: ["accessKeyID": maskedAccessKeyID, "secretAccessKey": "<redacted>",
                                "sessionToken": sessionToken == nil ? "none" : "<redacted>"])
    }

    /// `text` with every occurrence of the secret key and the session token replaced by `<redacted>`.
    public func redacting(_ text: String) -> String {
        var result = text
        for secret in [secretAccessKey, sessionToken ?? ""] where secret.count >= 4 {
            result = result.replacingAll(secret, with: "<redacted>")
        }
        return result
    }
}

/// How failed requests are retried: 5xx answers, throttling, and connection errors, with exponential backoff
/// and jitter (each delay is a random fraction, between one half and one, of `base·2^(attempt-1)` capped at
/// `maxDelay`). Other failures are not retried.
public struct S3RetryPolicy: Sendable, Equatable {
    /// Attempts in all, the first included.
    public var maxAttempts: Int
    public var baseDelayMilliseconds: Int
    public var maxDelayMilliseconds: Int

    public init(maxAttempts: Int = 5, baseDelayMilliseconds: Int = 100, maxDelayMilliseconds: Int = 5_000) {
        self.maxAttempts = max(1, maxAttempts)
        self.baseDelayMilliseconds = max(0, baseDelayMilliseconds)
        self.maxDelayMilliseconds = max(0, maxDelayMilliseconds)
    }

    /// The pause before attempt `attempt + 1`, after `attempt` attempts failed.
    public func delayMilliseconds(after attempt: Int) -> Int {
        let exponent = min(max(attempt - 1, 0), 30)
        let ceiling = min(maxDelayMilliseconds, baseDelayMilliseconds &* (1 << exponent))
        guard ceiling > 0 else { return 0 }
        return Int.random(in: (ceiling / 2)...ceiling)
    }

    /// The longest total pause the policy can take between the first and the last attempt.
    public var worstCaseBackoffMilliseconds: Int {
        (1..<maxAttempts).reduce(0) { $0 + min(maxDelayMilliseconds, baseDelayMilliseconds &* (1 << min($1 - 1, 30))) }
    }
}

/// Whether request bodies are hashed into the signature (S3 then checks the bytes it received against the hash)
/// or sent as `UNSIGNED-PAYLOAD` (one pass less over the data; integrity then rests on TCP/TLS alone).
public enum S3PayloadSigning: Sendable, Equatable {
    case signed
    case unsigned
}

/// Where and how a client talks to one S3-compatible service, with path-style addressing
/// (`ENDPOINT/BUCKET/KEY`).
public struct S3Configuration: Sendable, CustomStringConvertible {
    /// `http://HOST[:PORT]` or `https://HOST[:PORT]`, without a path.
    public var endpoint: String
    public var region: String
    public var credentials: S3Credentials
    public var retry: S3RetryPolicy
    public var payloadSigning: S3PayloadSigning
    /// Threads that run the blocking curl transfers (and so the most requests in flight at once).
    public var threads: Int
    public var connectTimeoutMilliseconds: Int
    /// A transfer that moves no byte for this long fails (and is retried).
    public var stallTimeoutSeconds: Int
    /// The part size of multipart uploads (5 MiB to 5 GiB; raised when an object would need more than 10,000).
    public var partSize: Int
    /// Objects of at least this size are uploaded in parts by `upload`.
    public var multipartThreshold: Int
    /// Parts of one upload sent at once.
    public var uploadConcurrency: Int
    public var logger: Logger

    public init(endpoint: String, region: String = "us-east-1", credentials: S3Credentials,
                retry: S3RetryPolicy = S3RetryPolicy(), payloadSigning: S3PayloadSigning = .signed,
                threads: Int = 8, connectTimeoutMilliseconds: Int = 5_000, stallTimeoutSeconds: Int = 30,
                partSize: Int = 16 << 20, multipartThreshold: Int = 64 << 20, uploadConcurrency: Int = 4,
                logger: Logger = Logger(label: "geds.s3")) {
        var endpoint = endpoint
        while endpoint.hasSuffix("/") { endpoint.removeLast() }
        self.endpoint = endpoint
        self.region = region
        self.credentials = credentials
        self.retry = retry
        self.payloadSigning = payloadSigning
        self.threads = max(1, threads)
        self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
        self.stallTimeoutSeconds = stallTimeoutSeconds
        self.partSize = partSize
        self.multipartThreshold = multipartThreshold
        self.uploadConcurrency = max(1, uploadConcurrency)
        self.logger = logger
    }

    /// The endpoint with credentials (see `S3Credentials.resolve`) and region (`AWS_REGION`, else
    /// `AWS_DEFAULT_REGION`, else us-east-1) from the environment.
    public static func fromEnvironment(endpoint: String,
                                       environment: [String: String] = processEnvironment()) throws(GedsError) -> S3Configuration {
        let region = environment["AWS_REGION"].flatMap { $0.isEmpty ? nil : $0 }
            ?? environment["AWS_DEFAULT_REGION"].flatMap { $0.isEmpty ? nil : $0 } ?? "us-east-1"
        return S3Configuration(endpoint: endpoint, region: region, credentials: try S3Credentials.resolve(environment: environment))
    }

    public var description: String {
        "S3Configuration(endpoint: \(endpoint), region: \(region), credentials: \(credentials), threads: \(threads))"
    }
}

/// A bucket of an S3 service and the prefix GEDS keys get there, written `ENDPOINT/BUCKET[/PREFIX]`
/// (for example `http://127.0.0.1:9000/geds-data/run1/`).
public struct S3BucketAddress: Sendable, Hashable, CustomStringConvertible {
    public var endpoint: String
    public var bucket: String
    public var prefix: String

    public init(endpoint: String, bucket: String, prefix: String = "") {
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix
    }

    public init(parsing text: String) throws(GedsError) {
        guard let scheme = text.firstRange(of: "://"), text.hasPrefix("http://") || text.hasPrefix("https://") else {
            throw GedsError(.invalidArgument, "expected http(s)://HOST[:PORT]/BUCKET[/PREFIX], got '\(text)'")
        }
        let rest = text[scheme.upperBound...]
        guard let slash = rest.firstIndex(of: "/"), slash != rest.startIndex else {
            throw GedsError(.invalidArgument, "no bucket in S3 address '\(text)' (expected http(s)://HOST[:PORT]/BUCKET[/PREFIX])")
        }
        let path = rest[rest.index(after: slash)...]
        let bucketEnd = path.firstIndex(of: "/") ?? path.endIndex
        let bucket = String(path[..<bucketEnd])
        guard !bucket.isEmpty else {
            throw GedsError(.invalidArgument, "no bucket in S3 address '\(text)' (expected http(s)://HOST[:PORT]/BUCKET[/PREFIX])")
        }
        self.endpoint = String(text[..<slash])
        self.bucket = bucket
        self.prefix = bucketEnd == path.endIndex ? "" : String(path[path.index(after: bucketEnd)...])
    }

    /// The S3 key of a GEDS key.
    public func s3Key(for key: String) -> String { prefix + key }

    public var description: String { endpoint + "/" + bucket + (prefix.isEmpty ? "" : "/" + prefix) }
}

/// This process's environment variables.
public func processEnvironment() -> [String: String] {
    var result: [String: String] = [:]
    var pointer = environ
    while let entry = pointer.pointee {
        let text = String(cString: entry)
        if let equals = text.firstIndex(of: "=") {
            result[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        pointer += 1
    }
    return result
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" || $0 == "\r\n" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[first...last])
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = self[...]
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        result += rest
        return result
    }
}
