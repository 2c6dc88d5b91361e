import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Aligned buffers of one size for direct I/O (`posix_memalign`), reused. Kept as addresses so that the state
/// under the mutex is Sendable; a buffer is used by one pool thread at a time (between `take` and `give`).
final class AlignedBufferPool: Sendable {
    let size: Int
    let alignment: Int
    private let keep: Int
    private let free = Mutex<[UInt]>([])

    init(size: Int, alignment: Int, keep: Int) {
        self.size = size
        self.alignment = alignment
        self.keep = keep
    }

    func take() -> UnsafeMutableRawPointer {
        if let address = free.withLock({ $0.popLast() }), let pointer = UnsafeMutableRawPointer(bitPattern: address) {
            return pointer
        }
        var memory: UnsafeMutableRawPointer?
        let result = posix_memalign(&memory, alignment, size)
        precondition(result == 0 && memory != nil, "out of memory for a \(size)-byte tier-1 buffer")
        return memory!
    }

    func give(_ pointer: UnsafeMutableRawPointer) {
        let kept = free.withLock { list -> Bool in
            guard list.count < keep else { return false }
            list.append(UInt(bitPattern: pointer))
            return true
        }
        if !kept { Glibc.free(pointer) }
    }

    deinit {
        for address in free.withLock({ $0 }) { Glibc.free(UnsafeMutableRawPointer(bitPattern: address)) }
    }
}
