#if canImport(Glibc)
import Glibc
#endif
import Dispatch

/// Runs `systemCall`, and again while it fails with EINTR (a signal arrived before it did anything): the one place
/// that retries interrupted calls. Returns the first other result; after a failure (-1) `errno` is the call's.
@inlinable
public func retryingOnInterrupt<Result: BinaryInteger>(_ systemCall: () -> Result) -> Result {
    while true {
        let result = systemCall()
        if result != -1 || errno != EINTR { return result }
    }
}

/// Waits for SIGTERM or SIGINT (which no longer end the process by themselves) and returns its number.
public func waitForTerminationSignal() async -> Int32 {
    let (signals, continuation) = AsyncStream<Int32>.makeStream()
    var sources: [any DispatchSourceSignal] = []
    for number in [SIGTERM, SIGINT] {
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler { continuation.yield(number) }
        source.resume()
        sources.append(source)
    }
    var iterator = signals.makeAsyncIterator()
    let number = await iterator.next() ?? SIGTERM
    for source in sources { source.cancel() }
    return number
}
