import CVerbs
import GedsCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// This process's RDMA machinery on one device, bound to one of its IP addresses: a protection domain, one
/// completion queue with its channel, one rdmacm event channel, and a dedicated poll thread that owns every
/// connection.
///
/// Threads: the public types (`RDMAReader`, `RDMAResponder`, `RDMAMessageConnection`, ...) hand each call
/// to the poll thread as a command (one lock to enqueue it, an eventfd to wake the thread) and await a
/// continuation that the thread resumes. All connection state, the queue pairs, posted work requests and
/// their completions live on that thread only, so completions are handled without any lock. The thread
/// sleeps in `poll(2)` on the completion channel, the rdmacm channel and the eventfd, with a timeout that is
/// the nearest deadline.
// @unchecked: the C resources reachable from here (device context, protection domain) are immutable handles
// whose verbs calls are thread-safe; everything mutable is either in `inbox` (a Mutex) or owned by the poll
// thread's `EngineLoop`, which no other thread touches.
public final class RDMAEngine: @unchecked Sendable {
    public let device: DeviceContext
    public let protectionDomain: ProtectionDomain
    /// The local IP address connections leave from and listeners bind to.
    public let localAddress: String
    let inbox: Inbox
    private let thread: pthread_t

    public struct Options: Sendable {
        /// Entries of the shared completion queue: bounds the work requests of all connections together.
        public var completionQueueEntries = 8192
        /// QP ACK timeout exponent (4.096 µs × 2^value); with 7 retries a dead peer is detected in about
        /// 8 × this. 17 ≈ 0.5 s, generous enough for soft-RoCE under emulation.
        public var ackTimeoutExponent: UInt8 = 17
        /// While READs are outstanding, the poll thread polls the completion queue for this long before it
        /// sleeps on the channel: a small READ completes in microseconds on hardware, well before a wake-up
        /// through the channel would deliver it (what perftest's busy polling measures). 0: never spin.
        public var busyPollMicroseconds = 50
        public init() {}
    }

    /// Opens the RDMA device that owns `localAddress` (an IPv4/IPv6 address of an RDMA-capable interface)
    /// and starts its poll thread. Throws `.noDevice` on a machine without RDMA.
    public init(localAddress: String, options: Options = Options()) throws(RDMAError) {
        let device = try DeviceContext.owning(address: localAddress)
        guard device.port.active else { throw RDMAError(.connection, "RDMA device \(device.name): port 1 is not active") }
        self.device = device
        self.localAddress = localAddress
        protectionDomain = try ProtectionDomain(device: device)
        let wake = cverbs_eventfd()
        guard wake >= 0 else { throw RDMAError.system("eventfd", errno: cverbs_errno()) }
        inbox = Inbox(wake: wake)
        let loop: EngineLoop
        do throws(RDMAError) {
            loop = try EngineLoop(device: device, protectionDomain: protectionDomain, localAddress: localAddress,
                                  inbox: inbox, options: options)
        } catch {
            close(wake)
            throw error
        }
        thread = try startThread(name: "geds-rdma-\(device.name)") { loop.run() }
    }

    deinit { shutdown() }

    /// Stops the poll thread: every connection is closed and every waiting call fails with `.closed`.
    /// Registrations made with this engine's protection domain stay valid until released.
    public func shutdown() {
        guard inbox.stop() else { return }
        if pthread_equal(pthread_self(), thread) != 0 {
            pthread_detach(thread)  // released on the poll thread itself: it finishes on its own
        } else {
            pthread_join(thread, nil)
        }
    }

    /// Runs `command` on the poll thread; false once the engine has stopped.
    @discardableResult
    func submit(_ command: @escaping @Sendable (EngineLoop) -> Void) -> Bool {
        inbox.post(command)
    }

    /// Runs `body` on the poll thread and awaits the result it reports through the `Reply` (exactly once).
    func call<T: Sendable>(_ body: @escaping @Sendable (EngineLoop, Reply<T>) -> Void) async throws(RDMAError) -> T {
        let result: Result<T, RDMAError> = await withCheckedContinuation { continuation in
            let posted = submit { loop in body(loop, Reply(continuation)) }
            if !posted { continuation.resume(returning: .failure(RDMAError(.closed, "the RDMA engine is shut down"))) }
        }
        return try result.get()
    }
}

/// Commands for the poll thread, and the eventfd that wakes it.
final class Inbox: Sendable {
    typealias Command = @Sendable (EngineLoop) -> Void
    private struct State: ~Copyable {
        var commands: [Command] = []
        var stopping = false
    }
    private let state = Mutex(State())
    let wake: Int32

    init(wake: Int32) { self.wake = wake }

    func post(_ command: @escaping Command) -> Bool {
        let accepted = state.withLock { state -> Bool in
            guard !state.stopping else { return false }
            state.commands.append(command)
            return true
        }
        if accepted { signal() }
        return accepted
    }

