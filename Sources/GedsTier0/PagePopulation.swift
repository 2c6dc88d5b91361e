import GedsCore
import Glibc
import Synchronization

/// Faults in the pages of a read's destination ahead of the read, on another thread.
///
/// A destination that was just allocated (a new `bytes` in Python, a `malloc` in C, a new array) has no pages yet:
/// the kernel supplies and zeroes each 4 KiB page at its first touch, inside the copy that lands the bytes, which
/// took a 256 MiB remote read from 0.61× to about 0.85× of the same read into a reused buffer. A helper thread that
/// makes them present first (`MADV_POPULATE_WRITE`, Linux 5.14+, without a page-fault trap per page) overlaps that
/// cost with the transfer. Destinations whose pages are mostly present already are left alone: populating present
/// pages still walks them (18 ms per 256 MiB here).
public final class PagePopulation: Sendable {
    /// Smaller destinations are read as they are: the thread hand-off would cost more than it hides.
    public static let threshold = 8 << 20
    private static let chunk = 16 << 20
    private static let samples = 8

    private let start: UInt
    private let end: UInt
    private let stopRequested = Atomic<Bool>(false)
    /// The populating thread until `finish` joined it (0 after).
    private let thread = Mutex<pthread_t>(0)

    /// Starts populating `destination` when it is large and (unless `onlyWhenPagesAreAbsent` is false) its pages
    /// are mostly absent; nil otherwise. A new mapping of a file must say false: `mincore` reports a file's pages in
    /// memory, not whether this mapping maps them yet.
    public static func start(_ destination: UnsafeMutableRawBufferPointer,
                             onlyWhenPagesAreAbsent: Bool = true) -> PagePopulation? {
        guard destination.count >= threshold, let base = destination.baseAddress else { return nil }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (UInt(bitPattern: base) + UInt(page) - 1) & ~UInt(page - 1)
        let end = (UInt(bitPattern: base) + UInt(destination.count)) & ~UInt(page - 1)
        guard end > start, !onlyWhenPagesAreAbsent || mostlyAbsent(from: start, to: end, page: page) else { return nil }
        let population = PagePopulation(start: start, end: end)
        // A thread of its own, not a dispatch queue: a population holds its thread for tens of milliseconds, and a
        // process forked from one that used libdispatch (a Python worker) cannot use dispatch's threads.
        // No thread: the read faults the pages in itself, as without this.
        guard let thread = try? startThread({ population.populate() }) else { return nil }
        population.thread.withLock { $0 = thread }
        return population
    }

    private func populate() {
        var at = start
        while at < end, !stopRequested.load(ordering: .relaxed) {
            let length = min(UInt(PagePopulation.chunk), end - at)
            // Refused (an older kernel): the read faults the pages in itself, as without this.
            if madvise(UnsafeMutableRawPointer(bitPattern: at), Int(length), MADV_POPULATE_WRITE) != 0 { break }
            at += length
        }
    }

    /// Stops after the chunk in progress and waits for it, so that nothing touches the destination afterwards.
    /// Calling it again returns at once.
    public func finish() {
        stopRequested.store(true, ordering: .relaxed)
        let running = thread.withLock { thread in
            defer { thread = 0 }
            return thread
        }
        if running != 0 { pthread_join(running, nil) }
    }

    /// Whether most of a few pages spread over the range are not in memory (`mincore`): a new allocation.
    private static func mostlyAbsent(from start: UInt, to end: UInt, page: Int) -> Bool {
        let pages = Int((end - start) / UInt(page))
        var absent = 0
        for sample in 0..<samples {
            let address = start + UInt(pages * sample / samples) * UInt(page)
            var resident: UInt8 = 0
            guard mincore(UnsafeMutableRawPointer(bitPattern: address), page, &resident) == 0 else { return false }
            if resident & 1 == 0 { absent += 1 }
        }
        return absent * 2 > samples
    }

    private init(start: UInt, end: UInt) {
        self.start = start
        self.end = end
    }
}
