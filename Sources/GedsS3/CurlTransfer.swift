import CCurl
import GedsCore
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// What a request sends.
///
/// `@unchecked Sendable`: `.buffer` holds the caller's memory. Every request is awaited by the function that
/// received that memory from its caller, and the worker thread touches it only before it resumes that function,
/// so the memory outlives every access (the same rule as GedsNode's `CallerBufferSink`).
enum RequestBody: @unchecked Sendable {
    case none
    case bytes([UInt8])
    case buffer(UnsafeRawBufferPointer)
    /// `length` bytes of an open file from `offset`, read with `pread` (the descriptor's own offset is unused).
    case file(descriptor: FileDescriptor, offset: UInt64, length: UInt64)

    var length: UInt64 {
        switch self {
        case .none: 0
        case .bytes(let bytes): UInt64(bytes.count)
        case .buffer(let buffer): UInt64(buffer.count)
        case .file(_, _, let length): length
        }
    }
}

/// Where a successful (2xx) answer's body goes; the bodies of other answers are always collected (up to 64 KiB)
/// for their error message. `@unchecked Sendable` for `.buffer`, as for `RequestBody`.
enum ResponseSink: @unchecked Sendable {
    case collect(limit: Int)
    case buffer(UnsafeMutableRawBufferPointer)
}

struct HTTPRequest: Sendable {
    var method: String
    var url: String
    var headers: [(String, String)]
    var body: RequestBody
    var sink: ResponseSink
}

struct HTTPResponse: Sendable {
    var status: Int = 0
    /// Lowercased names; a repeated header keeps its last value.
    var headers: [String: String] = [:]
    /// The collected body (`.collect`), or the body of a non-2xx answer.
    var body: [UInt8] = []
    /// Bytes written into a `.buffer` sink.
    var received: Int = 0
}

enum TransferFailure: Sendable, Equatable {
    /// libcurl failed: its code and its own words.
    case curl(code: Int, message: String)
    /// A 2xx body was larger than the caller's buffer (it held `capacity` bytes).
    case overflow(capacity: Int)
    /// The request body could not be read from its file.
    case bodyRead(Errno)
    case cancelled
}

/// The end of one attempt: the response as far as it came, and what went wrong, if anything.
struct TransferOutcome: Sendable {
    var response: HTTPResponse
    var failure: TransferFailure?
}

/// Set from a task's cancellation handler, read by libcurl's progress callback, which then aborts the transfer.
final class CancelFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}

/// libcurl's global state, set up once (thread-safely, by Swift's lazy global initialization) before the first
/// easy handle exists.
private let curlGlobalReady: Bool = ccurl_global_init() == CURLE_OK

/// One easy handle per worker thread, reused request after request, so its connections stay open.
final class CurlEasy {
    let handle: UnsafeMutableRawPointer
    let errorBuffer: UnsafeMutablePointer<CChar>

    init?() {
        guard curlGlobalReady, let handle = curl_easy_init() else { return nil }
        self.handle = handle
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
    }

    deinit {
        curl_easy_cleanup(handle)
        errorBuffer.deallocate()
    }
}

/// The state one transfer's callbacks share; lives on the worker thread for the duration of `curl_easy_perform`.
private final class TransferState {
    let request: HTTPRequest
    let cancel: CancelFlag
    var response = HTTPResponse()
    var uploadPosition: UInt64 = 0
    var failure: TransferFailure?
    static let errorBodyLimit = 64 << 10

    init(request: HTTPRequest, cancel: CancelFlag) {
        self.request = request
        self.cancel = cancel
    }

