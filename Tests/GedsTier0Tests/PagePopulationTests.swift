import GedsTier0
import Glibc
import Testing

@Suite struct PagePopulationTests {
    /// A private anonymous mapping, as a large malloc is: no page is in memory until touched.
    private func withNewMemory(_ size: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        let address = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        #expect(address != MAP_FAILED)
        defer { munmap(address, size) }
        try body(UnsafeMutableRawBufferPointer(start: address, count: size))
    }

    private func residentPages(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var map = [UInt8](repeating: 0, count: buffer.count / page)
        #expect(mincore(buffer.baseAddress, buffer.count, &map) == 0)
        return map.filter { $0 & 1 == 1 }.count
    }

    @Test func newMemoryIsMadePresentAndKeepsWhatTheReadWrote() {
        let size = 40 << 20
        withNewMemory(size) { buffer in
            #expect(residentPages(buffer) == 0)
            let population = PagePopulation.start(buffer)
            #expect(population != nil)
            // A read landing meanwhile, at both ends: its bytes stay (populating never writes contents).
            buffer.storeBytes(of: 0xA5, toByteOffset: 0, as: UInt8.self)
            buffer.storeBytes(of: 0x5A, toByteOffset: size - 1, as: UInt8.self)
            // As long as the read lasts, the thread goes on to the end of the destination.
            let all = size / Int(sysconf(Int32(_SC_PAGESIZE)))
            for _ in 0..<500 where residentPages(buffer) < all { usleep(10_000) }
            population?.finish()
            #expect(residentPages(buffer) == all)
            #expect(buffer[0] == 0xA5 && buffer[size - 1] == 0x5A && buffer[size / 2] == 0)
        }
    }

    @Test func finishStopsAfterTheChunkInProgress() {
        withNewMemory(64 << 20) { buffer in
            let population = PagePopulation.start(buffer)
            population?.finish()
            let settled = residentPages(buffer)
            usleep(50_000)
            #expect(residentPages(buffer) == settled, "nothing touches the destination after finish()")
        }
    }

    @Test func presentOrSmallMemoryIsLeftAlone() {
        withNewMemory(16 << 20) { buffer in
            buffer.initializeMemory(as: UInt8.self, repeating: 7)
            #expect(PagePopulation.start(buffer) == nil)
            #expect(PagePopulation.start(UnsafeMutableRawBufferPointer(rebasing: buffer[..<(1 << 20)])) == nil)
        }
    }
}
