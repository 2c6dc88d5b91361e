import CVerbs
import GedsCore
#if canImport(Glibc)
import Glibc
#endif

/// The poll thread's world: `EngineLoop` owns every link, listener and posted work request; the files beside
/// this one extend it by job (one-sided READs, the connection state machine, listening, messages).

/// What a posted work request was for.
enum WorkRequest {
    case read(Link, ReadOperation, UInt32)
    case send(Link, slot: Int)
    case receive(Link, buffer: Int)
}

extension WorkRequest {
    var link: Link {
        switch self {
        case .read(let link, _, _), .send(let link, _), .receive(let link, _): link
        }
    }
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
    func drainCompletions() -> Int {
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
}
