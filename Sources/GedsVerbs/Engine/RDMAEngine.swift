import CVerbs
import GedsCore
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
        // The loop is handed to the poll thread and used only there from now on (completion polling must not occupy
        // the cooperative pool).
        nonisolated(unsafe) let handedOver = loop
        let name = "geds-rdma-\(device.name)"
        do {
            thread = try GedsCore.startThread {
                cverbs_set_thread_name(name)
                handedOver.run()
            }
        } catch {
            throw RDMAError.system("pthread_create", errno: error.rawValue)  // the loop's release closes `wake`
        }
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

    /// Runs `work` on the poll thread: at once when called there, else queued to it (dropped once the engine
    /// stopped). What runs there must be brief: every connection of this engine waits meanwhile.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        if pthread_equal(pthread_self(), thread) != 0 {
            work()
        } else {
            submit { _ in work() }
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