    /// Marks the engine stopping; true the first time.
    func stop() -> Bool {
        let first = state.withLock { state -> Bool in
            defer { state.stopping = true }
            return !state.stopping
        }
        if first { signal() }
        return first
    }

    func take() -> (commands: [Command], stopping: Bool) {
        state.withLock { state in
            defer { state.commands.removeAll(keepingCapacity: true) }
            return (state.commands, state.stopping)
        }
    }

    private func signal() {
        var one: UInt64 = 1
        _ = write(wake, &one, 8)
    }

    func drain() {
        var value: UInt64 = 0
        _ = read(wake, &value, 8)
    }
}

/// Delivers a result to an awaiting caller exactly once (later deliveries are ignored; a reply dropped
/// without one delivers "dropped"). Poll-thread only.
final class Reply<T: Sendable> {
    private var deliver: ((Result<T, RDMAError>) -> Void)?

    init(_ continuation: CheckedContinuation<Result<T, RDMAError>, Never>) {
        deliver = { continuation.resume(returning: $0) }
    }

    private init(body: @escaping (Result<T, RDMAError>) -> Void) { deliver = body }

    /// A reply that runs `body` (on the poll thread) instead of resuming a caller.
    static func forwarding(_ body: @escaping (Result<T, RDMAError>) -> Void) -> Reply<T> { Reply(body: body) }

    func callAsFunction(_ result: Result<T, RDMAError>) {
        let deliver = self.deliver
        self.deliver = nil
        deliver?(result)
    }

    var isPending: Bool { deliver != nil }

    deinit { deliver?(.failure(RDMAError(.closed, "the RDMA engine dropped a request"))) }
}

// MARK: - The poll thread's world

/// One RDMA READ request of a caller, split into chunks. Poll-thread only.
final class ReadOperation {
    let remoteAddress: UInt64
    let rkey: UInt32
    let length: UInt64
    let region: MemoryRegion
    let localOffset: Int
    let chunkSize: UInt64
    let progressTimeout: UInt64
    /// When the operation was submitted; with the link's last progress, it dates the progress deadline.
    let submitted: UInt64
    var posted: UInt64 = 0
    var completed: UInt64 = 0
    var outstanding = 0
    var error: RDMAError?
    let reply: Reply<Void>
    let what: String

    init(remoteAddress: UInt64, rkey: UInt32, length: UInt64, region: MemoryRegion, localOffset: Int,
         chunkSize: UInt64, progressTimeout: UInt64, reply: Reply<Void>, what: String) {
        self.remoteAddress = remoteAddress
        self.rkey = rkey
        self.length = length
        self.region = region
        self.localOffset = localOffset
        self.chunkSize = chunkSize
        self.progressTimeout = progressTimeout
        submitted = Clock.now()
        self.reply = reply
        self.what = what
    }

    var fullyPosted: Bool { posted == length }

    /// Fails when neither this operation nor anything else on its link progressed for `progressTimeout`
    /// (operations queued behind others on a busy link are not penalized for waiting their turn).
    func deadline(lastProgress: UInt64) -> UInt64 {
        let (sum, overflow) = max(submitted, lastProgress).addingReportingOverflow(progressTimeout)
        return overflow ? UInt64.max : sum
    }
}

/// One RC connection (an rdmacm identifier with its queue pair). Poll-thread only.
final class Link {
    enum State: Equatable {
        case resolvingAddress, resolvingRoute, connecting, accepting, established, failed
    }
    enum Role {
        /// Our side issues READs (a reader's connection to a peer).
        case reader(key: ReaderKey)
        /// The peer issues READs into our registrations; we only keep the QP alive.
        case responder
        /// Messages both ways.
        case messages(MessageState)
    }

    let id: UnsafeMutablePointer<rdma_cm_id>
    var role: Role
    var state: State
    let peer: String
    var hasQueuePair = false
    var queuePairCapacity = (send: 0, receive: 0)
    var sendFree = 0
    /// Work requests posted and not completed yet (sends, READs and receives).
    var outstanding = 0
    var connectDeadline: UInt64
    var connectWaiters: [Reply<Void>] = []
    var error: RDMAError?
    // reader
    var readQueue: [ReadOperation] = []  // not fully posted yet, in order
    var activeReads: [ObjectIdentifier: ReadOperation] = [:]
    var initiatorDepth: UInt8 = 0
    /// When a READ chunk last completed (or the connection was established).
    var lastProgress: UInt64 = 0
    var listener: Listener?
    var privateData: [UInt8] = []

    init(id: UnsafeMutablePointer<rdma_cm_id>, role: Role, state: State, peer: String, deadline: UInt64) {
        self.id = id
        self.role = role
        self.state = state
        self.peer = peer
        connectDeadline = deadline
    }

    var key: UInt { UInt(bitPattern: id) }
    var messages: MessageState? { if case .messages(let state) = role { state } else { nil } }
}

struct ReaderKey: Hashable {
    let reader: Int
    let peer: Endpoint
}

