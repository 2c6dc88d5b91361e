import CVerbs
import GedsCore
#if canImport(Glibc)
import Glibc
#endif

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

extension EngineLoop {
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

    func acceptConnection(id: UnsafeMutablePointer<rdma_cm_id>, listener: Listener, event: ConnectionEvent) {
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
