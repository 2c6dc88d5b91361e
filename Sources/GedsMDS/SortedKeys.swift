/// An object key as S3 treats it: a string of bytes. Swift's `String` compares by Unicode canonical
/// equivalence, which would merge keys that differ only in normalization; `Key` compares UTF-8 bytes.
struct Key: Hashable, Comparable, Sendable {
    let string: String

    init(_ string: String) {
        var copy = string
        copy.makeContiguousUTF8()
        self.string = copy
    }

    static func == (lhs: Key, rhs: Key) -> Bool { lhs.string.utf8.elementsEqual(rhs.string.utf8) }

    static func < (lhs: Key, rhs: Key) -> Bool {
        lhs.string.utf8.lexicographicallyPrecedes(rhs.string.utf8)
    }

    func hash(into hasher: inout Hasher) {
        var copy = string
        copy.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }

    func hasPrefix(_ prefix: Key) -> Bool { string.utf8.starts(with: prefix.string.utf8) }
}

/// The keys of one bucket in order, for listings whose cost follows the answer, not the bucket.
///
/// A sorted list of sorted chunks (as Python's sortedcontainers): a binary search finds the chunk, inserts
/// and removes move at most one chunk's elements, and a listing walks chunks from its first key onwards.
struct SortedKeys {
    private static let chunkLimit = 512
    private var chunks: [[Key]] = []
    private(set) var count = 0

    /// The first position (chunk, index) whose key is not `before` the boundary; `before` must hold for a
    /// leading run of the order and fail for the rest.
    private func position(where before: (Key) -> Bool) -> (chunk: Int, index: Int) {
        var low = 0
        var high = chunks.count
        while low < high {
            let mid = (low + high) / 2
            if before(chunks[mid].last!) { low = mid + 1 } else { high = mid }
        }
        guard low < chunks.count else { return (low, 0) }
        let chunk = chunks[low]
        var first = 0
        var last = chunk.count
        while first < last {
            let mid = (first + last) / 2
            if before(chunk[mid]) { first = mid + 1 } else { last = mid }
        }
        return (low, first)
    }

    /// Inserts a key known not to be present.
    mutating func insert(_ key: Key) {
        count += 1
        if chunks.isEmpty {
            chunks.append([key])
            return
        }
        var (chunk, index) = position { $0 < key }
        if chunk == chunks.count {
            chunk -= 1
            index = chunks[chunk].count
        }
        chunks[chunk].insert(key, at: index)
        if chunks[chunk].count > SortedKeys.chunkLimit {
            let upper = Array(chunks[chunk][(SortedKeys.chunkLimit / 2)...])
            chunks[chunk].removeLast(upper.count)
            chunks.insert(upper, at: chunk + 1)
        }
    }

    mutating func remove(_ key: Key) {
        let (chunk, index) = position { $0 < key }
        guard chunk < chunks.count, index < chunks[chunk].count, chunks[chunk][index] == key else { return }
        chunks[chunk].remove(at: index)
        count -= 1
        if chunks[chunk].isEmpty { chunks.remove(at: chunk) }
    }

    /// The greatest key starting with `prefix`, if any.
    func lastKey(withPrefix prefix: Key) -> Key? {
        var (chunk, index) = position { $0 < prefix || $0.hasPrefix(prefix) }
        if index == 0 {
            guard chunk > 0 else { return nil }
            chunk -= 1
            index = chunks[chunk].count
        }
        let key = chunks[chunk][index - 1]
        return key.hasPrefix(prefix) ? key : nil
    }

    /// Calls `visit` with keys >= `start` in order until it returns `.stop`.
    func walk(from start: Key, _ visit: (Key) -> Step) {
        var (chunk, index) = position { $0 < start }
        while chunk < chunks.count {
            if index >= chunks[chunk].count {
                chunk += 1
                index = 0
                continue
            }
            switch visit(chunks[chunk][index]) {
            case .next:
                index += 1
            case .stop:
                return
            case .skipPrefix(let prefix):
                // Every key starting with `prefix` sorts after it and before any other key greater than it,
                // so "below or under the prefix" holds for a leading run: one search jumps over them all.
                (chunk, index) = position { $0 < prefix || $0.hasPrefix(prefix) }
            }
        }
    }

    enum Step {
        case next
        case stop
        /// Continue at the first key after every key that starts with this prefix.
        case skipPrefix(Key)
    }
}
