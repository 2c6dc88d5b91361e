import Crypto
#if canImport(Glibc)
import Glibc
#endif

/// AWS Signature Version 4 for requests authenticated in the Authorization header.
///
/// `sign` signs exactly the headers it is given (names are lowercased, values trimmed and inner runs of spaces
/// folded, as the canonical form requires); the S3 client adds `host`, `x-amz-date`, `x-amz-content-sha256` and,
/// with temporary credentials, `x-amz-security-token` before calling it. Paths are encoded once (S3's rule: no
/// double encoding, no normalization of `.` or `//`).
public struct SigV4Signer: Sendable {
    public let credentials: S3Credentials
    public let region: String
    public let service: String

    public init(credentials: S3Credentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    public struct Signature: Sendable {
        public var canonicalRequest: String
        public var stringToSign: String
        public var signedHeaders: String
        public var signature: String
        public var authorization: String
    }

    /// Signs a request.
    /// - Parameters:
    ///   - encodedPath: the request path as sent, already URI-encoded (`uriEncode(path, encodeSlash: false)`).
    ///   - query: the query parameters, not encoded.
    ///   - headers: every header to sign, with its value as sent.
    ///   - payloadHash: hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
    ///   - amzDate: the request time as `YYYYMMDD'T'HHMMSS'Z'`, as sent in `x-amz-date`.
    public func sign(method: String, encodedPath: String, query: [(String, String)], headers: [(String, String)],
                     payloadHash: String, amzDate: String) -> Signature {
        var canonicalHeaders: [(String, String)] = []
        for (name, value) in headers {
            let name = name.lowercased()
            let value = SigV4Signer.canonicalHeaderValue(value)
            if let index = canonicalHeaders.firstIndex(where: { $0.0 == name }) {
                canonicalHeaders[index].1 += "," + value
            } else {
                canonicalHeaders.append((name, value))
            }
        }
        canonicalHeaders.sort { $0.0 < $1.0 }
        let signedHeaders = canonicalHeaders.map(\.0).joined(separator: ";")
        let canonicalRequest = [
            method,
            encodedPath.isEmpty ? "/" : encodedPath,
            SigV4Signer.canonicalQuery(query),
            canonicalHeaders.map { "\($0.0):\($0.1)\n" }.joined(),
            signedHeaders,
            payloadHash,
        ].joined(separator: "\n")
        let day = String(amzDate.prefix(8))
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = "AWS4-HMAC-SHA256\n\(amzDate)\n\(scope)\n\(sha256Hex(Array(canonicalRequest.utf8)))"
        let key = signingKey(day: day)
        let signature = hex(hmacSHA256(key: key, Array(stringToSign.utf8)))
        let authorization = "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), "
            + "SignedHeaders=\(signedHeaders), Signature=\(signature)"
        return Signature(canonicalRequest: canonicalRequest, stringToSign: stringToSign, signedHeaders: signedHeaders,
                         signature: signature, authorization: authorization)
    }

    /// The derived key: HMAC chain of "AWS4"+secret over day, region, service and "aws4_request".
    public func signingKey(day: String) -> [UInt8] {
        var key = hmacSHA256(key: Array(("AWS4" + credentials.secretAccessKey).utf8), Array(day.utf8))
        key = hmacSHA256(key: key, Array(region.utf8))
        key = hmacSHA256(key: key, Array(service.utf8))
        return hmacSHA256(key: key, Array("aws4_request".utf8))
    }

    /// Parameters sorted by encoded name, then encoded value; names and values fully encoded; `name=` for an
    /// empty value.
    public static func canonicalQuery(_ query: [(String, String)]) -> String {
        query.map { (uriEncode($0.0, encodeSlash: true), uriEncode($0.1, encodeSlash: true)) }
            .sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")
    }

    public static func canonicalHeaderValue(_ value: String) -> String {
        var result = ""
        var pendingSpace = false
        for character in value.trimmingSpaces() {
            if character == " " || character == "\t" {
                pendingSpace = true
            } else {
                if pendingSpace { result.append(" ") }
                pendingSpace = false
                result.append(character)
            }
        }
        return result
    }
}

/// Percent-encodes every byte of the UTF-8 form except the unreserved characters `A-Z a-z 0-9 - _ . ~` (and `/`
/// unless `encodeSlash`), with uppercase hex digits: AWS's UriEncode.
public func uriEncode(_ text: String, encodeSlash: Bool) -> String {
    let digits = Array("0123456789ABCDEF".utf8)
    var bytes: [UInt8] = []
    bytes.reserveCapacity(text.utf8.count)
    for byte in text.utf8 {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
             UInt8(ascii: "~"):
            bytes.append(byte)
        case UInt8(ascii: "/") where !encodeSlash:
            bytes.append(byte)
        default:
            bytes.append(UInt8(ascii: "%"))
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 15)])
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Decodes `%XX` escapes (and nothing else); invalid escapes are kept as they are.
public func uriDecode(_ text: String) -> String {
    var bytes: [UInt8] = []
    let source = Array(text.utf8)
    var index = 0
    func value(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
    while index < source.count {
        if source[index] == UInt8(ascii: "%"), index + 2 < source.count,
           let high = value(source[index + 1]), let low = value(source[index + 2]) {
            bytes.append(high << 4 | low)
            index += 3
        } else {
            bytes.append(source[index])
            index += 1
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// `YYYYMMDD'T'HHMMSS'Z'` for seconds since the Unix epoch (UTC).
public func amzDate(secondsSinceEpoch seconds: Int64) -> String {
    let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
    let secondOfDay = seconds - days * 86_400
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let dayOfEra = z - era * 146_097
    let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
    let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
    let monthIndex = (5 * dayOfYear + 2) / 153
    let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
    let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
    let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
    func pad(_ value: Int64, _ width: Int) -> String {
        let text = String(value)
        return String(repeating: "0", count: max(0, width - text.count)) + text
    }
    return pad(year, 4) + pad(month, 2) + pad(day, 2) + "T" + pad(secondOfDay / 3600, 2)
        + pad(secondOfDay % 3600 / 60, 2) + pad(secondOfDay % 60, 2) + "Z"
}

/// The current time for `x-amz-date`.
func currentAMZDate() -> String {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return amzDate(secondsSinceEpoch: Int64(now.tv_sec))
}

public func hex(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var result: [UInt8] = []
    for byte in bytes {
        result.append(digits[Int(byte >> 4)])
        result.append(digits[Int(byte & 15)])
    }
    return String(decoding: result, as: UTF8.self)
}

func hmacSHA256(key: [UInt8], _ message: [UInt8]) -> [UInt8] {
    var mac = HMAC<SHA256>(key: SymmetricKey(data: key))
    mac.update(data: message)
    return Array(mac.finalize())
}

/// Hex SHA-256 (the `x-amz-content-sha256` of a body).
public func sha256Hex(_ bytes: [UInt8]) -> String {
    bytes.withUnsafeBytes { sha256Hex($0) }
}

public func sha256Hex(_ bytes: UnsafeRawBufferPointer) -> String {
    var hash = SHA256()
    hash.update(bufferPointer: bytes)
    return hex(hash.finalize())
}

/// SHA-256 of the empty string: the payload hash of requests without a body.
public let emptyPayloadSHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/// Incremental SHA-256 over raw memory.
struct SHA256Stream {
    private var hash = SHA256()
    mutating func update(_ bytes: UnsafeRawBufferPointer) { hash.update(bufferPointer: bytes) }
    func finalizeHex() -> String { hex(hash.finalize()) }
}
