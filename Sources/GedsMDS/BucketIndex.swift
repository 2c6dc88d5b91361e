import GedsCore

/// The keys of one bucket, compact enough for tens of millions of objects per MDS.
///
/// Key bytes live back to back in one arena; a record per key holds where its bytes are and what it points
/// at; an open-addressing table finds a record by key; sorted chunks of record numbers give the order for
/// listings (a binary search finds the start, so a listing costs what it returns, not the bucket's size).
/// Keys compare as UTF-8 bytes, as S3's do (Swift's `String` would merge canonically equal keys).
struct BucketIndex {
    struct Record {
        var keyOffset: UInt32
        var keyLength: UInt16
        var hasMetadata: Bool
        var blob: BlobID
        var modified: UInt64
    }

    private static let chunkLimit = 512
    private static let emptySlot: UInt32 = 0
    private static let removedSlot: UInt32 = .max

    private var arena: [UInt8] = []
    private var garbageBytes = 0
    private var records: [Record] = []
    private var freeRecords: [UInt32] = []
    /// Record number + 1 per slot; 0 empty, `removedSlot` a tombstone.
    private var table = [UInt32](repeating: 0, count: 16)
    private var occupiedSlots = 0
    private var chunks: [[UInt32]] = []
    private(set) var count = 0

    // MARK: Reading

    subscript(record: UInt32) -> Record {
        get { records[Int(record)] }
        set { records[Int(record)] = newValue }
    }

    func key(of record: UInt32) -> String {
        let entry = records[Int(record)]
        return arena.withUnsafeBufferPointer { base in
            String(decoding: UnsafeBufferPointer(rebasing: base[Int(entry.keyOffset)..<(Int(entry.keyOffset) + Int(entry.keyLength))]),
                   as: UTF8.self)
        }
    }

    func find(_ key: String) -> UInt32? {
        var key = key
        return key.withUTF8 { bytes in arena.withUnsafeBufferPointer { base in locate(bytes, base).found } }
    }

    // MARK: Changing

    /// Adds a key that is not present; returns its record number.
    mutating func insert(_ key: String, blob: BlobID, modified: UInt64, hasMetadata: Bool) -> UInt32 {
        var key = key
        let length = key.utf8.count
        if arena.count + length > Int(UInt32.max) { compactArena() }
        let offset = UInt32(arena.count)
        key.withUTF8 { arena.append(contentsOf: $0) }
        let record = Record(keyOffset: offset, keyLength: UInt16(length), hasMetadata: hasMetadata, blob: blob, modified: modified)
        let number: UInt32
        if let reused = freeRecords.popLast() {
            number = reused
            records[Int(number)] = record
        } else {
            number = UInt32(records.count)
            records.append(record)
        }
        if (occupiedSlots + 1) * 10 > table.count * 7 { rebuildTable(capacity: max(16, (count + 1) * 2)) }
        let slot = key.withUTF8 { bytes in arena.withUnsafeBufferPointer { base in locate(bytes, base).slot } }
        if table[slot] == BucketIndex.emptySlot { occupiedSlots += 1 }
        table[slot] = number + 1
        count += 1
        insertSorted(number)
        return number
    }

    mutating func remove(_ number: UInt32) {
        let record = records[Int(number)]
        let (found, slot) = arena.withUnsafeBufferPointer { base in locate(bytes(of: record, base), base) }
        guard found == number else { return }
        table[slot] = BucketIndex.removedSlot
        removeSorted(number)
        count -= 1
        freeRecords.append(number)
        garbageBytes += Int(record.keyLength)
        if garbageBytes > 1 << 20, garbageBytes > arena.count / 2 { compactArena() }
        if count == 0 { self = BucketIndex() }
    }

    // MARK: Order

    enum Step {
        case next
        case stop
        /// Continue at the first key after every key that starts with these bytes.
        case skipPrefix([UInt8])
    }

    /// Calls `visit` with the records of keys >= `start`, in byte order, until it says stop.
    func walk(from start: [UInt8], _ visit: (UInt32, UnsafeBufferPointer<UInt8>) -> Step) {
        arena.withUnsafeBufferPointer { base in
            var (chunk, index) = position(base) { BucketIndex.compare($0, start) < 0 }
            while chunk < chunks.count {
                if index >= chunks[chunk].count {
                    chunk += 1
                    index = 0
                    continue
                }
                let number = chunks[chunk][index]
                switch visit(number, bytes(of: records[Int(number)], base)) {
                case .next:
                    index += 1
                case .stop:
                    return
                case .skipPrefix(let prefix):
                    // Keys under a prefix sort right after it, so "below or under it" holds for a leading run.
                    (chunk, index) = position(base) { BucketIndex.compare($0, prefix) < 0 || $0.starts(with: prefix) }
                }
            }
        }
    }

    /// The record of the greatest key starting with `prefix`, if any.
    func lastRecord(withPrefix prefix: [UInt8]) -> UInt32? {
        arena.withUnsafeBufferPointer { base in
            var (chunk, index) = position(base) { BucketIndex.compare($0, prefix) < 0 || $0.starts(with: prefix) }
            if index == 0 {
                guard chunk > 0 else { return nil }
                chunk -= 1
                index = chunks[chunk].count
            }
            let number = chunks[chunk][index - 1]
            return bytes(of: records[Int(number)], base).starts(with: prefix) ? number : nil
        }
    }