/// A listening rdmacm identifier. Poll-thread only.
final class Listener {
    let id: UnsafeMutablePointer<rdma_cm_id>
    let purpose: Hello.Purpose
    let handle: Int
    let endpoint: Endpoint
    var messageOptions: RDMAMessageOptions?
    var acceptQueue: [MessageState] = []
    var acceptWaiters: [(deadline: UInt64, reply: Reply<Int>)] = []
    var links: Set<UInt> = []

    init(id: UnsafeMutablePointer<rdma_cm_id>, purpose: Hello.Purpose, handle: Int, endpoint: Endpoint) {
        self.id = id
        self.purpose = purpose
        self.handle = handle
        self.endpoint = endpoint
    }
}

/// What a posted work request was for.
enum WorkRequest {
    case read(Link, ReadOperation, UInt32)
    case send(Link, slot: Int)
    case receive(Link, buffer: Int)
}

final class EngineLoop {
    let device: DeviceContext
    let protectionDomain: ProtectionDomain
    let localAddress: String
    let inbox: Inbox
    let options: RDMAEngine.Options
    let completions: CompletionQueue
    let events: ConnectionEventChannel
    private let wc: UnsafeMutablePointer<ibv_wc>
    private let wcBatch = 32
    let sendBatch: UnsafeMutablePointer<ibv_send_wr>
    let sgeBatch: UnsafeMutablePointer<ibv_sge>
    let sendBatchCapacity = 32

    var links: [UInt: Link] = [:]
    var listeners: [UInt: Listener] = [:]
    var listenerHandles: [Int: Listener] = [:]
    var readerLinks: [ReaderKey: Link] = [:]
    var messageStates: [Int: MessageState] = [:]
    var inflight: [UInt64: WorkRequest] = [:]
    /// READ chunks posted and not completed yet (the poll thread spins briefly while there are any).
    var readChunksInFlight = 0
    var nextWorkID: UInt64 = 1
    var nextHandle = 1
    var completionEntriesReserved = 0
    private var stopping = false
    private var stopDeadline: UInt64 = 0

    init(device: DeviceContext, protectionDomain: ProtectionDomain, localAddress: String, inbox: Inbox,
         options: RDMAEngine.Options) throws(RDMAError) {
        self.device = device
        self.protectionDomain = protectionDomain
        self.localAddress = localAddress
        self.inbox = inbox
        self.options = options
        completions = try CompletionQueue(device: device, capacity: options.completionQueueEntries)
        events = try ConnectionEventChannel()
        wc = .allocate(capacity: wcBatch)
        sendBatch = .allocate(capacity: sendBatchCapacity)
        sgeBatch = .allocate(capacity: sendBatchCapacity)
    }

    deinit {
        wc.deallocate()
        sendBatch.deallocate()
        sgeBatch.deallocate()
        close(inbox.wake)
    }

    func makeHandle() -> Int {
        defer { nextHandle += 1 }
        return nextHandle
    }

    // MARK: the loop

    func run() {
        var fds = [pollfd(fd: inbox.wake, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: completions.descriptor, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: events.descriptor, events: Int16(POLLIN), revents: 0)]
        completions.arm()
        while true {
            let (commands, stop) = inbox.take()
            for command in commands { command(self) }
            if stop && !stopping { beginStop() }
            handleConnectionEvents()
            var handled = drainCompletions()
            let nearest = checkDeadlines()
            if stopping && (links.isEmpty || Clock.now() > stopDeadline) { break }
            if handled > 0 { continue }
            if readChunksInFlight > 0, busyPoll() > 0 { continue }
            completions.arm()
            handled = drainCompletions()
            if handled > 0 { continue }
            let now = Clock.now()
            let waitMs = nearest == UInt64.max ? 1000 : Int32(min(1000, (nearest > now ? nearest - now : 0) / 1_000_000 + 1))
            for index in fds.indices { fds[index].revents = 0 }
            _ = poll(&fds, nfds_t(fds.count), waitMs)
            if fds[1].revents != 0 { completions.takeEvents() }
            if fds[0].revents != 0 { inbox.drain() }
        }
        finishStop()
    }

    private func beginStop() {
        stopping = true
        stopDeadline = Clock.deadline(after: .seconds(5))
        let closed = RDMAError(.closed, "the RDMA engine is shut down")
        for listener in Array(listeners.values) { closeListener(listener, error: closed) }
        for link in Array(links.values) { fail(link, closed) }
        for state in Array(messageStates.values) { state.closeAll(closed) }
    }

    private func finishStop() {
        // Links whose flushes never came: destroy anyway (their READ destinations stay referenced by the
        // operations, which are dropped with the inflight table; no caller waits for them any more).
        for link in Array(links.values) { destroy(link) }
        inflight.removeAll()
        readChunksInFlight = 0
        for state in Array(messageStates.values) { state.closeAll(RDMAError(.closed, "the RDMA engine is shut down")) }
        messageStates.removeAll()
    }

    // MARK: completions

