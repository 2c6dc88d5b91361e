import CVerbs
import GedsCore
#if canImport(Glibc)
import Glibc
#endif

/// Sizes of a message connection. Both sides choose their own; fragments are cut to the smaller buffer.
public struct RDMAMessageOptions: Sendable {
    /// Receive buffers for data fragments: the peer's data credits, so at most this many fragments of
    /// messages are ever in flight towards us or waiting for our application. (A few more are posted for
    /// credit fragments.)
    public var receiveBuffers = 16
    /// Bytes of one receive (and send) buffer, the fragment header included.
    public var bufferSize = 64 << 10
    /// The largest message accepted (checked on the first fragment, before anything is buffered).
    public var maxMessageSize = 16 << 20

    public init(receiveBuffers: Int = 16, bufferSize: Int = 64 << 10, maxMessageSize: Int = 16 << 20) {
        self.receiveBuffers = receiveBuffers
        self.bufferSize = bufferSize
        self.maxMessageSize = maxMessageSize
    }
}

/// The fragment header, big-endian: kind u8 | flags u8 | control credits returned u16 | data credits
/// returned u32 | message length u32.
enum Fragment {
    static let headerSize = 12
    static let data: UInt8 = 1
    static let credit: UInt8 = 2
    static let first: UInt8 = 1
    static let last: UInt8 = 2
    /// Receive buffers posted for credit fragments, beyond the data buffers.
    static let controlBuffers = 4
}

/// A received fragment's header as the peer wrote it (not yet checked against anything).
@_spi(Fuzzing) public struct FragmentHeader: Sendable, Equatable {
    public let kind: UInt8
    public let flags: UInt8
    public let returnedControl: Int
    public let returnedData: Int
    /// The whole message's length, announced in each of its fragments.
    public let total: Int

