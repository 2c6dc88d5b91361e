import CLinux
import GedsCarrier
import GedsCore
import GedsMetadataRDMA
import GedsTCP
import GedsVerbs
import GedsWire
import NIOCore
import NIOPosix
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A subscription to the MDS's events: an `AsyncSequence` of the namespace changes in its scope, in revision order,
/// each once. It survives a lost connection to the MDS (and an MDS that ended it as too slow): it subscribes again
/// after the last revision it received, so nothing is lost or repeated. It ends with an error when the MDS no
/// longer has the history to resume from (`compacted`), and returns nil once cancelled.
public final class EventSubscription: AsyncSequence, Sendable {
    public typealias Element = NamespaceEvent

    public let scope: EventScope
    private let transport: SubscriptionTransport
    private let state = Mutex<State>(State())

    /// Events received and not taken by the application yet, at most this many; beyond, the subscription fails
    /// (`subscriberTooSlow`), as the MDS would.
    public static let bufferLimit = 1_000_000

    private struct State {
        var buffer = CircularBuffer<NamespaceEvent>()
        /// The revision everything in scope up to which has been received (events, progress); the revision asked
        /// to resume after, or (from now) the one the MDS confirmed.
        var seen: UInt64 = 0
        var subscribed = false
        var failure: GedsError?
        var cancelled = false
        var connection: (any SubscriptionStream)?
        var ready: CheckedContinuation<Void, any Error>?
        var waiter: (id: UInt64, continuation: CheckedContinuation<NamespaceEvent?, any Error>)?
        var nextWaiter: UInt64 = 0
        /// The last `next` whose timeout or cancellation came before it began to wait (a zero timeout, say): it
        /// returns at once instead of waiting for ever.
        var endedBeforeWaiting: UInt64 = 0
        /// The MDS ended the subscription as too slow: subscribe again at once.
        var resumeNow = false
        /// An eventfd made readable whenever an event arrives or the subscription ends (see `readinessDescriptor`).
        var readiness: Int32?
    }

    init(scope: EventScope, transport: SubscriptionTransport) {
        self.scope = scope
        self.transport = transport
    }

    /// Subscribes, after `after` (replayed from the MDS's history) or from now; returns once the MDS confirmed.
    static func open(_ scope: EventScope, after: UInt64?, transport: SubscriptionTransport) async throws(GedsError) -> EventSubscription {
        let subscription = EventSubscription(scope: scope, transport: transport)
        if let after {
            subscription.state.withLock { state in
                state.seen = after
                state.subscribed = true
            }
        }
        do {
            try await withCheckedThrowingContinuation { (ready: CheckedContinuation<Void, any Error>) in
                subscription.state.withLock { $0.ready = ready }
                Task { await subscription.connect(after: after) }
            }
        } catch {
            subscription.cancel()
            throw GedsError.wrapping(error)
        }
        return subscription
    }

    /// The revision up to which every event in scope has been handed to the application: resume from it.
    public var revision: UInt64 {
        state.withLock { state in state.buffer.first.map { $0.revision - 1 } ?? state.seen }
    }

    deinit {
        if let readiness = state.withLock({ $0.readiness }) { close(readiness) }
    }

    /// A descriptor (an eventfd, owned by the subscription) that becomes readable whenever an event arrives or the
    /// subscription ends, for a caller that cannot await (a C program's `poll`/`epoll` loop); `nextBlocking` reads it.
    public func readinessDescriptor() throws(GedsError) -> Int32 {
        try state.withLock { (state) throws(GedsError) -> Int32 in
            if let readiness = state.readiness { return readiness }
            let made = clinux_eventfd()
            guard made >= 0 else { throw GedsError.io("eventfd for a subscription", errno: errno) }
            state.readiness = made
            // Events that came before it was made are waiting already.
            if !state.buffer.isEmpty || state.failure != nil || state.cancelled { EventSubscription.signal(made) }
            return made
        }
    }

