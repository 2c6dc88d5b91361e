import CVerbs
import GedsCore
#if canImport(Glibc)
import Glibc
#endif

/// What this process can see of RDMA.
public enum RDMA {
    /// One RDMA device as `ibv_get_device_list` reports it.
    public struct DeviceInfo: Sendable, Hashable {
        public var name: String
        public var guid: UInt64
    }

    /// The devices of this machine. Throws `.noDevice` ("no RDMA device: ...") when there are none, also in
    /// the forms a kernel without RDMA gives (a NULL list with errno 38, or an empty list).
    public static func devices() throws(RDMAError) -> [DeviceInfo] {
        var count: Int32 = 0
        var error: Int32 = 0
        guard let list = cverbs_get_device_list(&count, &error) else {
            throw RDMAError(.noDevice, "no RDMA device: ibv_get_device_list: \(describeErrno(error))", errno: error)
        }
        defer { ibv_free_device_list(list) }
        var result: [DeviceInfo] = []
        for index in 0..<Int(count) {
            guard let device = list[index] else { break }
            result.append(DeviceInfo(name: String(cString: ibv_get_device_name(device)),
                                     guid: UInt64(bigEndian: ibv_get_device_guid(device))))
        }
        guard !result.isEmpty else { throw RDMAError(.noDevice, "no RDMA device: ibv_get_device_list found none") }
        return result
    }

    /// Whether this process can use RDMA at all (a device, and the rdmacm connection manager). Computed once.
    public static var deviceAvailable: Bool { availability == nil }

    /// Why RDMA is unusable here ("no RDMA device: ..."), or nil when it is usable.
    public static var unavailableReason: String? { availability?.message }

    private static let availability: RDMAError? = {
        do throws(RDMAError) {
            _ = try devices()
            _ = try DeviceContext.all()
            return nil
        } catch {
            return error
        }
    }()
}

/// An open RDMA device (`ibv_context`) with its limits.
///
/// Contexts come from librdmacm (`rdma_get_devices`), so they are the very contexts rdmacm identifiers
/// report (`cm_id->verbs`): protection domains, queues and registrations made here fit its connections.
/// librdmacm keeps a device open while it is referenced; this module references every device once for the
/// life of the process, so a context never closes under it.
// @unchecked: the context pointer and the limits are immutable after init, and libibverbs calls on a
// context (query, alloc_pd, create_cq) are thread-safe.
public final class DeviceContext: @unchecked Sendable, CustomStringConvertible {
    public let name: String
    let context: UnsafeMutablePointer<ibv_context>
    /// `ibv_query_device`: the queue, scatter/gather and READ limits.
    public let limits: Limits
    /// `ibv_query_port` of port 1 (state, MTU, largest message).
    public let port: PortInfo

    public struct Limits: Sendable {
        public var maxQueuePairWorkRequests: Int
        public var maxScatterGather: Int
        public var maxCompletionQueueEntries: Int
        /// READs this device answers at once per QP (responder resources).
        public var maxReadsAnswered: Int
        /// READs this device keeps in flight at once per QP (initiator depth).
        public var maxReadsInitiated: Int
        public var maxRegionSize: UInt64
    }

    public struct PortInfo: Sendable {
        public var active: Bool
        public var activeMTU: Int
        public var maxMessageSize: UInt32
    }

    public var description: String { name }

    private init(context: UnsafeMutablePointer<ibv_context>) throws(RDMAError) {
        self.context = context
        name = String(cString: ibv_get_device_name(context.pointee.device))
        var attributes = ibv_device_attr()
        let status = ibv_query_device(context, &attributes)
        guard status == 0 else { throw RDMAError.system("ibv_query_device(\(name))", errno: status) }
        limits = Limits(maxQueuePairWorkRequests: Int(attributes.max_qp_wr),
                        maxScatterGather: Int(attributes.max_sge),
                        maxCompletionQueueEntries: Int(attributes.max_cqe),
                        maxReadsAnswered: Int(attributes.max_qp_rd_atom),
                        maxReadsInitiated: Int(attributes.max_qp_init_rd_atom),
                        maxRegionSize: attributes.max_mr_size)
        var portAttributes = ibv_port_attr()
        let portStatus = cverbs_query_port(context, 1, &portAttributes)
        guard portStatus == 0 else { throw RDMAError.system("ibv_query_port(\(name), 1)", errno: portStatus) }
        port = PortInfo(active: portAttributes.state == IBV_PORT_ACTIVE,
                        activeMTU: 128 << Int(portAttributes.active_mtu.rawValue),
                        maxMessageSize: portAttributes.max_msg_sz)
    }

    private static let opened: Result<[DeviceContext], RDMAError> = {
        var count: Int32 = 0
        guard let list = rdma_get_devices(&count) else {
            let code = cverbs_errno()
            return .failure(RDMAError(.noDevice, "no RDMA device: rdma_get_devices: \(describeErrno(code))",
                                      errno: code))
        }
        // Deliberately never rdma_free_devices(list): the reference keeps every device open for the process.
        var contexts: [DeviceContext] = []
        for index in 0..<Int(count) {
            guard let context = list[index] else { break }
            do throws(RDMAError) {
                contexts.append(try DeviceContext(context: context))
            } catch {
                return .failure(error)
            }
        }
        guard !contexts.isEmpty else { return .failure(RDMAError(.noDevice, "no RDMA device: rdma_get_devices found none")) }
        return .success(contexts)
    }()

    /// Every device, opened through librdmacm.
    public static func all() throws(RDMAError) -> [DeviceContext] { try opened.get() }

    /// The device called `name` (e.g. "rxe0").
    public static func named(_ name: String) throws(RDMAError) -> DeviceContext {
        guard let context = try all().first(where: { $0.name == name }) else {
            throw RDMAError(.invalidArgument, "no RDMA device named \(name) (have: \(try all().map(\.name).joined(separator: ", ")))")
        }
        return context
    }

    /// The device that owns the IP address `host` (as rdmacm binds to it).
    public static func owning(address host: String) throws(RDMAError) -> DeviceContext {
        let contexts = try all()
        var address = try SocketAddress.resolve(host: host, port: 0)
        var id: UnsafeMutablePointer<rdma_cm_id>?
        guard rdma_create_id(nil, &id, nil, RDMA_PS_TCP) == 0, let id else {
            throw RDMAError.system("rdma_create_id", errno: cverbs_errno())
        }
        defer { rdma_destroy_id(id) }
        let bound = address.withSockaddr { rdma_bind_addr(id, $0) }
        guard bound == 0 else {
            throw RDMAError(.invalidArgument,
                            "\(host) is not an address of an RDMA device here: rdma_bind_addr: \(describeErrno(cverbs_errno()))",
                            errno: cverbs_errno())
        }
        guard let verbs = id.pointee.verbs, let match = contexts.first(where: { $0.context == verbs }) else {
            throw RDMAError(.invalidArgument, "\(host) is not an address of an RDMA device here")
        }
        return match
    }
}