    // MARK: Internals

    private func bytes(of record: Record, _ base: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(rebasing: base[Int(record.keyOffset)..<(Int(record.keyOffset) + Int(record.keyLength))])
    }

    static func compare(_ lhs: UnsafeBufferPointer<UInt8>, _ rhs: UnsafeBufferPointer<UInt8>) -> Int {
        let common = min(lhs.count, rhs.count)
        if common > 0 {
            let order = memcmp(lhs.baseAddress!, rhs.baseAddress!, common)
            if order != 0 { return Int(order) }
        }
        return lhs.count - rhs.count
    }

    static func compare(_ lhs: UnsafeBufferPointer<UInt8>, _ rhs: [UInt8]) -> Int {
        rhs.withUnsafeBufferPointer { compare(lhs, $0) }
    }

    private static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var hasher = Hasher()
        hasher.combine(bytes: UnsafeRawBufferPointer(bytes))
        return hasher.finalize()
    }

    /// Finds `key`: its record if present, and the slot where it is or would go.
    private func locate(_ key: UnsafeBufferPointer<UInt8>, _ base: UnsafeBufferPointer<UInt8>) -> (found: UInt32?, slot: Int) {
        let mask = table.count - 1
        var slot = BucketIndex.hash(key) & mask
        var firstFree: Int?
        while true {
            let value = table[slot]
            if value == BucketIndex.emptySlot { return (nil, firstFree ?? slot) }
            if value == BucketIndex.removedSlot {
                if firstFree == nil { firstFree = slot }
            } else if BucketIndex.compare(bytes(of: records[Int(value - 1)], base), key) == 0 {
                return (value - 1, slot)
            }
            slot = (slot + 1) & mask
        }
    }

    private mutating func rebuildTable(capacity: Int) {
        var size = 16
        while size < capacity { size <<= 1 }
        table = [UInt32](repeating: 0, count: size)
        occupiedSlots = 0
        let mask = size - 1
        arena.withUnsafeBufferPointer { base in
            for chunk in chunks {
                for number in chunk {
                    var slot = BucketIndex.hash(bytes(of: records[Int(number)], base)) & mask
                    while table[slot] != BucketIndex.emptySlot { slot = (slot + 1) & mask }
                    table[slot] = number + 1
                    occupiedSlots += 1
                }
            }
        }
    }

    /// Copies live keys into a fresh arena, dropping the bytes of removed ones.
    private mutating func compactArena() {
        var fresh: [UInt8] = []
        fresh.reserveCapacity(arena.count - garbageBytes)
        for chunk in chunks {
            for number in chunk {
                let record = records[Int(number)]
                let start = Int(record.keyOffset)
                records[Int(number)].keyOffset = UInt32(fresh.count)
                fresh.append(contentsOf: arena[start..<(start + Int(record.keyLength))])
            }
        }
        arena = fresh
        garbageBytes = 0
    }

    /// The first (chunk, index) whose key is not `before`; `before` holds for a leading run of the order.
    private func position(_ base: UnsafeBufferPointer<UInt8>,
                          where before: (UnsafeBufferPointer<UInt8>) -> Bool) -> (chunk: Int, index: Int) {
        var low = 0
        var high = chunks.count
        while low < high {
            let mid = (low + high) / 2
            if before(bytes(of: records[Int(chunks[mid].last!)], base)) { low = mid + 1 } else { high = mid }
        }
        guard low < chunks.count else { return (low, 0) }
        var first = 0
        var last = chunks[low].count
        while first < last {
            let mid = (first + last) / 2
            if before(bytes(of: records[Int(chunks[low][mid])], base)) { first = mid + 1 } else { last = mid }
        }
        return (low, first)
    }

    private mutating func insertSorted(_ number: UInt32) {
        if chunks.isEmpty {
            chunks.append([number])
            return
        }
        var (chunk, index) = arena.withUnsafeBufferPointer { base in
            let key = bytes(of: records[Int(number)], base)
            return position(base) { BucketIndex.compare($0, key) < 0 }
        }
        if chunk == chunks.count {
            chunk -= 1
            index = chunks[chunk].count
        }
        chunks[chunk].insert(number, at: index)
        if chunks[chunk].count > BucketIndex.chunkLimit {
            let upper = Array(chunks[chunk][(BucketIndex.chunkLimit / 2)...])
            chunks[chunk].removeLast(upper.count)
            chunks.insert(upper, at: chunk + 1)
        }
    }

    private mutating func removeSorted(_ number: UInt32) {
        let (chunk, index) = arena.withUnsafeBufferPointer { base in
            let key = bytes(of: records[Int(number)], base)
            return position(base) { BucketIndex.compare($0, key) < 0 }
        }
        guard chunk < chunks.count, index < chunks[chunk].count, chunks[chunk][index] == number else { return }
        chunks[chunk].remove(at: index)
        if chunks[chunk].isEmpty { chunks.remove(at: chunk) }
    }
}

#if canImport(Glibc)
import Glibc
#endif
