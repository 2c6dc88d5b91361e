import CVerbs
import GedsCore
#if canImport(Glibc)
import Glibc
#endif

/// A completion queue with its completion channel (`ibv_cq` + `ibv_comp_channel`). Used only by the engine's
/// poll thread once created; destroyed (after every queue pair using it) when the engine stops.
final class CompletionQueue {
    let channel: UnsafeMutablePointer<ibv_comp_channel>
    let cq: UnsafeMutablePointer<ibv_cq>
    let capacity: Int
    private var unacknowledged: UInt32 = 0

    init(device: DeviceContext, capacity wanted: Int) throws(RDMAError) {
        guard let channel = ibv_create_comp_channel(device.context) else {
            throw RDMAError.system("ibv_create_comp_channel(\(device.name))", errno: cverbs_errno())
        }
        let capacity = max(16, min(wanted, device.limits.maxCompletionQueueEntries))
        guard let cq = ibv_create_cq(device.context, Int32(capacity), nil, channel, 0) else {
            let code = cverbs_errno()
            ibv_destroy_comp_channel(channel)
            throw RDMAError.system("ibv_create_cq(\(device.name), \(capacity))", errno: code)
        }
        let flags = fcntl(channel.pointee.fd, F_GETFL)
        _ = fcntl(channel.pointee.fd, F_SETFL, flags | O_NONBLOCK)
        self.channel = channel
        self.cq = cq
        self.capacity = Int(cq.pointee.cqe)
    }

    deinit {
        if unacknowledged > 0 { ibv_ack_cq_events(cq, unacknowledged) }
        ibv_destroy_cq(cq)
        ibv_destroy_comp_channel(channel)
    }

    var descriptor: Int32 { channel.pointee.fd }

    /// Asks for an event on the channel at the next completion.
    func arm() { _ = ibv_req_notify_cq(cq, 0) }

    /// Takes the channel's pending events (non-blocking) and acknowledges them in batches.
    func takeEvents() {
        var eventCQ: UnsafeMutablePointer<ibv_cq>?
        var context: UnsafeMutableRawPointer?
        while ibv_get_cq_event(channel, &eventCQ, &context) == 0 { unacknowledged += 1 }
        if unacknowledged >= 64 {
            ibv_ack_cq_events(cq, unacknowledged)
            unacknowledged = 0
        }
    }
}

/// An rdmacm event channel (`rdma_event_channel`), non-blocking, destroyed after all its identifiers.
final class ConnectionEventChannel {
    let channel: UnsafeMutablePointer<rdma_event_channel>

    init() throws(RDMAError) {
        guard let channel = rdma_create_event_channel() else {
            let code = cverbs_errno()
            throw RDMAError(code == ENODEV || code == ENOSYS ? .noDevice : .system,
                            (code == ENODEV || code == ENOSYS ? "no RDMA device: " : "")
                                + "rdma_create_event_channel: \(describeErrno(code))", errno: code)
        }
        let flags = fcntl(channel.pointee.fd, F_GETFL)
        _ = fcntl(channel.pointee.fd, F_SETFL, flags | O_NONBLOCK)
        self.channel = channel
    }

    deinit { rdma_destroy_event_channel(channel) }

    var descriptor: Int32 { channel.pointee.fd }
}

/// The connection handshake's private data: who we are and what the connection is for. Big-endian:
/// magic u32 | version u8 | purpose u8 | control buffers u8 | 0 u8 | receive buffers u32 | buffer size u32.
struct Hello: Equatable {
    static let magic: UInt32 = 0x4745_4453  // "GEDS"
    static let version: UInt8 = 1
    static let size = 16

    enum Purpose: UInt8 {
        case reads = 1
        case messages = 2
    }

    var purpose: Purpose
    /// Messages: receive buffers the sender of this hello has posted for data fragments (the peer's data
    /// credits) and, beyond those, for credit fragments (its control credits).
    var receiveBuffers: UInt32 = 0
    var controlBuffers: UInt8 = 0
    /// Messages: the size of each receive buffer (the largest fragment the peer may send).
    var bufferSize: UInt32 = 0

    var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Hello.size)
        func put(_ value: UInt32) { withUnsafeBytes(of: value.bigEndian) { out.append(contentsOf: $0) } }
        put(Hello.magic)
        out.append(Hello.version)
        out.append(purpose.rawValue)
        out.append(controlBuffers)
        out.append(0)
        put(receiveBuffers)
        put(bufferSize)
        return out
    }

    init(purpose: Purpose, receiveBuffers: UInt32 = 0, controlBuffers: UInt8 = 0, bufferSize: UInt32 = 0) {
        self.purpose = purpose
        self.receiveBuffers = receiveBuffers
        self.controlBuffers = controlBuffers
        self.bufferSize = bufferSize
    }

    /// Parses private data as rdmacm delivers it (possibly padded with zeros past our 16 bytes).
    init(data: UnsafeRawPointer?, length: Int) throws(RDMAError) {
        guard let data, length >= Hello.size else {
            throw RDMAError(.protocolViolation, "connection without a GEDS hello (\(length) bytes of private data)")
        }
        let bytes = UnsafeRawBufferPointer(start: data, count: Hello.size)
        func word(_ at: Int) -> UInt32 {
            UInt32(bytes[at]) << 24 | UInt32(bytes[at + 1]) << 16 | UInt32(bytes[at + 2]) << 8 | UInt32(bytes[at + 3])
        }
        guard word(0) == Hello.magic else { throw RDMAError(.protocolViolation, "connection from something that is not GEDS") }
        guard bytes[4] == Hello.version else {
            throw RDMAError(.protocolViolation, "GEDS RDMA version \(bytes[4]) is not supported (this is \(Hello.version))")
        }
        guard let purpose = Purpose(rawValue: bytes[5]) else {
            throw RDMAError(.protocolViolation, "unknown connection purpose \(bytes[5])")
        }
        self.purpose = purpose
        controlBuffers = bytes[6]
        receiveBuffers = word(8)
        bufferSize = word(12)
    }
}
