import CVerbs
import GedsCore
#if canImport(Glibc)
import Glibc
#endif

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

extension EngineLoop {
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

    func handleConnectionEvents() {
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
}
