import Foundation
import GedsCore
import GedsS3
import Logging
import Synchronization
import Testing
import GedsTestSupport

extension ServerProcess {
    /// An HTTP server that answers the first `failures` requests with `status` (an S3 error document), then
    /// 200/204 with an empty body; it logs one line per request.
    static func faulty(status: Int, failures: Int) throws -> ServerProcess {
        let port = freePort()
        return try ServerProcess(port: port, script: script("""
            import http.server
            state = {"count": 0}
            class Handler(http.server.BaseHTTPRequestHandler):
                protocol_version = "HTTP/1.1"
                def log_message(self, *args):
                    pass
                def answer(self, body_wanted):
                    length = int(self.headers.get("Content-Length") or 0)
                    if length:
                        self.rfile.read(length)
                    state["count"] += 1
                    sys.stderr.write("request %d %s %s\\n" % (state["count"], self.command, self.path))
                    sys.stderr.flush()
                    if state["count"] <= \(failures):
                        body = b"<?xml version='1.0'?><Error><Code>ServiceUnavailable</Code><Message>try later</Message><RequestId>r%d</RequestId></Error>" % state["count"]
                        self.send_response(\(status))
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        if body_wanted:
                            self.wfile.write(body)
                        return
                    self.send_response(204 if self.command == "DELETE" else 200)
                    self.send_header("Content-Length", "0")
                    self.send_header("ETag", '"0"')
                    self.end_headers()
                def do_GET(self): self.answer(True)
                def do_PUT(self): self.answer(True)
                def do_DELETE(self): self.answer(True)
                def do_POST(self): self.answer(True)
                def do_HEAD(self): self.answer(False)
            http.server.ThreadingHTTPServer(("127.0.0.1", \(port)), Handler).serve_forever()
            """), environment: [:], name: "faulty")
    }

    /// An HTTP server holding one object of `size` bytes (byte i is i % 251, ETag "v1") that cuts the connection
    /// after sending the first `cutAfter` bytes of the first GET, then answers later GETs (ranged) in full; it
    /// logs each request's Range and If-Match headers.
    static func cutting(size: Int, cutAfter: Int) throws -> ServerProcess {
        let port = freePort()
        return try ServerProcess(port: port, script: script("""
            import http.server, socket
            data = bytes(i % 251 for i in range(\(size)))
            state = {"count": 0}
            class Handler(http.server.BaseHTTPRequestHandler):
                protocol_version = "HTTP/1.1"
                def log_message(self, *args):
                    pass
                def do_GET(self):
                    state["count"] += 1
                    rng = self.headers.get("Range")
                    sys.stderr.write("request %d range=%s if-match=%s\\n" % (state["count"], rng, self.headers.get("If-Match")))
                    sys.stderr.flush()
                    start, end = 0, len(data) - 1
                    if rng:
                        first, _, last = rng[len("bytes="):].partition("-")
                        start = int(first)
                        end = min(int(last), len(data) - 1) if last else len(data) - 1
                    body = data[start:end + 1]
                    self.send_response(206 if rng else 200)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("ETag", '"v1"')
                    if rng:
                        self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, len(data)))
                    self.end_headers()
                    if state["count"] == 1:
                        self.wfile.write(body[:\(cutAfter)])
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    self.wfile.write(body)
            http.server.ThreadingHTTPServer(("127.0.0.1", \(port)), Handler).serve_forever()
            """), environment: [:], name: "cutting")
    }

}

let testSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY-geds-test"
let testToken = "FQoGZXIvYXdzEXAMPLE-session-token-geds"

func testConfiguration(_ endpoint: String, retry: S3RetryPolicy = S3RetryPolicy(maxAttempts: 3, baseDelayMilliseconds: 50,
                                                                                   maxDelayMilliseconds: 400),
                       logger: Logger = Logger(label: "geds.s3.test")) -> S3Configuration {
    S3Configuration(endpoint: endpoint, region: "us-east-1",
                    credentials: S3Credentials(accessKeyID: "AKIAGEDSTESTKEY00001", secretAccessKey: testSecret),
                    retry: retry, threads: 4, connectTimeoutMilliseconds: 2000, stallTimeoutSeconds: 10,
                    partSize: 5 << 20, multipartThreshold: 8 << 20, logger: logger)
}

func uniqueBucket(_ name: String) -> String { "geds-\(name)-\(UInt32.random(in: 0...UInt32.max))" }

/// Deterministic test bytes.
func pattern(_ count: Int, seed: UInt64 = 1) -> [UInt8] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBytes { raw in
        var index = 0
        while index < count {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            withUnsafeBytes(of: state) { word in
                for byte in word where index < count {
                    raw[index] = byte
                    index += 1
                }
            }
        }
    }
    return bytes
}

/// A log handler that keeps every message, to check what the client logs.
struct RecordingLogHandler: LogHandler {
    let recorder: LogRecorder
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        recorder.lines.withLock { $0.append("\(event.level) \(event.message) \(event.metadata ?? [:])") }
    }
}

final class LogRecorder: Sendable {
    let lines = Mutex<[String]>([])
    var logger: Logger {
        Logger(label: "geds.s3.test") { _ in RecordingLogHandler(recorder: self) }
    }
    var all: [String] { lines.withLock { $0 } }
}

/// Memory of its own for the raw-buffer calls (an array's storage cannot be lent across an `await`).
final class TestBuffer: @unchecked Sendable {
    let raw: UnsafeMutableRawBufferPointer

    init(count: Int, fill: UInt8 = 0) {
        raw = .allocate(byteCount: max(count, 1), alignment: 4096)
        raw.initializeMemory(as: UInt8.self, repeating: fill)
        if count == 0 { rawCount = 0 } else { rawCount = count }
    }

    convenience init(_ bytes: [UInt8]) {
        self.init(count: bytes.count)
        bytes.withUnsafeBytes { raw.copyMemory(from: $0) }
    }

    private let rawCount: Int
    var mutable: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(rebasing: raw[0..<rawCount]) }
    var readable: UnsafeRawBufferPointer { UnsafeRawBufferPointer(mutable) }
    var bytes: [UInt8] { Array(readable) }
    func prefix(_ count: Int) -> [UInt8] { Array(readable.prefix(count)) }

    deinit { raw.deallocate() }
}
