import GedsCore
import GedsNode
import Testing

@Suite struct SpillPolicyTests {
    let MiB: UInt64 = 1 << 20

    /// Ten 10 MiB blobs (ids 1…10) in a 100 MiB tier 0, used in id order.
    func full() -> (SpillPolicy, [BlobID: UInt64]) {
        var policy = SpillPolicy(capacity: 100 * MiB)
        var inventory: [BlobID: UInt64] = [:]
        for blob in (UInt64(1)...10).map({ BlobID($0) }) {
            inventory[blob] = 10 * MiB
            policy.touch(blob)
        }
        return (policy, inventory)
    }

    @Test func marksAreFractionsOfTheCapacity() {
        let policy = SpillPolicy(capacity: 1000, highWater: 0.9, lowWater: 0.75)
        #expect(policy.highWater == 900 && policy.lowWater == 750)
        // A low mark above the high one is clamped to it.
        #expect(SpillPolicy(capacity: 1000, highWater: 0.5, lowWater: 0.8).lowWater == 500)
    }

    @Test func nothingToSpillAtOrUnderTheHighWaterMark() {
        var (policy, inventory) = full()
        #expect(policy.victims(in: inventory, used: 90 * MiB).isEmpty)
        inventory[BlobID(1)] = nil
        #expect(policy.victims(in: inventory, used: 50 * MiB).isEmpty)
    }

    @Test func spillsLeastRecentlyUsedFirstDownToTheLowWaterMark() {
        var (policy, inventory) = full()
        // 100 MiB used, low mark 75 MiB: three blobs of 10 MiB, the three oldest.
        #expect(policy.victims(in: inventory, used: 100 * MiB).map(\.blob) == [1, 2, 3])
        // Using blob 1 and 2 again moves them to the back.
        policy.touch(1)
        policy.touch(2)
        #expect(policy.victims(in: inventory, used: 100 * MiB).map(\.blob) == [3, 4, 5])
        // Room for an incoming 20 MiB copy: 120 MiB down to 75 MiB takes five.
        #expect(policy.victims(in: inventory, used: 100 * MiB, incoming: 20 * MiB).map(\.blob) == [3, 4, 5, 6, 7])
        inventory[BlobID(11)] = 1
        // A blob never touched counts as the oldest.
        #expect(policy.victims(in: inventory, used: 100 * MiB).first?.blob == 11)
    }

    @Test func pinnedBlobsAreNeverChosen() {
        var (policy, inventory) = full()
        policy.pin(1)
        policy.pin(2)
        policy.pin(2)
        #expect(policy.victims(in: inventory, used: 100 * MiB).map(\.blob) == [3, 4, 5])
        policy.unpin(2)
        #expect(policy.isPinned(2))
        policy.unpin(2)
        policy.unpin(1)
        #expect(!policy.isPinned(1) && !policy.isPinned(2))
        #expect(policy.victims(in: inventory, used: 100 * MiB).map(\.blob) == [1, 2, 3])
        // All pinned: nothing, even when over the mark.
        for blob in (UInt64(1)...10).map({ BlobID($0) }) { policy.pin(blob) }
        #expect(policy.victims(in: inventory, used: 100 * MiB).isEmpty)
        inventory = [:]
    }

    @Test func everythingUnpinnedWhenNotEnough() {
        var (policy, inventory) = full()
        // An incoming 90 MiB copy beside 100 MiB: even all ten do not reach the low mark; all are offered.
        #expect(policy.victims(in: inventory, used: 100 * MiB, incoming: 90 * MiB).count == 10)
        inventory = [:]
    }

    @Test func fitsChecksTheCapacityWithoutOverflow() {
        let policy = SpillPolicy(capacity: 100)
        #expect(policy.fits(40, used: 60))
        #expect(!policy.fits(41, used: 60))
        #expect(!policy.fits(.max, used: 1))
        #expect(!policy.fits(1, used: 101))
    }

    @Test func forgottenBlobsLeaveTheOrder() {
        var (policy, inventory) = full()
        policy.forget(1)
        inventory[BlobID(1)] = nil
        #expect(policy.victims(in: inventory, used: 100 * MiB).map(\.blob) == [2, 3, 4])
    }

    @Test func byteCountsAsWrittenOnCommandLines() throws {
        #expect(try ByteCount.parse("4096") == 4096)
        #expect(try ByteCount.parse("64K") == 64 << 10)
        #expect(try ByteCount.parse("512MiB") == 512 << 20)
        #expect(try ByteCount.parse("4GiB") == 4 << 30)
        #expect(try ByteCount.parse("1g") == 1 << 30)
        #expect(try ByteCount.parse("2TB") == 2 << 40)
        for bad in ["", "MiB", "-4K", "4 K", "1.5G", "abc", "4X"] {
            #expect(throws: GedsError.self) { try ByteCount.parse(bad) }
        }
        #expect(throws: GedsError.self) { try ByteCount.parse("99999999999999999T") }
    }
}

extension SpillPolicyTests {
    @Test func openBlobsAreNeverChosen() {
        var (policy, inventory) = full()
        #expect(policy.victims(in: inventory, used: 100 * MiB, open: [1, 3]).map(\.blob) == [2, 4, 5])
        inventory = [:]
    }
}