    /// Polls the completion queue for up to `busyPollMicroseconds`; returns how many completions were handled.
    private func busyPoll() -> Int {
        guard options.busyPollMicroseconds > 0 else { return 0 }
        let until = Clock.now() + UInt64(options.busyPollMicroseconds) * 1000
        repeat {
            let handled = drainCompletions()
            if handled > 0 { return handled }
        } while Clock.now() < until
        return 0
    }

    /// Polls the completion queue until it is empty; returns how many completions were handled.
    private func drainCompletions() -> Int {
        var total = 0
        while true {
            let count = Int(ibv_poll_cq(completions.cq, Int32(wcBatch), wc))
            guard count > 0 else { return total }
            total += count
            for index in 0..<count { handle(wc[index]) }
        }
    }

    private func handle(_ completion: ibv_wc) {
        guard let request = inflight.removeValue(forKey: completion.wr_id) else { return }
        let status = WorkCompletionStatus(completion.status)
        switch request {
        case .read(let link, let operation, let length):
            readChunksInFlight -= 1
            link.outstanding -= 1
            link.sendFree += 1
            operation.outstanding -= 1
            if status != .success {
                fail(link, linkError(link, status: status, what: "RDMA READ from \(link.peer)"))
            } else if completion.byte_len != 0 && completion.byte_len != length {
                fail(link, RDMAError(.completion, "RDMA READ from \(link.peer): a chunk of \(length) bytes completed with \(completion.byte_len)"))
            } else {
                operation.completed += UInt64(length)
                link.lastProgress = Clock.now()
            }
            finishIfDone(operation, link: link)
            if link.state == .established { postReads(link) }
        case .send(let link, let slot):
            link.outstanding -= 1
            link.sendFree += 1
            link.messages?.sendSlotFreed(slot)
            if status != .success {
                fail(link, linkError(link, status: status, what: "RDMA send to \(link.peer)"))
            } else if let messages = link.messages {
                pumpSends(messages)
            }
        case .receive(let link, let buffer):
            link.outstanding -= 1
            if status != .success {
                if status != .flushed { fail(link, linkError(link, status: status, what: "RDMA receive from \(link.peer)")) }
            } else if let messages = link.messages {
                received(messages, buffer: buffer, byteCount: Int(completion.byte_len))
            }
        }
        destroyIfDrained(request.link)
    }

    private func linkError(_ link: Link, status: WorkCompletionStatus, what: String) -> RDMAError {
        if status == .flushed, let error = link.error { return error }
        var message = "\(what) failed: \(status)"
        if status == .remoteAccessError { message += ": the registration at the owner is gone or does not cover the range (stale rkey)" }
        if status == .retryExceeded { message += ": the peer stopped answering" }
        return RDMAError(.completion, message, status: status)
    }

    // MARK: READs

    /// Posts READ chunks while the send queue has room, in request order, in chained batches.
    func postReads(_ link: Link) {
        while postReadBatch(link) == sendBatchCapacity {}
    }

    /// Posts up to one batch of READ chunks with one `ibv_post_send`; returns how many.
    private func postReadBatch(_ link: Link) -> Int {
        guard link.state == .established, let qp = link.id.pointee.qp else { return 0 }
        var count = 0
        var ids: [UInt64] = []
        while link.sendFree - count > 0, count < sendBatchCapacity, let operation = link.readQueue.first {
            if operation.error != nil || operation.fullyPosted {
                link.readQueue.removeFirst()
                continue
            }
            let length = min(operation.chunkSize, operation.length - operation.posted)
            let workID = nextWorkID
            nextWorkID += 1
            sgeBatch[count] = ibv_sge(addr: operation.region.localAddress(at: operation.localOffset + Int(operation.posted)),
                                      length: UInt32(length), lkey: operation.region.lkey)
            var request = ibv_send_wr()
            request.wr_id = workID
            request.sg_list = sgeBatch + count
            request.num_sge = 1
            request.opcode = IBV_WR_RDMA_READ
            request.send_flags = IBV_SEND_SIGNALED.rawValue
            request.wr.rdma.remote_addr = operation.remoteAddress + operation.posted
            request.wr.rdma.rkey = operation.rkey
            sendBatch[count] = request
            if count > 0 { sendBatch[count - 1].next = sendBatch + count }
            inflight[workID] = .read(link, operation, UInt32(length))
            ids.append(workID)
            operation.posted += length
            operation.outstanding += 1
            count += 1
            if operation.fullyPosted { link.readQueue.removeFirst() }
        }
        guard count > 0 else { return 0 }
        var bad: UnsafeMutablePointer<ibv_send_wr>?
        let status = ibv_post_send(qp, sendBatch, &bad)
        if status == 0 {
            link.sendFree -= count
            link.outstanding += count
            readChunksInFlight += count
            return count
        }
        // Everything from `bad` on was not posted: take those back, then fail the link.
        let firstBad = bad.map { $0 - sendBatch } ?? 0
        link.sendFree -= firstBad
        link.outstanding += firstBad
        readChunksInFlight += firstBad
        for index in firstBad..<count {
            if case .read(_, let operation, let length) = inflight.removeValue(forKey: ids[index]) {
                operation.outstanding -= 1
                operation.posted -= UInt64(length)
            }
        }
        fail(link, RDMAError.system("ibv_post_send (RDMA READ) to \(link.peer)", errno: status))
        return 0
    }