    /// Nil when the fragment is shorter than a header.
    public init?(_ fragment: UnsafeRawBufferPointer) {
        guard fragment.count >= Fragment.headerSize else { return nil }
        kind = fragment[0]
        flags = fragment[1]
        returnedControl = Int(UInt16(bigEndian: fragment.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
        returnedData = Int(UInt32(bigEndian: fragment.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        total = Int(UInt32(bigEndian: fragment.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
    }
}

/// Joins data fragments into messages and enforces the fragment rules: a message starts with a `first`
/// fragment, stays within the announced length and the size limit, and ends exactly at it with `last`.
/// Pure, so the decoder can be fuzzed without a device.
@_spi(Fuzzing) public struct MessageAssembler: Sendable {
    public let maxMessageSize: Int
    private var assembly: [UInt8]?
    private var expected = 0

    public init(maxMessageSize: Int) {
        self.maxMessageSize = maxMessageSize
    }

    /// Adds one data fragment's payload; returns the message it completes, if any. A violation describes
    /// what the peer did wrong and leaves the assembler empty.
    public mutating func append(flags: UInt8, total: Int, payload: UnsafeRawBufferPointer) throws(RDMAError) -> [UInt8]? {
        if flags & Fragment.first != 0 {
            guard assembly == nil else { throw violation("a new message began inside another") }
            guard total <= maxMessageSize else {
                throw violation("a message of \(total) bytes exceeds the limit of \(maxMessageSize)")
            }
            assembly = []
            assembly!.reserveCapacity(total)
            expected = total
        } else if assembly == nil {
            throw violation("a continuation fragment without a message")
        }
        guard assembly!.count + payload.count <= expected else {
            throw violation("a message is longer than its announced \(expected) bytes")
        }
        assembly!.append(contentsOf: payload)
        guard flags & Fragment.last != 0 else { return nil }
        guard assembly!.count == expected else {
            throw violation("a message ended after \(assembly!.count) of \(expected) bytes")
        }
        defer { assembly = nil }
        return assembly
    }

    public mutating func reset() {
        assembly = nil
    }

    private mutating func violation(_ what: String) -> RDMAError {
        assembly = nil
        return RDMAError(.protocolViolation, what)
    }
}

/// One message connection's flow control, buffers and queues. Poll-thread only.
///
/// Credits: each side posts `receiveBuffers` receives for data fragments plus `Fragment.controlBuffers` for
/// credit fragments, and tells the peer both counts in its hello. A data fragment consumes a data credit,
/// a credit fragment a control credit; every fragment returns, in its header, the buffers of both kinds
/// freed since the last report. A data buffer is freed when the application has taken its bytes; a credit
/// fragment is consumed by the poll thread at once. So data credits are only ever held up by the
/// receiving application (that is the back-pressure), and returning them never competes with data for a
/// buffer: a sender never overruns the receiver, and flow control cannot deadlock on itself.
///
/// Credit fragments are sent only when returned data credits reach half the peer's data buffers (and
/// nothing else goes the other way to carry them), or when returned control credits reach half the
/// control buffers; so an exchange of credit fragments dies out instead of echoing forever.
///
/// Receiving: fragments are copied out of their buffers only for the message at the head (so a message of
/// any size gets through the fixed buffers), and the next message waits in its buffers until the
/// application has taken the head one. Memory held outside the buffers is therefore at most one message.
final class MessageState {
    final class Outgoing {
        let bytes: [UInt8]
        var offset = 0
        var started = false
        let deadline: UInt64
        let reply: Reply<Void>
        init(bytes: [UInt8], deadline: UInt64, reply: Reply<Void>) {
            self.bytes = bytes
            self.deadline = deadline
            self.reply = reply
        }
    }

    struct Pending {
        let buffer: Int
        let count: Int
        let flags: UInt8
        let total: Int
    }

    let handle: Int
    let peer: String
    weak var link: Link?
    let options: RDMAMessageOptions
    let dataBuffers: Int
    let receiveCount: Int
    let bufferSize: Int
    let sendSlots: Int
    private let receiveMemory: AlignedBuffer
    let receiveRegion: MemoryRegion
    private let sendMemory: AlignedBuffer
    let sendRegion: MemoryRegion
    var freeSlots: [Int]
    /// Data and credit fragments we may still send (the peer's free receive buffers, as far as we know).
    var dataCredits = 0
    var controlCredits = 0
    var peerDataBuffers = 0
    var peerControlBuffers = 0
    var fragmentPayload = 0
    /// Buffers we freed and posted again but have not reported to the peer yet.
    var owedData = 0
    var owedControl = 0
    let dataThreshold: Int
    let controlThreshold = max(1, Fragment.controlBuffers / 2)
    var pending: [Pending] = []
    var pendingHead = 0
    var assembler: MessageAssembler
    var ready: [UInt8]?
    var receiveWaiters: [(deadline: UInt64, reply: Reply<[UInt8]>)] = []
    var sendQueue: [Outgoing] = []
    var closedError: RDMAError?
    var closeReply: Reply<Void>?
    // statistics, for tests and tools
    var fragmentsSent = 0
    var creditFragmentsSent = 0
    var maxReceivedInFlight = 0

    init(handle: Int, options: RDMAMessageOptions, protectionDomain: ProtectionDomain, peer: String) throws(RDMAError) {
        guard options.receiveBuffers >= 1, options.bufferSize > Fragment.headerSize, options.maxMessageSize >= 0 else {
            throw RDMAError(.invalidArgument, "message connections need receive buffers of more than \(Fragment.headerSize) bytes")
        }
        self.handle = handle
        self.peer = peer
        self.options = options
        dataBuffers = options.receiveBuffers
        receiveCount = options.receiveBuffers + Fragment.controlBuffers
        bufferSize = options.bufferSize
        sendSlots = options.receiveBuffers + Fragment.controlBuffers
        dataThreshold = max(1, options.receiveBuffers / 2)
        receiveMemory = AlignedBuffer(count: receiveCount * bufferSize)
        receiveRegion = try MemoryRegion(protectionDomain, memory: receiveMemory, access: [.localWrite])
        sendMemory = AlignedBuffer(count: sendSlots * bufferSize)
        sendRegion = try MemoryRegion(protectionDomain, memory: sendMemory, access: [])
        freeSlots = Array((0..<sendSlots).reversed())
        assembler = MessageAssembler(maxMessageSize: options.maxMessageSize)
    }

    /// Our hello: the buffers we post.
    var hello: Hello {
        Hello(purpose: .messages, receiveBuffers: UInt32(dataBuffers), controlBuffers: UInt8(Fragment.controlBuffers),
              bufferSize: UInt32(bufferSize))
    }

    /// The peer's hello: its receive buffers are our credits.
    func peerAccepted(_ hello: Hello) throws(RDMAError) {
        guard hello.purpose == .messages, hello.receiveBuffers >= 1, hello.controlBuffers >= 1,
              Int(hello.bufferSize) > Fragment.headerSize else {
            throw RDMAError(.protocolViolation, "RDMA message peer \(peer) offers \(hello.receiveBuffers)+\(hello.controlBuffers) buffers of \(hello.bufferSize) bytes")
        }
        peerDataBuffers = Int(hello.receiveBuffers)
        peerControlBuffers = Int(hello.controlBuffers)
        dataCredits = peerDataBuffers
        controlCredits = peerControlBuffers
        fragmentPayload = min(bufferSize, Int(hello.bufferSize)) - Fragment.headerSize
    }

    func sendSlotFreed(_ slot: Int) { freeSlots.append(slot) }

    func receiveBuffer(_ index: Int) -> UnsafeMutableRawPointer { receiveMemory.base + index * bufferSize }
    func sendBuffer(_ slot: Int) -> UnsafeMutableRawPointer { sendMemory.base + slot * bufferSize }

    /// The link failed or closed: sends fail; receivers fail once nothing complete is left to hand them.
    func linkFailed(_ error: RDMAError, loop: EngineLoop) {
        if closedError == nil { closedError = error }
        for outgoing in sendQueue { outgoing.reply(.failure(error)) }
        sendQueue.removeAll()
        if ready == nil {
            for waiter in receiveWaiters { waiter.reply(.failure(error)) }
            receiveWaiters.removeAll()
        }
        if let closeReply { closeReply(.success(())); self.closeReply = nil }
    }

    func closeAll(_ error: RDMAError) {
        if closedError == nil { closedError = error }
        for outgoing in sendQueue { outgoing.reply(.failure(error)) }
        sendQueue.removeAll()
        for waiter in receiveWaiters { waiter.reply(.failure(error)) }
        receiveWaiters.removeAll()
        if let closeReply { closeReply(.success(())); self.closeReply = nil }
    }

    /// Fails overdue waits; returns the nearest remaining deadline.
    func expire(now: UInt64, loop: EngineLoop) -> UInt64 {
        var nearest = UInt64.max
        receiveWaiters.removeAll { waiter in
            guard now >= waiter.deadline else { nearest = min(nearest, waiter.deadline); return false }
            waiter.reply(.failure(RDMAError(.timedOut, "no RDMA message from \(peer) in time")))
            return true
        }
        var index = 0
        while index < sendQueue.count {
            let outgoing = sendQueue[index]
            guard now >= outgoing.deadline else {
                nearest = min(nearest, outgoing.deadline)
                index += 1
                continue
            }
            let error = RDMAError(.timedOut, "RDMA message to \(peer) not sent in time: the peer's receive buffers stayed full (no credits)")
            if outgoing.started, let link {
                // Half a message is on the wire: the stream cannot continue.
                loop.fail(link, error)
                return nearest
            }
            sendQueue.remove(at: index)
            outgoing.reply(.failure(error))
        }
        return nearest
    }
}

extension EngineLoop {
    func postInitialReceives(_ state: MessageState, link: Link) throws(RDMAError) {
        for index in 0..<state.receiveCount {
            try postReceive(state, link: link, buffer: index)
        }
    }

    func postReceive(_ state: MessageState, link: Link, buffer: Int) throws(RDMAError) {
        guard link.hasQueuePair, let qp = link.id.pointee.qp else { return }
        let workID = nextWorkID
        nextWorkID += 1
        var sge = ibv_sge(addr: state.receiveRegion.localAddress(at: buffer * state.bufferSize),
                          length: UInt32(state.bufferSize), lkey: state.receiveRegion.lkey)
        var request = ibv_recv_wr()
        request.wr_id = workID
        request.num_sge = 1
        var bad: UnsafeMutablePointer<ibv_recv_wr>?
        let status = withUnsafeMutablePointer(to: &sge) { sge -> Int32 in
            request.sg_list = sge
            return ibv_post_recv(qp, &request, &bad)
        }
        guard status == 0 else { throw RDMAError.system("ibv_post_recv for \(link.peer)", errno: status) }
        inflight[workID] = .receive(link, buffer: buffer)
        link.outstanding += 1
    }

    /// Posts one fragment from send slot `slot`. False when the link failed.
    private func postSend(_ state: MessageState, link: Link, slot: Int, length: Int) -> Bool {
        guard let qp = link.id.pointee.qp else { return false }
        let workID = nextWorkID
        nextWorkID += 1
        var sge = ibv_sge(addr: state.sendRegion.localAddress(at: slot * state.bufferSize), length: UInt32(length),
                          lkey: state.sendRegion.lkey)
        var request = ibv_send_wr()
        request.wr_id = workID
        request.num_sge = 1
        request.opcode = IBV_WR_SEND
        request.send_flags = IBV_SEND_SIGNALED.rawValue
        var bad: UnsafeMutablePointer<ibv_send_wr>?
        let status = withUnsafeMutablePointer(to: &sge) { sge -> Int32 in
            request.sg_list = sge
            return ibv_post_send(qp, &request, &bad)
        }
        guard status == 0 else {
            state.freeSlots.append(slot)
            fail(link, RDMAError.system("ibv_post_send to \(link.peer)", errno: status))
            return false
        }
        inflight[workID] = .send(link, slot: slot)
        link.outstanding += 1
        link.sendFree -= 1
        return true
    }

    private func writeHeader(_ buffer: UnsafeMutableRawPointer, kind: UInt8, flags: UInt8, state: MessageState, total: Int) {
        buffer.storeBytes(of: kind, toByteOffset: 0, as: UInt8.self)
        buffer.storeBytes(of: flags, toByteOffset: 1, as: UInt8.self)
        buffer.storeBytes(of: UInt16(state.owedControl).bigEndian, toByteOffset: 2, as: UInt16.self)
        buffer.storeBytes(of: UInt32(state.owedData).bigEndian, toByteOffset: 4, as: UInt32.self)
        buffer.storeBytes(of: UInt32(total).bigEndian, toByteOffset: 8, as: UInt32.self)
        state.owedData = 0
        state.owedControl = 0
    }

    /// Sends what the credits and free slots allow, then returns credits if that is due.
    func pumpSends(_ state: MessageState) {
        guard let link = state.link, link.state == .established else { return }
        while let outgoing = state.sendQueue.first {
            guard state.dataCredits >= 1, let slot = state.freeSlots.popLast() else { break }
            let count = min(state.fragmentPayload, outgoing.bytes.count - outgoing.offset)
            var flags: UInt8 = outgoing.started ? 0 : Fragment.first
            if outgoing.offset + count == outgoing.bytes.count { flags |= Fragment.last }
            let buffer = state.sendBuffer(slot)
            let owed = (state.owedData, state.owedControl)
            writeHeader(buffer, kind: Fragment.data, flags: flags, state: state, total: outgoing.bytes.count)
            outgoing.bytes.withUnsafeBytes { source in
                if count > 0 {
                    (buffer + Fragment.headerSize).copyMemory(from: source.baseAddress! + outgoing.offset, byteCount: count)
                }
            }
            guard postSend(state, link: link, slot: slot, length: Fragment.headerSize + count) else {
                (state.owedData, state.owedControl) = owed
                return
            }
            state.dataCredits -= 1
            state.fragmentsSent += 1
            outgoing.started = true
            outgoing.offset += count
            if flags & Fragment.last != 0 {
                state.sendQueue.removeFirst()
                outgoing.reply(.success(()))
            }
        }
        returnCreditsIfDue(state, link: link)
        if let closeReply = state.closeReply, state.sendQueue.isEmpty, state.freeSlots.count == state.sendSlots {
            state.closeReply = nil
            finishClose(state, reply: closeReply)
        }
    }

    /// A header-only credit fragment, when enough is owed and no data fragment is about to carry it.
    private func returnCreditsIfDue(_ state: MessageState, link: Link) {
        guard state.owedData >= state.dataThreshold || state.owedControl >= state.controlThreshold else { return }
        guard state.controlCredits >= 1, !state.freeSlots.isEmpty else { return }
        let slot = state.freeSlots.removeLast()
        let owed = (state.owedData, state.owedControl)
        writeHeader(state.sendBuffer(slot), kind: Fragment.credit, flags: 0, state: state, total: 0)
        guard postSend(state, link: link, slot: slot, length: Fragment.headerSize) else {
            (state.owedData, state.owedControl) = owed
            return
        }
        state.controlCredits -= 1
        state.creditFragmentsSent += 1
    }

    /// A fragment arrived in receive buffer `buffer`.
    func received(_ state: MessageState, buffer: Int, byteCount: Int) {
        guard let link = state.link else { return }
        guard let header = FragmentHeader(UnsafeRawBufferPointer(start: state.receiveBuffer(buffer), count: byteCount)) else {
            fail(link, RDMAError(.protocolViolation, "RDMA message fragment of \(byteCount) bytes from \(state.peer)"))
            return
        }
        state.dataCredits += header.returnedData
        state.controlCredits += header.returnedControl
        guard state.dataCredits <= state.peerDataBuffers, state.controlCredits <= state.peerControlBuffers else {
            fail(link, RDMAError(.protocolViolation, "RDMA message peer \(state.peer) returned more credits than it has buffers"))
            return
        }
        switch header.kind {
        case Fragment.credit:
            do throws(RDMAError) {
                try postReceive(state, link: link, buffer: buffer)
            } catch {
                fail(link, error)
                return
            }
            state.owedControl += 1
        case Fragment.data:
            state.pending.append(MessageState.Pending(buffer: buffer, count: byteCount - Fragment.headerSize, flags: header.flags,
                                                      total: header.total))
            state.maxReceivedInFlight = max(state.maxReceivedInFlight, state.pending.count - state.pendingHead)
        default:
            fail(link, RDMAError(.protocolViolation, "RDMA message fragment of unknown kind \(header.kind) from \(state.peer)"))
            return
        }
        consume(state)
        pumpSends(state)
    }

    /// Moves fragments of the head message out of their buffers (posting the buffers again), and hands
    /// complete messages to waiting receivers.
    func consume(_ state: MessageState) {
        let link = state.link  // gone once the connection is destroyed: complete messages still get delivered
        while true {
            if let message = state.ready, !state.receiveWaiters.isEmpty {
                state.ready = nil
                state.receiveWaiters.removeFirst().reply(.success(message))
            }
            guard state.ready == nil, state.pendingHead < state.pending.count else { break }
            let fragment = state.pending[state.pendingHead]
            let completed: [UInt8]?
            do throws(RDMAError) {
                completed = try state.assembler.append(
                    flags: fragment.flags, total: fragment.total,
                    payload: UnsafeRawBufferPointer(start: state.receiveBuffer(fragment.buffer) + Fragment.headerSize, count: fragment.count))
            } catch {
                return violation(state, link, error.message)
            }
            state.pendingHead += 1
            if state.pendingHead == state.pending.count {
                state.pending.removeAll(keepingCapacity: true)
                state.pendingHead = 0
            }
            if let link, link.state == .established {
                do throws(RDMAError) {
                    try postReceive(state, link: link, buffer: fragment.buffer)
                } catch {
                    fail(link, error)
                }
                state.owedData += 1
            }
            if let completed { state.ready = completed }
        }
        // Closed, and nothing complete is left: what is still pending can never complete.
        if state.ready == nil, let error = state.closedError {
            for waiter in state.receiveWaiters { waiter.reply(.failure(error)) }
            state.receiveWaiters.removeAll()
        }
    }

    /// The peer broke the fragment rules: what it sent is dropped and the connection fails.
    private func violation(_ state: MessageState, _ link: Link?, _ what: String) {
        let error = RDMAError(.protocolViolation, "RDMA messages from \(state.peer): \(what)")
        state.pending.removeAll()
        state.pendingHead = 0
        state.assembler.reset()
        if state.closedError == nil { state.closedError = error }
        if let link { fail(link, error) }
        if state.ready == nil {
            for waiter in state.receiveWaiters { waiter.reply(.failure(error)) }
            state.receiveWaiters.removeAll()
        }
    }

    // MARK: commands from the public API

    func messageReceive(handle: Int, deadline: UInt64, reply: Reply<[UInt8]>) {
        guard let state = messageStates[handle] else {
            return reply(.failure(RDMAError(.closed, "the RDMA message connection is closed")))
        }
        state.receiveWaiters.append((deadline, reply))
        consume(state)
        guard reply.isPending else {
            pumpSends(state)  // the buffers just freed may be due back to the peer
            return
        }
        if let error = state.closedError, state.ready == nil {
            state.receiveWaiters.removeAll { $0.reply === reply }
            return reply(.failure(error))
        }
        pumpSends(state)
    }

    func messageSend(handle: Int, bytes: [UInt8], deadline: UInt64, reply: Reply<Void>) {
        guard let state = messageStates[handle] else {
            return reply(.failure(RDMAError(.closed, "the RDMA message connection is closed")))
        }
        if let error = state.closedError { return reply(.failure(error)) }
        guard bytes.count <= Int(UInt32.max) else {
            return reply(.failure(RDMAError(.invalidArgument, "an RDMA message of \(bytes.count) bytes is too large")))
        }
        state.sendQueue.append(MessageState.Outgoing(bytes: bytes, deadline: deadline, reply: reply))
        pumpSends(state)
    }

    /// Closes after every queued message has been handed to the device and completed.
    func messageClose(handle: Int, reply: Reply<Void>) {
        guard let state = messageStates[handle] else { return reply(.success(())) }
        if state.closedError != nil || (state.sendQueue.isEmpty && state.freeSlots.count == state.sendSlots) {
            finishClose(state, reply: reply)
        } else {
            state.closeReply = reply
        }
    }

    func finishClose(_ state: MessageState, reply: Reply<Void>) {
        abort(state)
        reply(.success(()))
    }

    func abortMessages(handle: Int) {
        if let state = messageStates[handle] { abort(state) }
    }

    private func abort(_ state: MessageState) {
        let closed = RDMAError(.closed, "the RDMA message connection is closed")
        if let link = state.link { fail(link, closed) }
        state.closeAll(closed)
        messageStates[state.handle] = nil
    }

    func messageStatistics(handle: Int) -> RDMAMessageConnection.Statistics? {
        guard let state = messageStates[handle] else { return nil }
        return .init(credits: state.dataCredits, fragmentsSent: state.fragmentsSent, creditFragmentsSent: state.creditFragmentsSent,
                     peerReceiveBuffers: state.peerDataBuffers, maxFragmentsWaiting: state.maxReceivedInFlight)
    }
}

/// A listener for message connections (the MDS side): accepts connections whose buffers are posted before
/// the handshake completes.
public final class RDMAMessageListener: Sendable {
    public let engine: RDMAEngine
    /// The address actually bound (the port chosen when 0 was asked for).
    public let endpoint: Endpoint
    private let handle: Int

    private init(engine: RDMAEngine, endpoint: Endpoint, handle: Int) {
        self.engine = engine
        self.endpoint = endpoint
        self.handle = handle
    }

    /// Listens on `endpoint` (port 0: any free port) of the engine's device.
    public static func listen(engine: RDMAEngine, on endpoint: Endpoint,
                              options: RDMAMessageOptions = RDMAMessageOptions()) async throws(RDMAError) -> RDMAMessageListener {
        let (bound, handle) = try await engine.call { (loop, reply: Reply<Pair>) in
            do throws(RDMAError) {
                let listener = try loop.listen(on: endpoint, purpose: .messages, messageOptions: options)
                reply(.success(Pair(endpoint: listener.endpoint, handle: listener.handle)))
            } catch {
                reply(.failure(error))
            }
        }.tuple
        return RDMAMessageListener(engine: engine, endpoint: bound, handle: handle)
    }

    struct Pair: Sendable {
        let endpoint: Endpoint
        let handle: Int
        var tuple: (Endpoint, Int) { (endpoint, handle) }
    }

    /// The next established connection.
    public func accept(timeout: Duration) async throws(RDMAError) -> RDMAMessageConnection {
        let handle = self.handle
        let deadline = Clock.deadline(after: timeout)
        let connection = try await engine.call { (loop, reply: Reply<Int>) in
            guard let listener = loop.listenerHandles[handle] else {
                return reply(.failure(RDMAError(.closed, "the RDMA listener is closed")))
            }
            if !listener.acceptQueue.isEmpty {
                reply(.success(listener.acceptQueue.removeFirst().handle))
            } else {
                listener.acceptWaiters.append((deadline, reply))
            }
        }
        let peer = try? await engine.call { (loop, reply: Reply<String>) in
            reply(.success(loop.messageStates[connection]?.peer ?? "?"))
        }
        return RDMAMessageConnection(engine: engine, handle: connection, peer: peer ?? "?")
    }

    /// Stops listening; connections already accepted go on.
    public func close() async {
        let handle = self.handle
        _ = try? await engine.call { (loop, reply: Reply<Void>) in
            if let listener = loop.listenerHandles[handle] {
                loop.closeListener(listener, error: RDMAError(.closed, "the RDMA listener is closed"), connections: false)
            }
            reply(.success(()))
        }
    }

    deinit {
        let handle = self.handle
        engine.submit { loop in
            guard let listener = loop.listenerHandles[handle] else { return }
            loop.closeListener(listener, error: RDMAError(.closed, "the RDMA listener is closed"), connections: false)
        }
    }
}

/// A reliable, ordered message connection over RDMA send/receive: "send these bytes", "receive a message".
/// Messages of any size up to the receiver's limit are cut into fragments that fit its pre-posted receive
/// buffers; credit-based flow control means a sender never overruns the receiver (it waits, within its
/// deadline). One message connection carries one stream of GEDS wire frames.
public final class RDMAMessageConnection: Sendable {
    public let engine: RDMAEngine
    public let peer: String
    private let handle: Int

    init(engine: RDMAEngine, handle: Int, peer: String) {
        self.engine = engine
        self.handle = handle
        self.peer = peer
    }

    /// Connects to a message listener at `peer`.
    public static func connect(engine: RDMAEngine, to peer: Endpoint, options: RDMAMessageOptions = RDMAMessageOptions(),
                               timeout: Duration) async throws(RDMAError) -> RDMAMessageConnection {
        let deadline = Clock.deadline(after: timeout)
        let handle = try await engine.call { (loop, reply: Reply<Int>) in
            do throws(RDMAError) {
                let state = try MessageState(handle: loop.makeHandle(), options: options, protectionDomain: loop.protectionDomain,
                                             peer: peer.description)
                let link = try loop.startConnection(to: peer, role: .messages(state), hello: state.hello, initiatorDepth: 0,
                                                    deadline: deadline)
                state.link = link
                loop.messageStates[state.handle] = state
                link.connectWaiters.append(Reply<Void>.forwarding { result in
                    switch result {
                    case .success: reply(.success(state.handle))
                    case .failure(let error):
                        loop.messageStates[state.handle] = nil
                        reply(.failure(error))
                    }
                })
            } catch {
                reply(.failure(error))
            }
        }
        return RDMAMessageConnection(engine: engine, handle: handle, peer: peer.description)
    }

    /// Queues `bytes` as one message and returns once all of it is handed to the device (copied: the
    /// caller's array is not referenced afterwards). Waits for credits until `timeout`.
    public func send(_ bytes: [UInt8], timeout: Duration) async throws(RDMAError) {
        let handle = self.handle
        let deadline = Clock.deadline(after: timeout)
        try await engine.call { (loop, reply: Reply<Void>) in
            loop.messageSend(handle: handle, bytes: bytes, deadline: deadline, reply: reply)
        }
    }

    /// The next message, in order. Throws `.closed`/`.connection` once the connection is gone and every
    /// message that arrived before has been received.
    public func receive(timeout: Duration) async throws(RDMAError) -> [UInt8] {
        let handle = self.handle
        let deadline = Clock.deadline(after: timeout)
        return try await engine.call { (loop, reply: Reply<[UInt8]>) in
            loop.messageReceive(handle: handle, deadline: deadline, reply: reply)
        }
    }

    /// Queues `messages` in order, without waiting: `sent` is called on the poll thread for each one once it is
    /// handed to the device (or failed). Messages queued this way from one thread at a time keep their order.
    public func post(_ messages: [[UInt8]], timeout: Duration, sent: @escaping @Sendable (Result<Void, RDMAError>) -> Void) {
        let handle = self.handle
        let deadline = Clock.deadline(after: timeout)
        let posted = engine.submit { loop in
            for bytes in messages {
                loop.messageSend(handle: handle, bytes: bytes, deadline: deadline, reply: .forwarding(sent))
            }
        }
        if !posted {
            for _ in messages { sent(.failure(RDMAError(.closed, "the RDMA engine is shut down"))) }
        }
    }

    /// Asks for the next message without waiting: `received` gets it (or the failure) on the poll thread, where
    /// a caller can ask for the following one at once, without a thread hand-off per message.
    public func receive(timeout: Duration, received: @escaping @Sendable (Result<[UInt8], RDMAError>) -> Void) {
        let handle = self.handle
        let deadline = Clock.deadline(after: timeout)
        let posted = engine.submit { loop in loop.messageReceive(handle: handle, deadline: deadline, reply: .forwarding(received)) }
        if !posted { received(.failure(RDMAError(.closed, "the RDMA engine is shut down"))) }
    }

    /// Closes at once, dropping what is still queued (a peer that stopped reading must not hold it open).
    public func abort() {
        let handle = self.handle
        engine.submit { loop in loop.abortMessages(handle: handle) }
    }

    /// Closes after the messages already sent have left; the peer's receives then fail with "closed".
    public func close() async {
        let handle = self.handle
        _ = try? await engine.call { (loop, reply: Reply<Void>) in loop.messageClose(handle: handle, reply: reply) }
    }

    public struct Statistics: Sendable {
        /// Data fragments this side may send right now.
        public var credits: Int
        public var fragmentsSent: Int
        public var creditFragmentsSent: Int
        /// Data receive buffers the peer posted (the most data fragments ever in flight towards it).
        public var peerReceiveBuffers: Int
        /// The most received fragments that ever waited here for the application at once.
        public var maxFragmentsWaiting: Int
    }

    public func statistics() async -> Statistics? {
        let handle = self.handle
        return try? await engine.call { (loop, reply: Reply<Statistics?>) in reply(.success(loop.messageStatistics(handle: handle))) }
    }

    deinit {
        let handle = self.handle
        engine.submit { loop in loop.abortMessages(handle: handle) }
    }
}
