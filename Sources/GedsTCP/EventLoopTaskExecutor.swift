import NIOCore

/// Runs tasks on one event loop. Code that awaits connections bound to that loop, run with this executor
/// preferred, sends from the loop and resumes on it: a round trip then wakes no other thread on our side.
public final class EventLoopTaskExecutor: TaskExecutor {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        eventLoop.execute { job.runSynchronously(on: executor) }
    }
}
