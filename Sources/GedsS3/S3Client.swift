import CCurl
import GedsCore
import Logging
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// What `headObject` tells about an object.
public struct S3ObjectAttributes: Sendable, Equatable {
    public var size: UInt64
    public var etag: String
    public var lastModified: String
    public var contentType: String?
    /// `x-amz-meta-*` headers, without the prefix.
    public var metadata: [String: String]
}

public struct S3ObjectSummary: Sendable, Equatable {
    public var key: String
    public var size: UInt64
    public var etag: String
    public var lastModified: String
}

/// One page of a ListObjectsV2 answer.
public struct S3ListPage: Sendable, Equatable {
    public var objects: [S3ObjectSummary]
    /// With a delimiter: the distinct key prefixes up to and including the delimiter.
    public var commonPrefixes: [String]
    public var isTruncated: Bool
    /// Pass it to the next `listObjects` call to continue (nil at the end).
    public var nextContinuationToken: String?
}

public struct S3CompletedPart: Sendable, Equatable {
    public var partNumber: Int
    public var etag: String

    public init(partNumber: Int, etag: String) {
        self.partNumber = partNumber
        self.etag = etag
    }
}

/// A client of one S3-compatible service over libcurl, path-style (`ENDPOINT/BUCKET/KEY`), signing with AWS
/// Signature V4.
///
/// The transfers block, so they run on the client's own threads (`S3Configuration.threads`), never on the
/// cooperative pool; the async calls wait for them there. Failed attempts are retried per
/// `S3Configuration.retry` (5xx answers, throttling, connection errors and timeouts); every other failure is
/// thrown at once as a `GedsError` naming the operation, bucket, key and endpoint, with the server's error code
/// and message. No error text or log line contains the secret key or the session token.
public final class S3Client: Sendable {
    public let configuration: S3Configuration
    private let signer: SigV4Signer
    private let workers: BlockingWorkers
    private let host: String
    private let limits: TransferLimits

    public init(_ configuration: S3Configuration) throws(GedsError) {
        let endpoint = configuration.endpoint
        guard endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://"),
              let scheme = endpoint.firstRange(of: "://") else {
            throw GedsError(.invalidArgument, "S3 endpoint must be http(s)://HOST[:PORT], got '\(endpoint)'")
        }
        let authority = endpoint[scheme.upperBound...]
        guard !authority.isEmpty, !authority.contains("/"), !authority.contains("?"), !authority.contains("@") else {
            throw GedsError(.invalidArgument,
                            "S3 endpoint must be http(s)://HOST[:PORT] without a path (the bucket goes in each call), got '\(endpoint)'")
        }
        self.configuration = configuration
        host = String(authority)
        signer = SigV4Signer(credentials: configuration.credentials, region: configuration.region)
        workers = BlockingWorkers(threads: configuration.threads, name: "geds-s3")
        limits = TransferLimits(connectTimeoutMilliseconds: configuration.connectTimeoutMilliseconds,
                                stallTimeoutSeconds: configuration.stallTimeoutSeconds)
    }

    // MARK: Buckets

