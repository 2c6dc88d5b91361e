import Synchronization
#if canImport(Glibc)
import Glibc
#endif

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