    func header(_ line: UnsafeRawBufferPointer) {
        var end = line.count
        while end > 0 && (line[end - 1] == 10 || line[end - 1] == 13) { end -= 1 }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: line[0..<end]), as: UTF8.self)
        if text.hasPrefix("HTTP/") {
            // A new status line (after a 100 Continue, for one): start over.
            let parts = text.split(separator: " ", maxSplits: 2)
            response.status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
            response.headers = [:]
        } else if let colon = text.firstIndex(of: ":") {
            response.headers[text[..<colon].lowercased()] = text[text.index(after: colon)...].trimmingSpaces()
        }
    }

    /// Returns how many bytes were taken; fewer than offered makes libcurl fail the transfer.
    func receive(_ data: UnsafeRawBufferPointer) -> Int {
        guard (200..<300).contains(response.status) else {
            let room = max(0, TransferState.errorBodyLimit - response.body.count)
            response.body.append(contentsOf: data.prefix(room))
            return data.count
        }
        switch request.sink {
        case .collect(let limit):
            guard response.body.count + data.count <= limit else {
                failure = .overflow(capacity: limit)
                return 0
            }
            response.body.append(contentsOf: data)
        case .buffer(let buffer):
            guard response.received + data.count <= buffer.count else {
                failure = .overflow(capacity: buffer.count)
                return 0
            }
            if let base = buffer.baseAddress, let source = data.baseAddress {
                (base + response.received).copyMemory(from: source, byteCount: data.count)
            }
        }
        response.received += data.count
        return data.count
    }

    /// Fills `destination` with the next request body bytes; 0 at the end; `nil` to abort.
    func send(into destination: UnsafeMutableRawBufferPointer) -> Int? {
        let remaining = request.body.length - uploadPosition
        let count = Int(min(UInt64(destination.count), remaining))
        guard count > 0, let target = destination.baseAddress else { return 0 }
        switch request.body {
        case .none:
            return 0
        case .bytes(let bytes):
            bytes.withUnsafeBytes { target.copyMemory(from: $0.baseAddress! + Int(uploadPosition), byteCount: count) }
        case .buffer(let buffer):
            target.copyMemory(from: buffer.baseAddress! + Int(uploadPosition), byteCount: count)
        case .file(let descriptor, let offset, _):
            var done = 0
            while done < count {
                let result: Int
                do {
                    result = try descriptor.read(fromAbsoluteOffset: Int64(offset + uploadPosition) + Int64(done),
                                                 into: UnsafeMutableRawBufferPointer(start: target + done, count: count - done))
                } catch {
                    failure = .bodyRead(Errno(thrown: error))
                    return nil
                }
                if result == 0 {
                    failure = .bodyRead(.ioError)  // the file is shorter than announced
                    return nil
                }
                done += result
            }
        }
        uploadPosition += UInt64(count)
        return count
    }
}

private func state(_ context: UnsafeMutableRawPointer?) -> TransferState {
    Unmanaged<TransferState>.fromOpaque(context!).takeUnretainedValue()
}

private let writeCallback: ccurl_data_callback = { data, size, count, context in
    state(context).receive(UnsafeRawBufferPointer(start: data, count: size * count))
}

private let headerCallback: ccurl_data_callback = { data, size, count, context in
    state(context).header(UnsafeRawBufferPointer(start: data, count: size * count))
    return size * count
}

private let readCallback: ccurl_data_callback = { data, size, count, context in
    state(context).send(into: UnsafeMutableRawBufferPointer(start: data, count: size * count)) ?? ccurl_readfunc_abort()
}

private let seekCallback: ccurl_seek_callback = { context, offset, origin in
    // libcurl rewinds the body when it must send it again (a redirect, a rejected 100-continue).
    guard origin == SEEK_SET, offset >= 0, UInt64(offset) <= state(context).request.body.length else {
        return ccurl_seekfunc_cantseek()
    }
    state(context).uploadPosition = UInt64(offset)
    return ccurl_seekfunc_ok()
}

private let progressCallback: ccurl_progress_callback = { context, _, _, _, _ in
    state(context).cancel.isSet ? 1 : 0
}

struct TransferLimits: Sendable {
    var connectTimeoutMilliseconds: Int
    var stallTimeoutSeconds: Int
}

