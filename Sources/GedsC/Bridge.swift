import GEDS
import GedsCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs an async operation for a C caller and blocks the caller's thread until it is done. The operation starts
/// on the calling thread (`Task.immediate`), so a call that never suspends costs no thread hand-off; one that
/// suspends continues on Swift's executors and the caller sleeps on a semaphore. C callers are never Swift
/// executor threads, so blocking them cannot starve the event loops the operation needs. With `executor` (a
/// node's event loop, for reads), what follows the first suspension runs there, so the reply that completes the
/// read also wakes the caller: as few thread hand-offs as a Swift caller's. Not for callers inside a Swift task or on
/// an event loop: blocking that thread could starve what the operation waits for.
func blocking<Value: Sendable>(on executor: (any TaskExecutor)? = nil,
                               _ operation: sending @escaping () async throws(GedsError) -> Value) -> Result<Value, GedsError> {
    let rendezvous = Rendezvous<Value>()
    Task.immediate(executorPreference: executor) {
        do throws(GedsError) {
            rendezvous.finish(.success(try await operation()))
        } catch {
            rendezvous.finish(.failure(error))
        }
    }
    // Only a call that suspended needs Swift's executors; one that finished on this thread costs no getpid().
    if !rendezvous.isFinished, let parent = forkedFromExecutorsOwner() {
        return .failure(forkChildCannotWait(parent: parent))
    }
    return rendezvous.wait()
}

/// The process whose suspended calls started Swift's executors (0 before the first). A child after `fork` has that
/// process's executors without their threads: a call of the child that suspends would never resume. Calls that
/// finish on the calling thread (everything an attached process does over its gedsd's socket) work there.
private let executorsOwner = Atomic<Int32>(0)

/// The owner of Swift's executors when this process is a fork child of it (its suspended calls never resume);
/// else nil, this process being recorded as the owner when it is the first to suspend.
private func forkedFromExecutorsOwner() -> Int32? {
    let pid = getpid()
    let owner = executorsOwner.compareExchange(expected: 0, desired: pid, ordering: .relaxed).original
    return owner != 0 && owner != pid ? owner : nil
}

private func forkChildCannotWait(parent: Int32) -> GedsError {
    GedsError(.invalidArgument, "libgeds was running in process \(parent) when this process was forked, and its threads do not "
              + "survive fork(): a fork child can attach to its host's gedsd and read, write, list and delete, but not run "
              + "a node of its own, subscribe or wait for an object; start workers with 'spawn' or 'forkserver', or "
              + "connect only after forking")
}

/// One result handed from a task to the thread waiting for it.
// @unchecked: `result` is written once before `sem_post` and read only after `sem_wait` returns, which orders them.
private final class Rendezvous<Value: Sendable>: @unchecked Sendable {
    private let semaphore = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
    private var result: Result<Value, GedsError>?

    init() {
        sem_init(semaphore, 0, 0)
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    func finish(_ value: Result<Value, GedsError>) {
        result = value
        sem_post(semaphore)
    }

    /// Whether the operation has finished (without waiting); a later `wait` still returns its result.
    var isFinished: Bool {
        guard retryingOnInterrupt({ sem_trywait(semaphore) }) == 0 else { return false }
        sem_post(semaphore)
        return true
    }

    func wait() -> Result<Value, GedsError> {
        _ = retryingOnInterrupt { sem_wait(semaphore) }
        return result ?? .failure(GedsError(.internal, "an operation ended without a result"))
    }
}
