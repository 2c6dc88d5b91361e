#if canImport(Glibc)
import Glibc
#endif

/// Runs `systemCall`, and again while it fails with EINTR (a signal arrived before it did anything): the one place
/// that retries interrupted calls. Returns the first other result; after a failure (-1) `errno` is the call's.
@inlinable
public func retryingOnInterrupt<Result: BinaryInteger>(_ systemCall: () -> Result) -> Result {
    while true {
        let result = systemCall()
        if result != -1 || errno != EINTR { return result }
    }
}