    public func createBucket(_ bucket: String) async throws(GedsError) {
        var body: [UInt8] = []
        if configuration.region != "us-east-1" {
            body = Array(("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                + "<LocationConstraint>\(xmlEscape(configuration.region))</LocationConstraint></CreateBucketConfiguration>").utf8)
        }
        _ = try await send(Operation(verb: "CreateBucket", bucket: bucket), method: "PUT", body: .bytes(body))
    }

    public func deleteBucket(_ bucket: String) async throws(GedsError) {
        _ = try await send(Operation(verb: "DeleteBucket", bucket: bucket), method: "DELETE")
    }

    // MARK: Objects

    /// Stores `bytes` as one object (a single PUT; see `upload` for large objects). Returns the ETag.
    @discardableResult
    public func putObject(bucket: String, key: String, bytes: [UInt8], metadata: [String: String] = [:],
                          contentType: String? = nil) async throws(GedsError) -> String {
        try await put(bucket: bucket, key: key, body: .bytes(bytes), metadata: metadata, contentType: contentType)
    }

    /// Stores the caller's memory as one object. The memory must stay valid until the call returns.
    @discardableResult
    public func putObject(bucket: String, key: String, from buffer: UnsafeRawBufferPointer,
                          metadata: [String: String] = [:], contentType: String? = nil) async throws(GedsError) -> String {
        try await put(bucket: bucket, key: key, body: .buffer(buffer), metadata: metadata, contentType: contentType)
    }

    /// Stores `length` bytes of an open file, from `offset`, as one object (read with `pread`; the descriptor
    /// must not be opened with O_DIRECT).
    @discardableResult
    public func putObject(bucket: String, key: String, fileDescriptor: FileDescriptor, offset: UInt64 = 0, length: UInt64,
                          metadata: [String: String] = [:], contentType: String? = nil) async throws(GedsError) -> String {
        try await put(bucket: bucket, key: key, body: .file(descriptor: fileDescriptor, offset: offset, length: length),
                      metadata: metadata, contentType: contentType)
    }

    /// The whole object, into memory (at most `limit` bytes).
    public func getObject(bucket: String, key: String, limit: Int = 1 << 30) async throws(GedsError) -> [UInt8] {
        let response = try await send(Operation(verb: "GetObject", bucket: bucket, key: key), method: "GET",
                                      sink: .collect(limit: limit))
        return response.body
    }

    /// Reads the whole object (`range` nil) or the bytes `range` of it straight into the caller's buffer, which must
    /// be large enough. Returns the number of bytes read: the range's length, or less where it passes the end of the
    /// object. An interrupted transfer resumes where it stopped (guarded by the object's ETag, so the bytes cannot
    /// come from two versions).
    public func getObject(bucket: String, key: String, range: Range<UInt64>? = nil,
                          into buffer: UnsafeMutableRawBufferPointer) async throws(GedsError) -> Int {
        let operation = with(Operation(verb: "GetObject", bucket: bucket, key: key))
        if let range {
            guard !range.isEmpty else { return 0 }
            guard range.count <= UInt64(buffer.count) else {
                throw GedsError(.invalidArgument,
                                "\(operation): the range \(range.lowerBound)..<\(range.upperBound) does not fit in a buffer of \(buffer.count) bytes")
            }
        }
        var received = 0
        var etag: String?
        return try await withRetries(operation) { attempt async -> AttemptResult<Int> in
            if let range, UInt64(received) >= range.count { return .done(received) }
            let before = received
            var headers: [(String, String)] = []
            let start = (range?.lowerBound ?? 0) + UInt64(received)
            if let range {
                headers.append(("range", "bytes=\(start)-\(range.upperBound - 1)"))
            } else if received > 0 {
                headers.append(("range", "bytes=\(start)-"))
            }
            if let etag { headers.append(("if-match", etag)) }
            let destination = UnsafeMutableRawBufferPointer(rebasing: buffer[received...])
            let outcome = await self.attempt(operation, method: "GET", headers: headers, sink: .buffer(destination))
            received += outcome.response.received
            if etag == nil, outcome.response.received > 0 { etag = outcome.response.headers["etag"] }
            if outcome.failure == nil, outcome.response.status == 416, range != nil || before > 0 {
                // The range starts at or after the end of the object (for a resumed whole-object read: the
                // previous attempt had it all).
                return .done(received)
            }
            if let failure: AttemptResult<Int> = self.classify(operation, outcome) { return failure }
            if !headers.isEmpty && headers[0].0 == "range" && outcome.response.status != 206 {
                return .fail(GedsError(.protocolViolation,
                                       "\(operation): the server answered \(outcome.response.status) to a ranged GET instead of 206"))
            }
            return .done(received)
        }
    }

    /// Size, ETag, date, content type and user metadata of an object; `.noSuchObject` when there is none.
    public func headObject(bucket: String, key: String) async throws(GedsError) -> S3ObjectAttributes {
        let response = try await send(Operation(verb: "HeadObject", bucket: bucket, key: key), method: "HEAD")
        var metadata: [String: String] = [:]
        for (name, value) in response.headers where name.hasPrefix("x-amz-meta-") {
            metadata[String(name.dropFirst("x-amz-meta-".count))] = value
        }
        return S3ObjectAttributes(size: UInt64(response.headers["content-length"] ?? "") ?? 0,
                                  etag: response.headers["etag"] ?? "",
                                  lastModified: response.headers["last-modified"] ?? "",
                                  contentType: response.headers["content-type"], metadata: metadata)
    }

    /// Deletes an object; deleting one that does not exist succeeds (S3's rule).
    public func deleteObject(bucket: String, key: String) async throws(GedsError) {
        _ = try await send(Operation(verb: "DeleteObject", bucket: bucket, key: key), method: "DELETE")
    }

    /// A server-side copy (CopyObject: one request, for sources up to 5 GiB; no bytes pass through here). With
    /// `metadata` the copy gets it instead of the source's, which also rewrites an object's own metadata in place.
    public func copyObject(fromBucket: String, fromKey: String, toBucket: String, toKey: String,
                           metadata: [String: String]? = nil) async throws(GedsError) {
        let operation = Operation(verb: "CopyObject", bucket: toBucket, key: toKey)
        var headers = [("x-amz-copy-source", "/" + fromBucket + "/" + uriEncode(fromKey, encodeSlash: false))]
        if let metadata {
            headers.append(("x-amz-metadata-directive", "REPLACE"))
            headers += try metadataHeaders(operation, metadata, contentType: nil)
        }
        // A 200 whose body is an <Error> document (a copy that failed late) is a failure too: see `classify`.
        _ = try await send(operation, method: "PUT", headers: headers)
    }

    /// One page of ListObjectsV2.
    public func listObjects(bucket: String, prefix: String = "", delimiter: String? = nil,
                            continuationToken: String? = nil, startAfter: String? = nil,
                            maxKeys: Int? = nil) async throws(GedsError) -> S3ListPage {
        var query: [(String, String)] = [("list-type", "2")]
        if !prefix.isEmpty { query.append(("prefix", prefix)) }
        if let delimiter, !delimiter.isEmpty { query.append(("delimiter", delimiter)) }
        if let continuationToken { query.append(("continuation-token", continuationToken)) }
        if let startAfter { query.append(("start-after", startAfter)) }
        if let maxKeys { query.append(("max-keys", String(maxKeys))) }
        let operation = Operation(verb: "ListObjectsV2", bucket: bucket, key: prefix.isEmpty ? nil : prefix + "*")
        let response = try await send(operation, method: "GET", query: query, sink: .collect(limit: 64 << 20))
        return try S3ListPage(listBucketResult: parseXML(operation, response.body), operation: "\(operation)")
    }

    /// Every page of a listing, concatenated.
    public func listAllObjects(bucket: String, prefix: String = "",
                               delimiter: String? = nil) async throws(GedsError) -> (objects: [S3ObjectSummary], commonPrefixes: [String]) {
        var objects: [S3ObjectSummary] = []
        var prefixes: [String] = []
        var token: String?
        repeat {
            let page = try await listObjects(bucket: bucket, prefix: prefix, delimiter: delimiter, continuationToken: token)
            objects += page.objects
            prefixes += page.commonPrefixes
            token = page.isTruncated ? page.nextContinuationToken : nil
        } while token != nil
        return (objects, prefixes)
    }

    // MARK: Multipart upload

    /// Starts a multipart upload; returns its upload id.
    public func createMultipartUpload(bucket: String, key: String, metadata: [String: String] = [:],
                                      contentType: String? = nil) async throws(GedsError) -> String {
        let operation = Operation(verb: "CreateMultipartUpload", bucket: bucket, key: key)
        let headers = try metadataHeaders(operation, metadata, contentType: contentType)
        let response = try await send(operation, method: "POST", query: [("uploads", "")], headers: headers,
                                      body: .bytes([]), sink: .collect(limit: 1 << 20))
        let root = try parseXML(operation, response.body)
        guard let uploadID = root["UploadId"], !uploadID.isEmpty else {
            throw GedsError(.protocolViolation, "\(operation): no UploadId in the answer")
        }
        return uploadID
    }

    /// Uploads part `partNumber` (1…10,000) from the caller's memory; returns the part's ETag.
    public func uploadPart(bucket: String, key: String, uploadID: String, partNumber: Int,
                           from buffer: UnsafeRawBufferPointer) async throws(GedsError) -> String {
        try await uploadPart(bucket: bucket, key: key, uploadID: uploadID, partNumber: partNumber, body: .buffer(buffer))
    }

    /// Uploads part `partNumber` from `length` bytes of an open file at `offset`; returns the part's ETag.
    public func uploadPart(bucket: String, key: String, uploadID: String, partNumber: Int, fileDescriptor: FileDescriptor,
                           offset: UInt64, length: UInt64) async throws(GedsError) -> String {
        try await uploadPart(bucket: bucket, key: key, uploadID: uploadID, partNumber: partNumber,
                             body: .file(descriptor: fileDescriptor, offset: offset, length: length))
    }

    /// Joins the uploaded parts into the object; returns its ETag.
    @discardableResult
    public func completeMultipartUpload(bucket: String, key: String, uploadID: String,
                                        parts: [S3CompletedPart]) async throws(GedsError) -> String {
        let operation = Operation(verb: "CompleteMultipartUpload", bucket: bucket, key: key)
        var xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        for part in parts.sorted(by: { $0.partNumber < $1.partNumber }) {
            xml += "<Part><PartNumber>\(part.partNumber)</PartNumber><ETag>\(xmlEscape(part.etag))</ETag></Part>"
        }
        xml += "</CompleteMultipartUpload>"
        // S3 may answer 200 and still report an error in the body; `send` checks for that.
        let response = try await send(operation, method: "POST", query: [("uploadId", uploadID)],
                                      headers: [("content-type", "application/xml")], body: .bytes(Array(xml.utf8)),
                                      sink: .collect(limit: 1 << 20))
        let root = try parseXML(operation, response.body)
        return root["ETag"] ?? response.headers["etag"] ?? ""
    }

    public func abortMultipartUpload(bucket: String, key: String, uploadID: String) async throws(GedsError) {
        _ = try await send(Operation(verb: "AbortMultipartUpload", bucket: bucket, key: key), method: "DELETE",
                           query: [("uploadId", uploadID)])
    }

    /// Stores the caller's memory as one object: a single PUT below `multipartThreshold`, else a multipart upload
    /// of `partSize` parts, `uploadConcurrency` at a time (aborted if any part fails). Returns the ETag.
    @discardableResult
    public func upload(bucket: String, key: String, from buffer: UnsafeRawBufferPointer,
                       metadata: [String: String] = [:], contentType: String? = nil) async throws(GedsError) -> String {
        try await upload(bucket: bucket, key: key, source: .buffer(buffer), metadata: metadata, contentType: contentType)
    }

    /// As `upload(bucket:key:from:)`, from `length` bytes of an open file at `offset`.
    @discardableResult
    public func upload(bucket: String, key: String, fileDescriptor: FileDescriptor, offset: UInt64 = 0, length: UInt64,
                       metadata: [String: String] = [:], contentType: String? = nil) async throws(GedsError) -> String {
        try await upload(bucket: bucket, key: key, source: .file(descriptor: fileDescriptor, offset: offset, length: length),
                         metadata: metadata, contentType: contentType)
    }

    /// The part size `upload` uses for an object of `length` bytes: the configured size, raised (to a whole MiB)
    /// when the object would need more than 10,000 parts, and at least 5 MiB.
    public func partSize(forLength length: UInt64) -> UInt64 {
        var size = UInt64(max(configuration.partSize, 5 << 20))
        if length > size * 10_000 {
            size = (length + 9_999) / 10_000
            size = (size + (1 << 20) - 1) / (1 << 20) * (1 << 20)
        }
        return size
    }

    /// Stops the client's threads once queued work is done and returns when they have exited; later calls fail
    /// at once. Call it before the process exits.
    public func shutdown() async { await workers.shutdown() }

    // MARK: Internals

    struct Operation: CustomStringConvertible, Sendable {
        var verb: String
        var bucket: String
        var key: String?
        var endpoint = ""

        var description: String { "S3 \(verb) \(bucket)\(key.map { "/" + $0 } ?? "")\(endpoint.isEmpty ? "" : " at " + endpoint)" }
    }

    enum AttemptResult<T: Sendable>: Sendable {
        case done(T)
        case retry(GedsError)
        case fail(GedsError)
    }

    private func put(bucket: String, key: String, body: RequestBody, metadata: [String: String],
                     contentType: String?) async throws(GedsError) -> String {
        let operation = Operation(verb: "PutObject", bucket: bucket, key: key)
        let headers = try metadataHeaders(operation, metadata, contentType: contentType)
        let response = try await send(operation, method: "PUT", headers: headers, body: body)
        return response.headers["etag"] ?? ""
    }

    private func uploadPart(bucket: String, key: String, uploadID: String, partNumber: Int,
                            body: RequestBody) async throws(GedsError) -> String {
        let operation = Operation(verb: "UploadPart \(partNumber)", bucket: bucket, key: key)
        guard (1...10_000).contains(partNumber) else {
            throw GedsError(.invalidArgument, "\(operation): part numbers are 1 to 10000")
        }
        let response = try await send(operation, method: "PUT",
                                      query: [("partNumber", String(partNumber)), ("uploadId", uploadID)], body: body)
        guard let etag = response.headers["etag"] else {
            throw GedsError(.protocolViolation, "\(operation): no ETag in the answer")
        }
        return etag
    }

    private func upload(bucket: String, key: String, source: RequestBody, metadata: [String: String],
                        contentType: String?) async throws(GedsError) -> String {
        let length = source.length
        guard length >= UInt64(max(configuration.multipartThreshold, 1)) else {
            return try await put(bucket: bucket, key: key, body: source, metadata: metadata, contentType: contentType)
        }
        let partSize = partSize(forLength: length)
        let partCount = Int((length + partSize - 1) / partSize)
        let uploadID = try await createMultipartUpload(bucket: bucket, key: key, metadata: metadata, contentType: contentType)

        func body(of part: Int) -> RequestBody {
            let offset = UInt64(part - 1) * partSize
            let size = min(partSize, length - offset)
            switch source {
            case .buffer(let buffer):
                return .buffer(UnsafeRawBufferPointer(rebasing: buffer[Int(offset)..<Int(offset + size)]))
            case .file(let descriptor, let base, _):
                return .file(descriptor: descriptor, offset: base + offset, length: size)
            case .bytes(let bytes):
                return .bytes(Array(bytes[Int(offset)..<Int(offset + size)]))
            case .none:
                return .none
            }
        }

        let result: Result<[S3CompletedPart], GedsError> = await withTaskGroup(of: Result<S3CompletedPart, GedsError>.self) { group in
            var next = 1
            var parts: [S3CompletedPart] = []
            func addPart() {
                let number = next
                next += 1
                let partBody = body(of: number)
                group.addTask {
                    do throws(GedsError) {
                        let etag = try await self.uploadPart(bucket: bucket, key: key, uploadID: uploadID,
                                                             partNumber: number, body: partBody)
                        return .success(S3CompletedPart(partNumber: number, etag: etag))
                    } catch {
                        return .failure(error)
                    }
                }
            }
            while next <= min(partCount, configuration.uploadConcurrency) { addPart() }
            while let finished = await group.next() {
                switch finished {
                case .success(let part):
                    parts.append(part)
                    if next <= partCount { addPart() }
                case .failure(let error):
                    group.cancelAll()
                    return .failure(error)
                }
            }
            return .success(parts)
        }
        do {
            let parts = try result.get()
            return try await completeMultipartUpload(bucket: bucket, key: key, uploadID: uploadID, parts: parts)
        } catch {
            do {
                try await abortMultipartUpload(bucket: bucket, key: key, uploadID: uploadID)
            } catch let abortError {
                configuration.logger.warning("\(redact("could not abort the failed multipart upload of \(bucket)/\(key): \(abortError)"))")
            }
            throw error
        }
    }

    private func metadataHeaders(_ operation: Operation, _ metadata: [String: String],
                                 contentType: String?) throws(GedsError) -> [(String, String)] {
        var headers: [(String, String)] = []
        if let contentType { headers.append(("content-type", contentType)) }
        for (name, value) in metadata.sorted(by: { $0.key < $1.key }) {
            guard !name.isEmpty, name.utf8.allSatisfy({ isTokenByte($0) }) else {
                throw GedsError(.invalidArgument, "\(operation): metadata name '\(name)' is not a valid HTTP header name")
            }
            guard value.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else {
                throw GedsError(.invalidArgument, "\(operation): metadata '\(name)' must be printable ASCII to travel in an HTTP header")
            }
            headers.append(("x-amz-meta-" + name.lowercased(), value))
        }
        return headers
    }

    private func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        default:
            "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    /// One request, retried per the policy; throws unless the answer is 2xx.
    private func send(_ operation: Operation, method: String, query: [(String, String)] = [],
                      headers: [(String, String)] = [], body: RequestBody = .none,
                      sink: ResponseSink = .collect(limit: 1 << 20)) async throws(GedsError) -> HTTPResponse {
        let operation = with(operation)
        let payloadHash = try await payloadHash(operation, of: body)
        return try await withRetries(operation) { _ async -> AttemptResult<HTTPResponse> in
            let outcome = await self.attempt(operation, method: method, query: query, headers: headers, body: body,
                                             payloadHash: payloadHash, sink: sink)
            if let failure: AttemptResult<HTTPResponse> = self.classify(operation, outcome) { return failure }
            return .done(outcome.response)
        }
    }

    private func with(_ operation: Operation) -> Operation {
        var operation = operation
        operation.endpoint = configuration.endpoint
        return operation
    }

    private func withRetries<T: Sendable>(_ operation: Operation,
                                          _ body: (Int) async -> AttemptResult<T>) async throws(GedsError) -> T {
        let operation = with(operation)
        let policy = configuration.retry
        let started = monotonicNanoseconds()
        var attempt = 0
        while true {
            attempt += 1
            switch await body(attempt) {
            case .done(let value):
                return value
            case .fail(let error):
                throw GedsError(error.code, redact(error.message))
            case .retry(let error):
                let elapsed = Double(monotonicNanoseconds() - started) / 1e9
                guard attempt < policy.maxAttempts else {
                    let tries = attempt == 1 ? "1 attempt" : "\(attempt) attempts"
                    throw GedsError(error.code, redact("\(error.message) (gave up after \(tries) in \(formatSeconds(elapsed)))"))
                }
                let delay = policy.delayMilliseconds(after: attempt)
                configuration.logger.warning("\(redact("\(error.message); attempt \(attempt) of \(policy.maxAttempts) failed, retrying in \(delay) ms"))")
                do {
                    try await Task.sleep(nanoseconds: UInt64(delay) * 1_000_000)
                } catch {
                    throw GedsError(.io, "\(operation) cancelled")
                }
            }
        }
    }

    /// The `x-amz-content-sha256` of a body: its SHA-256, or UNSIGNED-PAYLOAD. Files are read on a worker.
    private func payloadHash(_ operation: Operation, of body: RequestBody) async throws(GedsError) -> String {
        switch (body, configuration.payloadSigning) {
        case (.none, _):
            return emptyPayloadSHA256
        case (_, .unsigned):
            return "UNSIGNED-PAYLOAD"
        case (.bytes(let bytes), .signed) where bytes.count <= 256 << 10:
            return sha256Hex(bytes)  // small: not worth a thread hop
        case (.bytes, .signed), (.buffer, .signed), (.file, .signed):
            let result = await workers.run { _ -> Result<String, GedsError> in
                switch body {
                case .bytes(let bytes):
                    return .success(sha256Hex(bytes))
                case .buffer(let buffer):
                    return .success(sha256Hex(buffer))
                case .file(let descriptor, let offset, let length):
                    return hashFile(descriptor: descriptor, offset: offset, length: length)
                        .mapError { GedsError.io("\(operation): cannot read the file to upload", errno: $0.rawValue) }
                default:
                    return .success(emptyPayloadSHA256)
                }
            }
            return try result.get()
        }
    }

    /// One signed attempt on a worker thread.
    private func attempt(_ operation: Operation, method: String, query: [(String, String)] = [],
                         headers extra: [(String, String)] = [], body: RequestBody = .none,
                         payloadHash: String = emptyPayloadSHA256, sink: ResponseSink) async -> TransferOutcome {
        var path = "/" + uriEncode(operation.bucket, encodeSlash: true)
        if let key = operation.key, operation.verb != "ListObjectsV2" { path += "/" + uriEncode(key, encodeSlash: false) }
        let date = currentAMZDate()
        var headers: [(String, String)] = [("host", host), ("x-amz-date", date), ("x-amz-content-sha256", payloadHash)]
        if let token = configuration.credentials.sessionToken { headers.append(("x-amz-security-token", token)) }
        headers += extra
        let signature = signer.sign(method: method, encodedPath: path, query: query, headers: headers,
                                    payloadHash: payloadHash, amzDate: date)
        headers.append(("authorization", signature.authorization))
        let canonicalQuery = SigV4Signer.canonicalQuery(query)
        let url = configuration.endpoint + path + (canonicalQuery.isEmpty ? "" : "?" + canonicalQuery)
        let request = HTTPRequest(method: method, url: url, headers: headers, body: body, sink: sink)
        return await workers.transfer(request, limits: limits)
    }

    /// nil for a 2xx answer (without an error document in its body); else the error, and whether to retry.
    private func classify<T>(_ operation: Operation, _ outcome: TransferOutcome) -> AttemptResult<T>? {
        if let failure = outcome.failure {
            switch failure {
            case .cancelled:
                return .fail(GedsError(.io, "\(operation) cancelled"))
            case .overflow(let capacity):
                return .fail(GedsError(.invalidArgument, "\(operation): the object is larger than the \(capacity)-byte buffer given for it"))
            case .bodyRead(let error):
                return .fail(GedsError.io("\(operation): cannot read the file to upload", errno: error.rawValue))
            case .curl(let code, let message):
                if outcome.response.status != 0, !(200..<300).contains(outcome.response.status) {
                    break  // an HTTP error whose body was cut short: judge it by its status below
                }
                return curlFailure(operation, code: code, message: message)
            }
        }
        let status = outcome.response.status
        let error = S3ErrorDocument(outcome.response.body)
        if (200..<300).contains(status) {
            // CompleteMultipartUpload (and CopyObject) can fail after the 200 has been sent.
            guard let error, error.isErrorDocument else { return nil }
            let retryable = ["InternalError", "SlowDown", "ServiceUnavailable"].contains(error.code)
            let gedsError = GedsError(.io, "\(operation): \(error.code)\(error.message.isEmpty ? "" : ": " + error.message)")
            return retryable ? .retry(gedsError) : .fail(gedsError)
        }
        let code = error?.code ?? ""
        var message = "\(operation): \(status) \(code.isEmpty ? reasonPhrase(status) : code)"
        if let text = error?.message, !text.isEmpty { message += ": " + text }
        if let requestID = error?.requestID ?? outcome.response.headers["x-amz-request-id"], !requestID.isEmpty {
            message += " (request id \(requestID))"
        }
        let retryable = (status >= 500 && status != 501) || status == 429
            || ["RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable"].contains(code)
        if retryable { return .retry(GedsError(.io, message)) }
        return .fail(GedsError(errorCode(status: status, s3Code: code, operation: operation), message))
    }

    private func errorCode(status: Int, s3Code: String, operation: Operation) -> GedsError.Code {
        switch s3Code {
        case "NoSuchKey", "NoSuchUpload", "NoSuchVersion": return .noSuchObject
        case "NoSuchBucket": return .noSuchBucket
        case "BucketAlreadyOwnedByYou", "BucketAlreadyExists": return .bucketExists
        case "BucketNotEmpty": return .bucketNotEmpty
        case "EntityTooLarge", "QuotaExceeded": return .outOfSpace
        default: break
        }
        switch status {
        case 404: return operation.key == nil ? .noSuchBucket : .noSuchObject
        case 409: return .invalidArgument
        default: return .invalidArgument  // 400, 401, 403, 405, 411, 412, 416: the request or its credentials are wrong
        }
    }

    private func curlFailure<T>(_ operation: Operation, code: Int, message: String) -> AttemptResult<T> {
        let text = "\(operation): \(message) (curl error \(code))"
        switch CURLcode(rawValue: UInt32(truncatingIfNeeded: code)) {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            return .retry(GedsError(.peerUnreachable, text))
        case CURLE_OPERATION_TIMEDOUT:
            return .retry(GedsError(.timedOut, text))
        case CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE, CURLE_SSL_CONNECT_ERROR,
             CURLE_HTTP2, CURLE_HTTP2_STREAM, CURLE_HTTP3, CURLE_QUIC_CONNECT_ERROR:
            return .retry(GedsError(.io, text))
        default:
            return .fail(GedsError(.io, text))
        }
    }

    private func parseXML(_ operation: Operation, _ bytes: [UInt8]) throws(GedsError) -> XMLTree {
        do {
            return try XMLTree.parse(bytes)
        } catch {
            throw GedsError(error.code, "\(with(operation)): \(error.message)")
        }
    }

    private func redact(_ text: String) -> String { configuration.credentials.redacting(text) }
}

extension S3ListPage {
    /// Reads a ListObjectsV2 answer; `operation` names the request in errors.
    @_spi(Testing) public init(listBucketResult root: XMLTree, operation: String) throws(GedsError) {
        guard root.name == "ListBucketResult" else {
            throw GedsError(.protocolViolation, "\(operation): expected ListBucketResult, got <\(root.name)>")
        }
        let objects = root.children("Contents").map { entry in
            S3ObjectSummary(key: entry["Key"] ?? "", size: UInt64(entry["Size"] ?? "") ?? 0,
                            etag: entry["ETag"] ?? "", lastModified: entry["LastModified"] ?? "")
        }
        let prefixes = root.children("CommonPrefixes").compactMap { $0["Prefix"] }
        let truncated = root["IsTruncated"] == "true"
        let token = root["NextContinuationToken"].flatMap { $0.isEmpty ? nil : $0 }
        if truncated && token == nil {
            throw GedsError(.protocolViolation, "\(operation): a truncated listing without NextContinuationToken")
        }
        self.init(objects: objects, commonPrefixes: prefixes, isTruncated: truncated, nextContinuationToken: token)
    }
}

/// The `<Error>` document S3 sends with a failure.
@_spi(Testing) public struct S3ErrorDocument {
    public var code: String
    public var message: String
    public var requestID: String?
    var isErrorDocument: Bool

    public init?(_ body: [UInt8]) {
        guard !body.isEmpty, let root = try? XMLTree.parse(body) else { return nil }
        isErrorDocument = root.name == "Error"
        guard isErrorDocument else { return nil }
        code = root["Code"] ?? ""
        message = root["Message"] ?? ""
        requestID = root["RequestId"]
    }
}

private func reasonPhrase(_ status: Int) -> String {
    switch status {
    case 400: "Bad Request"
    case 401: "Unauthorized"
    case 403: "Forbidden"
    case 404: "Not Found"
    case 405: "Method Not Allowed"
    case 409: "Conflict"
    case 412: "Precondition Failed"
    case 416: "Range Not Satisfiable"
    case 429: "Too Many Requests"
    case 500: "Internal Server Error"
    case 501: "Not Implemented"
    case 502: "Bad Gateway"
    case 503: "Service Unavailable"
    case 504: "Gateway Timeout"
    default: "HTTP error"
    }
}

private func hashFile(descriptor: FileDescriptor, offset: UInt64, length: UInt64) -> Result<String, Errno> {
    var hash = SHA256Stream()
    let chunk = 1 << 20
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
    defer { buffer.deallocate() }
    var done: UInt64 = 0
    while done < length {
        let want = Int(min(UInt64(chunk), length - done))
        let count: Int
        do {
            count = try descriptor.read(fromAbsoluteOffset: Int64(offset + done), into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]))
        } catch {
            return .failure(Errno(thrown: error))
        }
        if count == 0 { return .failure(.ioError) }
        hash.update(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        done += UInt64(count)
    }
    return .success(hash.finalizeHex())
}

func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

func formatSeconds(_ seconds: Double) -> String {
    let tenths = Int((seconds * 10).rounded())
    return "\(tenths / 10).\(tenths % 10) s"
}
