#if canImport(Glibc)
import Glibc
#endif

/// Writes all of `bytes` to a file descriptor, retrying short writes.
public func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer) throws(GedsError) {
    var done = 0
    while done < bytes.count {
        let written = write(descriptor, bytes.baseAddress! + done, bytes.count - done)
        if written < 0 {
            if errno == EINTR { continue }
            throw GedsError.io("write failed", errno: errno)
        }
        done += written
    }
}

/// One line to standard error, unbuffered: how every tool reports a failure.
public func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { try? writeAll(2, UnsafeRawBufferPointer($0)) }
}

/// One line to standard output, unbuffered, so that scripts waiting for it see it at once.
public func printLine(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { try? writeAll(1, UnsafeRawBufferPointer($0)) }
}