    /// `next` for a thread that waits anyway (C, Python): it sleeps in `poll` on `readinessDescriptor` and is woken
    /// by the thread that received the event, with no task in between. Never call it from async code.
    public func nextBlocking(timeout: Duration?) throws(GedsError) -> NamespaceEvent? {
        let readiness = try readinessDescriptor()
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            // Emptied before looking, so a notification after the look wakes the poll below.
            var count: UInt64 = 0
            _ = read(readiness, &count, 8)
            if let taken = takeNow() { return try taken.get() }
            var milliseconds: Int32 = -1
            if let deadline {
                let remaining = deadline - ContinuousClock.now
                guard remaining > .zero else { return nil }
                milliseconds = Int32(Swift.min((remaining / .milliseconds(1)).rounded(.up), Double(Int32.max)))
            }
            var descriptor = pollfd(fd: readiness, events: Int16(POLLIN), revents: 0)
            _ = poll(&descriptor, 1, milliseconds)
        }
    }

    /// What `next` returns without waiting: an event, nil once cancelled, or the failure; nil when it must wait.
    private func takeNow() -> Result<NamespaceEvent?, GedsError>? {
        state.withLock { state in
            if let event = state.buffer.popFirst() { return .success(event) }
            if let failure = state.failure { return .failure(failure) }
            if state.cancelled { return .success(nil) }
            return state.waiter == nil ? nil : .failure(GedsError(.invalidArgument, "a subscription has one reader at a time"))
        }
    }

    private static func signal(_ readiness: Int32) {
        var one: UInt64 = 1
        _ = write(readiness, &one, 8)
    }

    /// The next event; nil when `timeout` passes first or the subscription was cancelled. Throws when the
    /// subscription failed (`compacted`, or an error the MDS gave). One caller at a time.
    public func next(timeout: Duration? = nil) async throws(GedsError) -> NamespaceEvent? {
        if let taken = takeNow() { return try taken.get() }
        let id = state.withLock { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        let timer = timeout.map { timeout in
            Task { [weak self] in
                try await Task.sleep(for: timeout)
                self?.resumeWaiter(id, with: .success(nil))
            }
        }
        defer { timer?.cancel() }
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<NamespaceEvent?, any Error>) in
                    let immediate: Result<NamespaceEvent?, GedsError>? = state.withLock { state in
                        if let event = state.buffer.popFirst() { return .success(event) }
                        if let failure = state.failure { return .failure(failure) }
                        if state.cancelled || state.endedBeforeWaiting == id { return .success(nil) }
                        state.waiter = (id, continuation)
                        return nil
                    }
                    if let immediate { continuation.resume(with: immediate) }
                }
            } onCancel: {
                resumeWaiter(id, with: .success(nil))
            }
        } catch {
            throw GedsError.wrapping(error)
        }
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let subscription: EventSubscription
        public mutating func next() async throws -> NamespaceEvent? { try await subscription.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(subscription: self) }

    /// Ends the subscription: its connection closes and `next` returns nil.
    public func cancel() {
        let (connection, readiness) = state.withLock { state -> ((any SubscriptionStream)?, Int32?) in
            state.cancelled = true
            defer { state.connection = nil }
            return (state.connection, state.readiness)
        }
        connection?.close()
        resumeWaiter(nil, with: .success(nil))
        if let readiness { EventSubscription.signal(readiness) }
    }

    // MARK: The connection to the MDS

    private func connect(after: UInt64?) async {
        var delay = Duration.milliseconds(50)
        while !state.withLock({ $0.cancelled }) {
            do {
                let connection = try await transport.open(
                    .subscribe(scope: scope, after: after),
                    onReply: { [weak self] reply in self?.received(reply) },
                    onClose: { [weak self] error in self?.closed(error) })
                let cancelled = state.withLock { state in
                    if !state.cancelled { state.connection = connection }
                    return state.cancelled
                }
                if cancelled { connection.close() }
                return
            } catch {
                // The first subscription reports the failure; a resumed one keeps trying while the MDS is away.
                let ready = state.withLock { state in
                    defer { state.ready = nil }
                    return state.ready
                }
                if let ready {
                    ready.resume(throwing: error)
                    return
                }
                try? await Task.sleep(for: delay)
                delay = Swift.min(delay * 2, .seconds(1))
            }
        }
    }

    private func received(_ reply: Reply) {
        var ready: CheckedContinuation<Void, any Error>?
        var failure: GedsError?
        switch reply {
        case .subscribed(let revision):
            ready = state.withLock { state in
                // Live from now: the MDS says where now is. A resume keeps its own revision (its replay follows).
                if !state.subscribed { state.seen = revision }
                state.subscribed = true
                defer { state.ready = nil }
                return state.ready
            }
        case .events(let events):
            let overflow = state.withLock { state -> Bool in
                guard state.buffer.count + events.count <= EventSubscription.bufferLimit else { return true }
                // A resumed stream starts after `seen`; anything at or before it was delivered already.
                for event in events where event.revision > state.seen { state.buffer.append(event) }
                if let last = events.last { state.seen = Swift.max(state.seen, last.revision) }
                return false
            }
            if overflow {
                failure = GedsError(.subscriberTooSlow, "subscriber too slow: \(EventSubscription.bufferLimit) events were not taken; "
                                    + "resume from \(revision)")
            } else {
                resumeWaiterWithNext()
            }
        case .progress(let revision):
            state.withLock { $0.seen = Swift.max($0.seen, revision) }
        case .subscriptionEnded(.tooSlow):
            state.withLock { $0.resumeNow = true }
        case .subscriptionEnded(let end):
            failure = end.error
        case .failure(let error):
            failure = error
        default:
            failure = GedsError(.protocolViolation, "unexpected reply on a subscription: \(reply)")
        }
        ready?.resume()
        if let failure { fail(failure) }
    }

    private func fail(_ error: GedsError) {
        let (ready, connection) = state.withLock { state in
            if state.failure == nil { state.failure = error }
            defer {
                state.ready = nil
                state.connection = nil
            }
            return (state.ready, state.connection)
        }
        ready?.resume(throwing: error)
        connection?.close()
        resumeWaiter(nil, with: .failure(error))
    }

    private func closed(_ error: GedsError) {
        let (ended, ready, now, seen) = state.withLock { state in
            state.connection = nil
            defer {
                state.ready = nil
                state.resumeNow = false
            }
            return (state.cancelled || state.failure != nil, state.ready, state.resumeNow, state.seen)
        }
        if ended { return }
        if let ready {
            ready.resume(throwing: error)
            return
        }
        Task {
            if !now { try? await Task.sleep(for: .milliseconds(50)) }
            await connect(after: seen)
        }
    }

    private func resumeWaiterWithNext() {
        let (continuation, event, readiness) = state.withLock { state in
            guard let waiter = state.waiter, let event = state.buffer.popFirst() else {
                return (nil as CheckedContinuation<NamespaceEvent?, any Error>?, nil as NamespaceEvent?, state.readiness)
            }
            state.waiter = nil
            return (waiter.continuation, event, state.readiness)
        }
        continuation?.resume(returning: event)
        if let readiness { EventSubscription.signal(readiness) }
    }

    /// Resumes the waiting `next` (the one with `id`, or any when nil).
    private func resumeWaiter(_ id: UInt64?, with result: Result<NamespaceEvent?, GedsError>) {
        let (continuation, readiness) = state.withLock { state in
            guard let waiter = state.waiter, id == nil || waiter.id == id else {
                if let id { state.endedBeforeWaiting = id }
                return (nil as CheckedContinuation<NamespaceEvent?, any Error>?, state.readiness)
            }
            state.waiter = nil
            return (waiter.continuation, state.readiness)
        }
        continuation?.resume(with: result.mapError { $0 as any Error })
        if case .failure = result, let readiness { EventSubscription.signal(readiness) }
    }
}

