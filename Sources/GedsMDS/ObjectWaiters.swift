import GedsCore
import GedsWire
import NIOCore
import Synchronization

/// The `waitForObject` calls the MDS holds until their key exists sealed or their time runs out. A waiter is
/// registered in the critical section whose lookup missed the key, and answered from the one that commits the change
/// creating it (with that section's record of it), so no seal falls between the two; the answer goes out after the
/// critical section, from the committing thread.
final class ObjectWaiters: Sendable {
    /// Waiters held at once, at most (a bound on what clients that never come back can leave behind).
    static let limit = 100_000
    /// The longest a single call is held; a client waiting longer calls again.
    static let longestWait: UInt32 = 600_000

    private struct State {
        var waiting: [ObjectName: [ObjectIdentifier: PendingAnswer]] = [:]
        var count = 0
    }

    private let state = Mutex(State())
    /// Whether anyone waits: read on every commit, so a commit without waiters takes no lock of this.
    private let anyone = Atomic<Bool>(false)
    private let timers: any EventLoop

    init(timers: any EventLoop) {
        self.timers = timers
    }

    /// Holds a call for `name` (call in the critical section whose lookup missed it): its answer, once attached,
    /// comes at the name's creation, or as `timedOut` once `expire` says.
    func hold(_ name: ObjectName) throws(GedsError) -> PendingAnswer {
        let pending = PendingAnswer(name: name)
        try state.withLock { (state) throws(GedsError) in
            guard state.count < ObjectWaiters.limit else {
                throw GedsError(.outOfSpace, "the MDS holds \(ObjectWaiters.limit) waits already; try again later")
            }
            state.waiting[name, default: [:]][ObjectIdentifier(pending)] = pending
            state.count += 1
            anyone.store(true, ordering: .releasing)
        }
        return pending
    }

    /// Answers a held call `timedOut` after `milliseconds` unless its name appears first. Called after the critical
    /// section that held it: scheduling the timer enqueues on another thread's loop, which every request's lock need
    /// not wait for.
    func expire(_ pending: PendingAnswer, after milliseconds: UInt32) {
        let duration = TimeAmount.milliseconds(Int64(min(milliseconds, ObjectWaiters.longestWait)))
        pending.arm(timers.scheduleTask(in: duration) { [weak self] in
            guard let self, self.remove(pending) else { return }
            pending.resolve(.failure(GedsError(.timedOut, "\(pending.name) did not appear within \(milliseconds) ms")))
        })
    }

    /// The waiters of the names `events` create (call in the committing critical section), each with the reply it
    /// gets: the object's record, looked up by `lookup` in that section.
    func release(createdBy events: [NamespaceEvent], lookup: (ObjectName) -> Reply) -> [(PendingAnswer, Reply)] {
        guard anyone.load(ordering: .acquiring) else { return [] }
        return state.withLock { state in
            var released: [(PendingAnswer, Reply)] = []
            for event in events where [.created, .renamed, .copied].contains(event.kind) {
                guard let waiters = state.waiting.removeValue(forKey: event.name) else { continue }
                state.count -= waiters.count
                let reply = lookup(event.name)
                for waiter in waiters.values { released.append((waiter, reply)) }
            }
            if state.count == 0 { anyone.store(false, ordering: .releasing) }
            return released
        }
    }

    /// Removes one waiter; false when it was answered already.
    private func remove(_ pending: PendingAnswer) -> Bool {
        state.withLock { state in
            guard state.waiting[pending.name]?.removeValue(forKey: ObjectIdentifier(pending)) != nil else { return false }
            if state.waiting[pending.name]?.isEmpty == true { state.waiting[pending.name] = nil }
            state.count -= 1
            if state.count == 0 { anyone.store(false, ordering: .releasing) }
            return true
        }
    }

    var count: Int { state.withLock { $0.count } }
}

/// One held call: its reply may be decided before the carrier attaches the callback that sends it, or after; its
/// timer may be armed after it was answered (it is then cancelled at once).
final class PendingAnswer: Sendable {
    private enum Stage {
        case waiting
        case decided(Reply)
        case attached(@Sendable (Reply) -> Void)
        case answered
    }

    private struct State {
        var stage = Stage.waiting
        /// The timeout's task, cancelled once the call is answered otherwise.
        var expiry: Scheduled<Void>?
    }

    let name: ObjectName
    private let state = Mutex(State())

    init(name: ObjectName) {
        self.name = name
    }

    /// Keeps the timeout's task to cancel it at the answer, or cancels it now when the reply is decided already.
    func arm(_ expiry: Scheduled<Void>) {
        let pointless = state.withLock { state -> Bool in
            switch state.stage {
            case .waiting, .attached:
                state.expiry = expiry
                return false
            case .decided, .answered:
                return true
            }
        }
        if pointless { expiry.cancel() }
    }

    /// Sends `reply` now when the carrier's callback is attached, else once it is.
    func resolve(_ reply: Reply) {
        let (answer, expiry) = state.withLock { state -> ((@Sendable (Reply) -> Void)?, Scheduled<Void>?) in
            defer { state.expiry = nil }
            switch state.stage {
            case .waiting:
                state.stage = .decided(reply)
                return (nil, state.expiry)
            case .attached(let answer):
                state.stage = .answered
                return (answer, state.expiry)
            case .decided, .answered:
                return (nil, nil)
            }
        }
        expiry?.cancel()
        answer?(reply)
    }

    /// The carrier's callback (`Response.promised`).
    func attach(_ answer: @escaping @Sendable (Reply) -> Void) {
        let decided = state.withLock { state -> Reply? in
            guard case .decided(let reply) = state.stage else {
                state.stage = .attached(answer)
                return nil
            }
            state.stage = .answered
            return reply
        }
        if let decided { answer(decided) }
    }
}