    func finishIfDone(_ operation: ReadOperation, link: Link) {
        guard operation.outstanding == 0, operation.reply.isPending else { return }
        if let error = operation.error {
            link.activeReads[ObjectIdentifier(operation)] = nil
            operation.reply(.failure(error))
        } else if operation.completed == operation.length {
            link.activeReads[ObjectIdentifier(operation)] = nil
            operation.reply(.success(()))
        }
    }

    // MARK: deadlines

    /// Fails what is overdue; returns the nearest remaining deadline (UInt64.max when none).
    private func checkDeadlines() -> UInt64 {
        let now = Clock.now()
        var nearest = UInt64.max
        for link in Array(links.values) where link.state != .failed {
            if link.state != .established {
                if now >= link.connectDeadline {
                    fail(link, RDMAError(.timedOut, "RDMA connection to \(link.peer) timed out"))
                } else {
                    nearest = min(nearest, link.connectDeadline)
                }
                continue
            }
            for operation in link.activeReads.values {
                let deadline = operation.deadline(lastProgress: link.lastProgress)
                if now >= deadline {
                    fail(link, RDMAError(.timedOut, "no READ completed from \(link.peer) for \(operation.progressTimeout / 1_000_000) ms"))
                    break
                }
                nearest = min(nearest, deadline)
            }
        }
        for state in messageStates.values {
            nearest = min(nearest, state.expire(now: now, loop: self))
        }
        for listener in listeners.values {
            listener.acceptWaiters.removeAll { waiter in
                guard now >= waiter.deadline else { nearest = min(nearest, waiter.deadline); return false }
                waiter.reply(.failure(RDMAError(.timedOut, "no RDMA connection arrived at \(listener.endpoint) in time")))
                return true
            }
        }
        return nearest
    }

    // MARK: failing and destroying links

    /// Marks a link failed: it leaves the reader cache, its waiters fail, its QP goes to the error state (so
    /// the device flushes every posted request), and it is destroyed once all of them have completed.
    func fail(_ link: Link, _ error: RDMAError) {
        guard link.state != .failed else { return }
        let wasEstablished = link.state == .established
        link.state = .failed
        link.error = error
        if case .reader(let key) = link.role, readerLinks[key] === link { readerLinks[key] = nil }
        for waiter in link.connectWaiters { waiter(.failure(error)) }
        link.connectWaiters.removeAll()
        for operation in link.activeReads.values where operation.error == nil && operation.completed < operation.length {
            operation.error = RDMAError(error.kind, "\(operation.what): \(error.message)", errno: error.errno, status: error.status)
        }
        link.readQueue.removeAll()
        for operation in Array(link.activeReads.values) { finishIfDone(operation, link: link) }
        link.messages?.linkFailed(error, loop: self)
        if link.hasQueuePair, let qp = link.id.pointee.qp {
            var attributes = ibv_qp_attr()
            attributes.qp_state = IBV_QPS_ERR
            _ = ibv_modify_qp(qp, &attributes, Int32(IBV_QP_STATE.rawValue))
        }
        if wasEstablished { _ = rdma_disconnect(link.id) }
        destroyIfDrained(link)
    }

    func destroyIfDrained(_ link: Link) {
        guard link.state == .failed, link.outstanding == 0, links[link.key] === link else { return }
        destroy(link)
    }

    func destroy(_ link: Link) {
        guard links.removeValue(forKey: link.key) != nil else { return }
        if link.hasQueuePair {
            rdma_destroy_qp(link.id)
            link.hasQueuePair = false
            completionEntriesReserved -= link.queuePairCapacity.send + link.queuePairCapacity.receive
        }
        link.listener?.links.remove(link.key)
        rdma_destroy_id(link.id)
    }

    // MARK: queue pairs

    func createQueuePair(_ link: Link, send: Int, receive: Int) throws(RDMAError) {
        let send = max(1, min(send, device.limits.maxQueuePairWorkRequests))
        let receive = max(1, min(receive, device.limits.maxQueuePairWorkRequests))
        guard completionEntriesReserved + send + receive <= completions.capacity else {
            throw RDMAError(.system, "the completion queue of \(device.name) is full (\(completions.capacity) entries): too many RDMA connections")
        }
        var attributes = ibv_qp_init_attr()
        attributes.send_cq = completions.cq
        attributes.recv_cq = completions.cq
        attributes.qp_type = IBV_QPT_RC
        attributes.sq_sig_all = 0
        attributes.cap.max_send_wr = UInt32(send)
        attributes.cap.max_recv_wr = UInt32(receive)
        attributes.cap.max_send_sge = 1
        attributes.cap.max_recv_sge = 1
        guard rdma_create_qp(link.id, protectionDomain.pd, &attributes) == 0 else {
            throw RDMAError.system("rdma_create_qp for \(link.peer)", errno: cverbs_errno())
        }
        link.hasQueuePair = true
        link.queuePairCapacity = (send, receive)
        link.sendFree = send
        completionEntriesReserved += send + receive
    }

