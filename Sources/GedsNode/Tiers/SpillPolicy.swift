import GedsCore

/// Which tier-0 blobs to spill to tier 1, and when: plain state, no I/O, so it is tested on its own.
///
/// Tier 0 may fill up to its capacity; once its bytes pass the high-water mark, blobs are spilled, least
/// recently used first, until they are under the low-water mark. Blobs in use (a move in progress, a view
/// handed out) are pinned and never chosen.
///
/// Recency is a counter stamped on each use, and the order is found by sorting only when a spill is due:
/// a use then costs one dictionary store, and spills (rare, in batches) pay for the sort.
public struct SpillPolicy: Sendable {
    public let capacity: UInt64
    public let highWater: UInt64
    public let lowWater: UInt64
    private var clock: UInt64 = 0
    private var lastUse: [BlobID: UInt64] = [:]
    private var pins: [BlobID: Int] = [:]

    /// `highWater` and `lowWater` are fractions of `capacity` (0.9 and 0.75 by default).
    public init(capacity: UInt64, highWater: Double = 0.9, lowWater: Double = 0.75) {
        self.capacity = capacity
        let high = UInt64(Double(capacity) * min(max(highWater, 0), 1))
        self.highWater = high
        self.lowWater = min(high, UInt64(Double(capacity) * min(max(lowWater, 0), 1)))
    }

    /// Marks `blob` as just used (stored, read or served).
    public mutating func touch(_ blob: BlobID) {
        clock += 1
        lastUse[blob] = clock
    }

    /// Forgets a blob that left tier 0.
    public mutating func forget(_ blob: BlobID) {
        lastUse[blob] = nil
    }

    public mutating func pin(_ blob: BlobID) {
        pins[blob, default: 0] += 1
    }

    public mutating func unpin(_ blob: BlobID) {
        guard let count = pins[blob] else { return }
        pins[blob] = count > 1 ? count - 1 : nil
    }

    public func isPinned(_ blob: BlobID) -> Bool { pins[blob] != nil }

    /// Whether `incoming` more bytes fit beside the `used` ones.
    public func fits(_ incoming: UInt64, used: UInt64) -> Bool {
        incoming <= capacity && used <= capacity - incoming
    }

    /// The blobs to spill, least recently used first, when `used + incoming` bytes pass the high-water mark:
    /// enough of them to get under the low-water mark, or every unpinned one when that is not enough.
    /// `inventory` is tier 0's sealed blobs and sizes (the truth: recency records of blobs no longer in it
    /// are dropped here). Blobs never touched count as the oldest; blobs in `open` (someone holds a view) are
    /// passed over like pinned ones.
    public mutating func victims(in inventory: [BlobID: UInt64], used: UInt64, incoming: UInt64 = 0,
                                 open: Set<BlobID> = []) -> [(blob: BlobID, size: UInt64)] {
        if lastUse.count > inventory.count { lastUse = lastUse.filter { inventory[$0.key] != nil } }
        let total = used + incoming
        guard total > highWater else { return [] }
        var candidates: [(stamp: UInt64, blob: BlobID, size: UInt64)] = []
        for (blob, size) in inventory where pins[blob] == nil && !open.contains(blob) {
            candidates.append((lastUse[blob] ?? 0, blob, size))
        }
        candidates.sort { lhs, rhs in lhs.stamp != rhs.stamp ? lhs.stamp < rhs.stamp : lhs.blob < rhs.blob }
        var result: [(blob: BlobID, size: UInt64)] = []
        var remaining = total
        for candidate in candidates where remaining > lowWater {
            result.append((candidate.blob, candidate.size))
            remaining -= min(remaining, candidate.size)
        }
        return result
    }
}