extension Node {
    /// Subscribes to the MDS's events in `scope`: those after `after` (from its history), or from now on.
    public func subscribe(_ scope: EventScope, after: UInt64? = nil) async throws(GedsError) -> EventSubscription {
        var overRDMA: SubscriptionTransport.OverRDMA?
        if let engine = rdma?.engine, let endpoint = configuration.mdsRDMA, let carrier = mds.rdma {
            overRDMA = .init(endpoint: endpoint, engine: engine, carrier: carrier)
        }
        let transport = SubscriptionTransport(mds: configuration.mds, group: group, token: configuration.token,
                                              tls: configuration.tls, rdma: overRDMA,
                                              timeout: .milliseconds(configuration.timeoutMilliseconds))
        return try await EventSubscription.open(scope, after: after, transport: transport)
    }
}

extension EventSubscription {
    /// For a process without a node of its own (attached to a gedsd): subscribes straight at the MDS, on NIO's
    /// shared event loops.
    public static func open(_ scope: EventScope, after: UInt64?, mds: Endpoint,
                            token: DeploymentToken? = nil, tls: TransportSecurity? = nil) async throws(GedsError) -> EventSubscription {
        try await open(scope, after: after, transport: SubscriptionTransport(mds: mds, group: MultiThreadedEventLoopGroup.singleton,
                                                                             token: token, tls: tls))
    }
}

/// The connection a subscription's events come on.
protocol SubscriptionStream: Sendable {
    func close()
}

extension PushConnection: SubscriptionStream {}
extension RDMAPushConnection: SubscriptionStream {}

/// How a subscription reaches the MDS: over RDMA send/receive while its node's MDS calls go that way, else TCP.
struct SubscriptionTransport: Sendable {
    struct OverRDMA: Sendable {
        let endpoint: Endpoint
        let engine: RDMAEngine
        /// Whether the node's MDS calls still go over RDMA (they fall back to TCP for good when it fails).
        let carrier: RDMAMetadataCarrier
    }

    let mds: Endpoint
    let group: any EventLoopGroup
    let token: DeploymentToken?
    /// TLS on the TCP connection (RDMA send/receive is not TLS).
    var tls: TransportSecurity?
    var rdma: OverRDMA?
    var timeout: Duration = .seconds(5)

    /// Sends `request` on a connection of its own, whose replies then go to `onReply` in order.
    func open(_ request: Request, onReply: @escaping @Sendable (Reply) -> Void,
              onClose: @escaping @Sendable (GedsError) -> Void) async throws(GedsError) -> any SubscriptionStream {
        if let rdma, rdma.carrier.active {
            return try await RDMAPushConnection.open(to: rdma.endpoint, engine: rdma.engine, request: request, timeout: timeout,
                                                     token: token, onReply: onReply, onClose: onClose)
        }
        return try await PushConnection.open(to: mds, peerName: "MDS", request: request, group: group,
                                             token: token, tls: tls, onReply: onReply, onClose: onClose)
    }
}