    func connectionParameters(initiatorDepth: UInt8, responderResources: UInt8, privateData: UnsafeRawBufferPointer) -> rdma_conn_param {
        var parameters = rdma_conn_param()
        parameters.private_data = privateData.baseAddress
        parameters.private_data_len = UInt8(privateData.count)
        parameters.initiator_depth = initiatorDepth
        parameters.responder_resources = responderResources
        parameters.retry_count = 7
        parameters.rnr_retry_count = 7
        return parameters
    }

    // MARK: connecting (active side)

    /// Starts an RC connection from `localAddress` to `peer`; events drive it on (see `handleConnectionEvents`).
    func startConnection(to peer: Endpoint, role: Link.Role, hello: Hello, initiatorDepth: UInt8,
                         deadline: UInt64) throws(RDMAError) -> Link {
        var destination = try SocketAddress.resolve(peer)
        var source = try SocketAddress.resolve(host: localAddress, port: 0)
        var id: UnsafeMutablePointer<rdma_cm_id>?
        guard rdma_create_id(events.channel, &id, nil, RDMA_PS_TCP) == 0, let id else {
            throw RDMAError.system("rdma_create_id", errno: cverbs_errno())
        }
        let link = Link(id: id, role: role, state: .resolvingAddress, peer: peer.description, deadline: deadline)
        link.initiatorDepth = initiatorDepth
        link.privateData = hello.bytes
        let remainingMs = resolveTimeout(until: deadline)
        let status = source.withSockaddr { source in destination.withSockaddr { rdma_resolve_addr(id, source, $0, remainingMs) } }
        guard status == 0 else {
            let code = cverbs_errno()
            rdma_destroy_id(id)
            throw RDMAError(.connection, "RDMA connection to \(peer): rdma_resolve_addr: \(describeErrno(code))", errno: code)
        }
        links[link.key] = link
        return link
    }

    /// rdmacm's resolve timeout for what is left until `deadline`: between 0.1 and 5 s (our own deadline
    /// check fails the connection when it passes).
    private func resolveTimeout(until deadline: UInt64) -> Int32 {
        let now = Clock.now()
        let left = deadline > now ? (deadline - now) / 1_000_000 : 0
        return Int32(max(100, min(5000, left)))
    }

    // MARK: rdmacm events

    /// An rdmacm event, copied so that it can be acknowledged before it is handled: `rdma_destroy_id`
    /// waits for the acknowledgement of every event of its identifier, and handling may destroy it.
    struct ConnectionEvent {
        let type: rdma_cm_event_type
        let id: UnsafeMutablePointer<rdma_cm_id>?
        let listenID: UnsafeMutablePointer<rdma_cm_id>?
        let status: Int32
        let privateData: [UInt8]
        let initiatorDepth: UInt8
        let responderResources: UInt8

        init(_ event: UnsafeMutablePointer<rdma_cm_event>) {
            type = event.pointee.event
            id = event.pointee.id
            listenID = event.pointee.listen_id
            status = event.pointee.status
            let conn = event.pointee.param.conn
            if let data = conn.private_data, conn.private_data_len > 0,
               type == RDMA_CM_EVENT_CONNECT_REQUEST || type == RDMA_CM_EVENT_ESTABLISHED {
                privateData = Array(UnsafeRawBufferPointer(start: data, count: Int(conn.private_data_len)))
            } else {
                privateData = []
            }
            initiatorDepth = conn.initiator_depth
            responderResources = conn.responder_resources
        }

        func hello() throws(RDMAError) -> Hello {
            let parsed = privateData.withUnsafeBytes { bytes in
                Result { () throws(RDMAError) -> Hello in try Hello(data: bytes.baseAddress, length: bytes.count) }
            }
            return try parsed.get()
        }
    }

    private func handleConnectionEvents() {
        var event: UnsafeMutablePointer<rdma_cm_event>?
        while rdma_get_cm_event(events.channel, &event) == 0, let received = event {
            let copy = ConnectionEvent(received)
            rdma_ack_cm_event(received)
            handle(copy)
        }
    }

