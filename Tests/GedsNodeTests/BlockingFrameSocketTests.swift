import GedsTestSupport
import GedsCore
import GedsNode
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A silent peer on a local socket: one that runs is waited for (up to the limit, when there is one), so a busy
/// gedsd is not given up on; the stopped and gone cases are covered by the attach process tests.
@Suite struct BlockingFrameSocketTests {
    /// Both ends of a Unix stream socket pair; this process is the peer of each.
    private func socketPair() throws -> (BlockingFrameSocket, BlockingFrameSocket) {
        var ends: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0)
        return (BlockingFrameSocket(descriptor: ends[0]), BlockingFrameSocket(descriptor: ends[1]))
    }

    @Test func aRunningPeerIsWaitedForPastTheSilencePeriod() throws {
        let (pairedReceiver, sender) = try socketPair()
        var receiver = pairedReceiver
        defer { receiver.close(); sender.close() }
        receiver.waitWhileThePeerRuns("the test peer", checkingEvery: 50)
        Task.detached {
            try? await Task.sleep(for: .milliseconds(300))
            try? sender.send([1, 2, 3, 4])
        }
        var bytes = [UInt8](repeating: 0, count: 4)
        var descriptor: Int32 = -1
        #expect(try receiver.receive(into: &bytes, descriptor: &descriptor))
        #expect(bytes == [1, 2, 3, 4])
        #expect(descriptor == -1)
    }

    @Test func aRunningPeerSilentPastTheLimitTimesOut() throws {
        let (pairedReceiver, sender) = try socketPair()
        var receiver = pairedReceiver
        defer { receiver.close(); sender.close() }
        let started = ContinuousClock.now
        receiver.waitWhileThePeerRuns("the test peer", checkingEvery: 50, limitMilliseconds: 250)
        var bytes = [UInt8](repeating: 0, count: 4)
        var descriptor: Int32 = -1
        let error = gedsError { _ = try receiver.receive(into: &bytes, descriptor: &descriptor) }
        #expect(error?.code == .timedOut)
        #expect(error?.message.contains("runs but has not answered for 250 ms") == true)
        #expect(ContinuousClock.now - started >= .milliseconds(250))
    }
}