/// Runs one HTTP exchange on the calling (worker) thread.
func performTransfer(_ request: HTTPRequest, on easy: CurlEasy, limits: TransferLimits, cancel: CancelFlag) -> TransferOutcome {
    let handle = easy.handle
    curl_easy_reset(handle)  // keeps the connection cache
    let transfer = TransferState(request: request, cancel: cancel)
    let context = Unmanaged.passUnretained(transfer).toOpaque()
    easy.errorBuffer[0] = 0

    var headerList: UnsafeMutablePointer<curl_slist>?
    defer { curl_slist_free_all(headerList) }
    for (name, value) in request.headers { headerList = curl_slist_append(headerList, "\(name): \(value)") }
    headerList = curl_slist_append(headerList, "Expect:")  // no 100-continue round trip

    var setupFailed: CURLcode = CURLE_OK
    func check(_ code: CURLcode) { if code != CURLE_OK && setupFailed == CURLE_OK { setupFailed = code } }
    check(ccurl_setopt_string(handle, CURLOPT_URL, request.url))
    check(ccurl_setopt_long(handle, CURLOPT_PATH_AS_IS, 1))     // S3 keys may contain "/./" or "//"
    check(ccurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
    check(ccurl_setopt_long(handle, CURLOPT_TCP_NODELAY, 1))
    check(ccurl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, easy.errorBuffer))
    check(ccurl_setopt_list(handle, CURLOPT_HTTPHEADER, headerList))
    check(ccurl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, limits.connectTimeoutMilliseconds))
    check(ccurl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, 1))
    check(ccurl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, limits.stallTimeoutSeconds))
    check(ccurl_setopt_long(handle, CURLOPT_BUFFERSIZE, 512 << 10))
    check(ccurl_setopt_data_callback(handle, CURLOPT_HEADERFUNCTION, headerCallback))
    check(ccurl_setopt_pointer(handle, CURLOPT_HEADERDATA, context))
    check(ccurl_setopt_data_callback(handle, CURLOPT_WRITEFUNCTION, writeCallback))
    check(ccurl_setopt_pointer(handle, CURLOPT_WRITEDATA, context))
    check(ccurl_setopt_progress_callback(handle, progressCallback))
    check(ccurl_setopt_pointer(handle, CURLOPT_XFERINFODATA, context))
    switch request.method {
    case "GET":
        break
    case "HEAD":
        check(ccurl_setopt_long(handle, CURLOPT_NOBODY, 1))
    default:
        if case .none = request.body, request.method == "DELETE" {
            check(ccurl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, "DELETE"))
        } else {
            // Every other method sends a body (perhaps empty) through the read callback, with its length.
            check(ccurl_setopt_long(handle, CURLOPT_UPLOAD, 1))
            check(ccurl_setopt_offset(handle, CURLOPT_INFILESIZE_LARGE, curl_off_t(request.body.length)))
            check(ccurl_setopt_long(handle, CURLOPT_UPLOAD_BUFFERSIZE, 2 << 20))
            check(ccurl_setopt_data_callback(handle, CURLOPT_READFUNCTION, readCallback))
            check(ccurl_setopt_pointer(handle, CURLOPT_READDATA, context))
            check(ccurl_setopt_seek_callback(handle, seekCallback))
            check(ccurl_setopt_pointer(handle, CURLOPT_SEEKDATA, context))
            if request.method != "PUT" { check(ccurl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, request.method)) }
        }
    }
    guard setupFailed == CURLE_OK else {
        return TransferOutcome(response: transfer.response,
                               failure: .curl(code: Int(setupFailed.rawValue), message: String(cString: curl_easy_strerror(setupFailed))))
    }

    let code = curl_easy_perform(handle)
    if code == CURLE_OK { return TransferOutcome(response: transfer.response, failure: nil) }
    if let failure = transfer.failure { return TransferOutcome(response: transfer.response, failure: failure) }
    if code == CURLE_ABORTED_BY_CALLBACK && cancel.isSet { return TransferOutcome(response: transfer.response, failure: .cancelled) }
    let detail = String(cString: easy.errorBuffer)
    return TransferOutcome(response: transfer.response,
                           failure: .curl(code: Int(code.rawValue), message: detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail))
}