    private func handle(_ event: ConnectionEvent) {
        let type = event.type
        guard let id = event.id else { return }
        if type == RDMA_CM_EVENT_CONNECT_REQUEST {
            if let listenID = event.listenID, let listener = listeners[UInt(bitPattern: listenID)] {
                acceptConnection(id: id, listener: listener, event: event)
            } else {
                _ = rdma_reject(id, nil, 0)
                rdma_destroy_id(id)
            }
            return
        }
        guard let link = links[UInt(bitPattern: id)] else { return }
        let eventName = String(cString: rdma_event_str(type))
        switch type {
        case RDMA_CM_EVENT_ADDR_RESOLVED:
            guard id.pointee.verbs == device.context else {
                let other = id.pointee.verbs.map { String(cString: ibv_get_device_name($0.pointee.device)) } ?? "none"
                fail(link, RDMAError(.connection, "RDMA connection to \(link.peer): the route leaves through device \(other), not \(device.name)"))
                return
            }
            link.state = .resolvingRoute
            let remainingMs = resolveTimeout(until: link.connectDeadline)
            if rdma_resolve_route(id, remainingMs) != 0 {
                fail(link, RDMAError(.connection, "RDMA connection to \(link.peer): rdma_resolve_route: \(describeErrno(cverbs_errno()))"))
            }
        case RDMA_CM_EVENT_ROUTE_RESOLVED:
            do throws(RDMAError) {
                try prepareActive(link)
            } catch {
                fail(link, error)
            }
        case RDMA_CM_EVENT_ESTABLISHED:
            established(link, event: event)
        case RDMA_CM_EVENT_DISCONNECTED:
            // What the peer sent before it closed (a last reply) may still wait in the completion queue:
            // take it before failing the link, which would flush it.
            _ = drainCompletions()
            fail(link, RDMAError(.connection, "RDMA connection to \(link.peer) was closed by the peer"))
        case RDMA_CM_EVENT_REJECTED:
            fail(link, RDMAError(.connection, "RDMA connection to \(link.peer) was refused (status \(event.status))"))
        case RDMA_CM_EVENT_ADDR_ERROR, RDMA_CM_EVENT_ROUTE_ERROR, RDMA_CM_EVENT_CONNECT_ERROR,
             RDMA_CM_EVENT_UNREACHABLE, RDMA_CM_EVENT_DEVICE_REMOVAL:
            let status = event.status
            fail(link, RDMAError(.connection, "RDMA connection to \(link.peer): \(eventName) (\(describeErrno(abs(status))))",
                                 errno: abs(status)))
        default:
            break  // TIMEWAIT_EXIT and others need nothing
        }
    }

    /// Route resolved: create the QP, post the receive buffers (messages), and send the connect request.
    private func prepareActive(_ link: Link) throws(RDMAError) {
        _ = cverbs_set_ack_timeout(link.id, options.ackTimeoutExponent)
        switch link.role {
        case .reader:
            try createQueuePair(link, send: Int(link.initiatorDepth) * 2, receive: 1)
        case .messages(let state):
            try createQueuePair(link, send: state.sendSlots, receive: state.receiveCount)
            try postInitialReceives(state, link: link)
        case .responder:
            break
        }
        link.state = .connecting
        let status = link.privateData.withUnsafeBytes { data -> Int32 in
            var parameters = connectionParameters(initiatorDepth: link.initiatorDepth, responderResources: 0, privateData: data)
            return rdma_connect(link.id, &parameters)
        }
        guard status == 0 else {
            throw RDMAError(.connection, "RDMA connection to \(link.peer): rdma_connect: \(describeErrno(cverbs_errno()))")
        }
    }

    private func established(_ link: Link, event: ConnectionEvent) {
        switch link.role {
        case .messages(let state) where link.listener == nil:
            // Active side: the accept's private data carries the peer's receive buffers (our credits).
            do throws(RDMAError) {
                try state.peerAccepted(try event.hello())
            } catch {
                fail(link, error)
                return
            }
        default:
            break
        }
        link.state = .established
        link.lastProgress = Clock.now()
        for waiter in link.connectWaiters { waiter(.success(())) }
        link.connectWaiters.removeAll()
        switch link.role {
        case .reader:
            postReads(link)
        case .messages(let state):
            if let listener = link.listener {
                if let waiter = listener.acceptWaiters.first {
                    listener.acceptWaiters.removeFirst()
                    waiter.reply(.success(state.handle))
                } else {
                    listener.acceptQueue.append(state)
                }
            }
            pumpSends(state)
        case .responder:
            break
        }
    }

    // MARK: listening and accepting (passive side)

    func listen(on endpoint: Endpoint, purpose: Hello.Purpose, messageOptions: RDMAMessageOptions?) throws(RDMAError) -> Listener {
        var address = try SocketAddress.resolve(endpoint)
        var id: UnsafeMutablePointer<rdma_cm_id>?
        guard rdma_create_id(events.channel, &id, nil, RDMA_PS_TCP) == 0, let id else {
            throw RDMAError.system("rdma_create_id", errno: cverbs_errno())
        }
        guard address.withSockaddr({ rdma_bind_addr(id, $0) }) == 0 else {
            let code = cverbs_errno()
            rdma_destroy_id(id)
            throw RDMAError.system("RDMA listener on \(endpoint): rdma_bind_addr", errno: code)
        }
        guard id.pointee.verbs == nil || id.pointee.verbs == device.context else {
            rdma_destroy_id(id)
            throw RDMAError(.invalidArgument, "\(endpoint.host) belongs to another RDMA device than \(device.name)")
        }
        guard rdma_listen(id, 128) == 0 else {
            let code = cverbs_errno()
            rdma_destroy_id(id)
            throw RDMAError.system("RDMA listener on \(endpoint): rdma_listen", errno: code)
        }
        let port = Int(UInt16(bigEndian: rdma_get_src_port(id)))
        let listener = Listener(id: id, purpose: purpose, handle: makeHandle(), endpoint: Endpoint(host: endpoint.host, port: port))
        listener.messageOptions = messageOptions
        listeners[UInt(bitPattern: id)] = listener
        listenerHandles[listener.handle] = listener
        return listener
    }

