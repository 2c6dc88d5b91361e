import GedsCore
import GedsWire

/// Blobs (the immutable bytes of sealed objects): size, how many keys point at them, and their copies.
/// Records sit in one array; the common single copy without RDMA details (in a file, or a tier-0 slab slot) is
/// kept inline, anything more in a side table, so a blob costs a few dozen bytes. The CRC-32C of a blob that was ever written to
/// tier 1 sits in another side table: it belongs to the bytes, not to a copy, so it outlives the copy's
/// withdrawal (a node that died and restarts checks its tier-1 files against it). Small blobs' bytes sit in a
/// side table too (`InlineContents`), within a budget, so a lookup can answer a read by itself.
struct BlobTable {
    private struct Record {
        var size: UInt64
        var references: UInt32
        /// The inline copy's node (0: none inline).
        var node: UInt32
        var tier: Tier
        /// The inline copy's slab slot when it is packed (slab 0: not packed); slots lie within 4 GiB of a slab.
        var slab: UInt32 = 0
        var slotOffset: UInt32 = 0

        var slot: SlabSlot? { slab == 0 ? nil : SlabSlot(slab: slab, offset: UInt64(slotOffset)) }
    }

    private var records: [Record] = []
    private var freeRecords: [UInt32] = []
    private var recordOf: [BlobID: UInt32] = [:]
    private var extraPlacements: [UInt32: [BlobPlacement]] = [:]
    private var checksums: [UInt32: UInt32] = [:]
    private var contents: [UInt32: [UInt8]] = [:]
    /// The bytes of all inline contents together, and how many may be kept.
    private(set) var contentBytes: UInt64 = 0
    let contentBudget: UInt64

    init(contentBudget: UInt64 = InlineContents.defaultBudget) {
        self.contentBudget = contentBudget
    }

    var count: Int { recordOf.count }

    /// Makes room for `count` more blobs at once (a restore knows how many it brings).
    mutating func reserveCapacity(_ count: Int) {
        records.reserveCapacity(records.count + count)
        recordOf.reserveCapacity(recordOf.count + count)
    }

    func contains(_ blob: BlobID) -> Bool { recordOf[blob] != nil }

    func size(of blob: BlobID) -> UInt64? { recordOf[blob].map { records[Int($0)].size } }

    /// The CRC-32C of the blob's bytes, once a tier-1 copy reported it.
    func checksum(of blob: BlobID) -> UInt32? { recordOf[blob].flatMap { checksums[$0] } }

    /// Keeps the CRC-32C of the blob's bytes (as a tier-1 copy reported it).
    mutating func setChecksum(_ checksum: UInt32, of blob: BlobID) {
        if let number = recordOf[blob] { checksums[number] = checksum }
    }

    /// The blob's bytes, when they are kept inline.
    func contents(of blob: BlobID) -> [UInt8]? { recordOf[blob].flatMap { contents[$0] } }

    func placements(of blob: BlobID) -> [BlobPlacement] {
        guard let number = recordOf[blob] else { return [] }
        let record = records[Int(number)]
        var result = extraPlacements[number] ?? []
        if record.node != 0 { result.insert(BlobPlacement(node: record.node, tier: record.tier, slot: record.slot), at: 0) }
        return result
    }

    /// `bytes`: the blob's contents, kept inline when they fit the budget (dropped otherwise: the copies serve them).
    mutating func insert(_ blob: BlobID, size: UInt64, placements: [BlobPlacement], bytes: [UInt8]? = nil) {
        let number: UInt32
        let record = Record(size: size, references: 1, node: 0, tier: .tier0)
        if let reused = freeRecords.popLast() {
            number = reused
            records[Int(number)] = record
        } else {
            number = UInt32(records.count)
            records.append(record)
        }
        recordOf[blob] = number
        for placement in placements { add(placement, number: number) }
        if let bytes, UInt64(bytes.count) == size, contentBytes + size <= contentBudget {
            contents[number] = bytes
            contentBytes += size
        }
    }

    mutating func retain(_ blob: BlobID) {
        if let number = recordOf[blob] { records[Int(number)].references += 1 }
    }

    /// Drops one reference; when it was the last, the blob goes and its copies are returned.
    mutating func release(_ blob: BlobID) -> [BlobPlacement]? {
        guard let number = recordOf[blob] else { return nil }
        records[Int(number)].references -= 1
        guard records[Int(number)].references == 0 else { return nil }
        let copies = placements(of: blob)
        recordOf[blob] = nil
        extraPlacements[number] = nil
        checksums[number] = nil
        if let bytes = contents.removeValue(forKey: number) { contentBytes -= UInt64(bytes.count) }
        freeRecords.append(number)
        return copies
    }

    /// Records a copy (replacing an earlier one on the same node).
    mutating func add(_ placement: BlobPlacement, to blob: BlobID) {
        guard let number = recordOf[blob] else { return }
        remove(node: placement.node, number: number)
        add(placement, number: number)
    }

    mutating func remove(node: UInt32, from blob: BlobID) {
        if let number = recordOf[blob] { remove(node: node, number: number) }
    }

    /// Withdraws every copy on `node` (a node that died or left).
    mutating func remove(node: UInt32) {
        for number in records.indices where records[number].node == node { records[number].node = 0 }
        for (number, placements) in extraPlacements where placements.contains(where: { $0.node == node }) {
            let rest = placements.filter { $0.node != node }
            extraPlacements[number] = rest.isEmpty ? nil : rest
        }
    }

    private mutating func add(_ placement: BlobPlacement, number: UInt32) {
        var placement = placement
        if let checksum = placement.checksum {
            checksums[number] = checksum
            placement.checksum = nil  // kept once per blob, above
        }
        if records[Int(number)].node == 0, placement.rdmaAddress == 0, placement.rkey == 0,
           let slotOffset = UInt32(exactly: placement.slot?.offset ?? 0) {
            records[Int(number)].node = placement.node
            records[Int(number)].tier = placement.tier
            records[Int(number)].slab = placement.slot?.slab ?? 0
            records[Int(number)].slotOffset = slotOffset
        } else {
            extraPlacements[number, default: []].append(placement)
        }
    }

    private mutating func remove(node: UInt32, number: UInt32) {
        if records[Int(number)].node == node { records[Int(number)].node = 0 }
        if let placements = extraPlacements[number] {
            let rest = placements.filter { $0.node != node }
            extraPlacements[number] = rest.isEmpty ? nil : rest
        }
    }
}