/// A fixed set of threads for blocking work (curl transfers, reading files to hash them), so that none of it runs
/// on Swift's cooperative pool or on an event loop. Each thread owns one `CurlEasy`.
final class BlockingWorkers: Sendable {
    private let queue: JobQueue
    let count: Int

    init(threads: Int, name: String) {
        count = max(1, threads)
        queue = JobQueue()
        for _ in 0..<count { queue.startThread() }
    }

    /// Runs `body` on a worker thread and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable (CurlEasy?) -> T) async -> T {
        await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
            queue.enqueue { easy in continuation.resume(returning: body(easy)) }
        }
    }

    /// Runs one transfer; cancelling the calling task aborts it (the call still returns only once libcurl let go of
    /// the request's buffers).
    func transfer(_ request: HTTPRequest, limits: TransferLimits) async -> TransferOutcome {
        let cancel = CancelFlag()
        return await withTaskCancellationHandler {
            await run { easy in
                guard let easy else {
                    return TransferOutcome(response: HTTPResponse(), failure: .curl(code: -1, message: "libcurl could not be initialized"))
                }
                if cancel.isSet { return TransferOutcome(response: HTTPResponse(), failure: .cancelled) }
                return performTransfer(request, on: easy, limits: limits, cancel: cancel)
            }
        } onCancel: {
            cancel.set()
        }
    }

    /// Lets the threads finish the queued work, and returns once every one of them has exited, its curl handle
    /// cleaned up: a process may then exit without its exit handlers (OpenSSL's cleanup among them) racing a
    /// worker's last libcurl calls.
    func shutdown() async { await queue.stopAndWait() }

    deinit { queue.stop() }
}

/// Jobs under a pthread mutex and condition variable.
///
/// `@unchecked Sendable`: the mutex and condition are allocated once, kept in `let`s and freed only in `deinit`
/// (after every thread, each holding a reference, has exited); `jobs`, `stopping`, `running` and `exitWaiters`
/// are touched only with the mutex held.
private final class JobQueue: @unchecked Sendable {
    typealias Job = @Sendable (CurlEasy?) -> Void
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var jobs: [Job] = []
    private var head = 0
    private var stopping = false
    /// Threads started and not yet exited.
    private var running = 0
    private var exitWaiters: [CheckedContinuation<Void, Never>] = []

    init() {
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    func startThread() {
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        pthread_mutex_lock(mutex)
        running += 1
        pthread_mutex_unlock(mutex)
        let result = pthread_create(&thread, nil, { context in
            let queue = Unmanaged<JobQueue>.fromOpaque(context!).takeRetainedValue()
            queue.work()
            return nil
        }, context)
        if result == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<JobQueue>.fromOpaque(context).release()
            threadExited()
        }
    }

    func enqueue(_ job: @escaping Job) {
        pthread_mutex_lock(mutex)
        if stopping {
            pthread_mutex_unlock(mutex)
            job(nil)  // after shutdown: answered at once, with no handle
            return
        }
        jobs.append(job)
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    func stop() {
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// `stop`, then waits until every thread has exited.
    func stopAndWait() async {
        stop()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            pthread_mutex_lock(mutex)
            if running == 0 {
                pthread_mutex_unlock(mutex)
                continuation.resume()
            } else {
                exitWaiters.append(continuation)
                pthread_mutex_unlock(mutex)
            }
        }
    }

    private func threadExited() {
        pthread_mutex_lock(mutex)
        running -= 1
        let waiters = running == 0 ? exitWaiters : []
        if running == 0 { exitWaiters = [] }
        pthread_mutex_unlock(mutex)
        for waiter in waiters { waiter.resume() }
    }

    private func next() -> Job? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while head == jobs.count && !stopping { pthread_cond_wait(condition, mutex) }
        guard head < jobs.count else { return nil }
        let job = jobs[head]
        head += 1
        if head == jobs.count || head >= 1024 {
            jobs.removeFirst(head)
            head = 0
        }
        return job
    }

    private func work() {
        do {
            let easy = CurlEasy()
            while let job = next() { job(easy) }
        }  // the handle is cleaned up here, before the thread counts as exited
        threadExited()
    }
}