    /// Stops a listener. `connections`: also close the connections it accepted (otherwise accepted message
    /// connections go on; ones not yet taken by `accept` are closed either way).
    func closeListener(_ listener: Listener, error: RDMAError, connections: Bool = true) {
        guard listeners.removeValue(forKey: UInt(bitPattern: listener.id)) != nil else { return }
        listenerHandles[listener.handle] = nil
        rdma_destroy_id(listener.id)
        for waiter in listener.acceptWaiters { waiter.reply(.failure(error)) }
        listener.acceptWaiters.removeAll()
        let unaccepted = Set(listener.acceptQueue.map(\.handle))
        for key in listener.links {
            guard let link = links[key] else { continue }
            if connections || link.messages.map({ unaccepted.contains($0.handle) }) ?? true { fail(link, error) }
        }
        for state in listener.acceptQueue {
            state.closeAll(error)
            messageStates[state.handle] = nil
        }
        listener.acceptQueue.removeAll()
    }

    private func acceptConnection(id: UnsafeMutablePointer<rdma_cm_id>, listener: Listener, event: ConnectionEvent) {
        let peer = describePeer(id)
        let hello: Hello
        do throws(RDMAError) {
            hello = try event.hello()
            guard hello.purpose == listener.purpose else {
                throw RDMAError(.protocolViolation, "RDMA connection for \(hello.purpose) at a listener for \(listener.purpose)")
            }
        } catch {
            _ = rdma_reject(id, nil, 0)
            rdma_destroy_id(id)
            return
        }
        guard id.pointee.verbs == device.context else {
            _ = rdma_reject(id, nil, 0)
            rdma_destroy_id(id)
            return
        }
        let role: Link.Role
        var reply = Hello(purpose: hello.purpose)
        let state: MessageState?
        if hello.purpose == .messages {
            do throws(RDMAError) {
                let created = try MessageState(handle: makeHandle(), options: listener.messageOptions ?? RDMAMessageOptions(),
                                               protectionDomain: protectionDomain, peer: peer)
                try created.peerAccepted(hello)
                state = created
            } catch {
                _ = rdma_reject(id, nil, 0)
                rdma_destroy_id(id)
                return
            }
            role = .messages(state!)
            reply = state!.hello
        } else {
            role = .responder
            state = nil
        }
        let link = Link(id: id, role: role, state: .accepting, peer: peer, deadline: Clock.deadline(after: .seconds(30)))
        link.listener = listener
        links[link.key] = link
        listener.links.insert(link.key)
        if let state {
            state.link = link
            messageStates[state.handle] = state
        }
        do throws(RDMAError) {
            _ = cverbs_set_ack_timeout(id, options.ackTimeoutExponent)
            switch role {
            case .messages(let state):
                try createQueuePair(link, send: state.sendSlots, receive: state.receiveCount)
                try postInitialReceives(state, link: link)
            default:
                try createQueuePair(link, send: 1, receive: 1)
            }
            // rdmacm reports the request's depths from our side: `responderResources` is the READs the peer
            // wants to keep in flight towards us. We answer that many at once, up to this device's limit.
            let answered = UInt8(min(Int(event.responderResources), device.limits.maxReadsAnswered, 255))
            let initiated = UInt8(min(Int(event.initiatorDepth), device.limits.maxReadsInitiated, 255))
            let data = reply.bytes
            let status = data.withUnsafeBytes { bytes -> Int32 in
                var parameters = connectionParameters(initiatorDepth: initiated, responderResources: answered, privateData: bytes)
                return rdma_accept(id, &parameters)
            }
            guard status == 0 else { throw RDMAError.system("rdma_accept from \(peer)", errno: cverbs_errno()) }
        } catch {
            fail(link, error)
        }
    }

    func describePeer(_ id: UnsafeMutablePointer<rdma_cm_id>) -> String {
        guard let address = rdma_get_peer_addr(id) else { return "?" }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var service = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        let length = socklen_t(address.pointee.sa_family == sa_family_t(AF_INET6) ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        guard getnameinfo(address, length, &host, socklen_t(host.count), &service, socklen_t(service.count),
                          NI_NUMERICHOST | NI_NUMERICSERV) == 0 else { return "?" }
        let hostText = host.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let serviceText = service.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return hostText.contains(":") ? "[\(hostText)]:\(serviceText)" : "\(hostText):\(serviceText)"
    }
}

extension WorkRequest {
    var link: Link {
        switch self {
        case .read(let link, _, _), .send(let link, _), .receive(let link, _): link
        }
    }
}
