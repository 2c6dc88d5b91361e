/// The keys of one bucket in order, for listings whose cost follows the answer, not the bucket.
///
/// A sorted list of sorted chunks (as Python's sortedcontainers): a binary search finds the chunk, inserts
/// and removes move at most one chunk's elements, and a listing walks chunks from its first key onwards.
struct SortedKeys {
    private static let chunkLimit = 512
    private var chunks: [[String]] = []
    private(set) var count = 0

    /// Index of the first chunk whose last key is >= key (chunks.count if none).
    private func chunkIndex(for key: String) -> Int {
        var low = 0
        var high = chunks.count
        while low < high {
            let mid = (low + high) / 2
            if chunks[mid].last! < key { low = mid + 1 } else { high = mid }
        }
        return low
    }

    private static func position(of key: String, in chunk: [String]) -> Int {
        var low = 0
        var high = chunk.count
        while low < high {
            let mid = (low + high) / 2
            if chunk[mid] < key { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// Inserts a key known not to be present.
    mutating func insert(_ key: String) {
        count += 1
        if chunks.isEmpty {
            chunks.append([key])
            return
        }
        let index = min(chunkIndex(for: key), chunks.count - 1)
        let position = SortedKeys.position(of: key, in: chunks[index])
        chunks[index].insert(key, at: position)
        if chunks[index].count > SortedKeys.chunkLimit {
            let upper = Array(chunks[index][(SortedKeys.chunkLimit / 2)...])
            chunks[index].removeLast(upper.count)
            chunks.insert(upper, at: index + 1)
        }
    }

    mutating func remove(_ key: String) {
        let index = chunkIndex(for: key)
        guard index < chunks.count else { return }
        let position = SortedKeys.position(of: key, in: chunks[index])
        guard position < chunks[index].count, chunks[index][position] == key else { return }
        chunks[index].remove(at: position)
        count -= 1
        if chunks[index].isEmpty { chunks.remove(at: index) }
    }

    /// Calls `visit` with keys >= `start` in order until it returns false. `visit` may return a key to skip
    /// to (exclusive lower bound is then that key), which is how delimiter listings jump over a whole
    /// common prefix in one search.
    func walk(from start: String, _ visit: (String) -> Step) {
        var chunk = chunkIndex(for: start)
        guard chunk < chunks.count else { return }
        var position = SortedKeys.position(of: start, in: chunks[chunk])
        while chunk < chunks.count {
            if position >= chunks[chunk].count {
                chunk += 1
                position = 0
                continue
            }
            switch visit(chunks[chunk][position]) {
            case .next:
                position += 1
            case .stop:
                return
            case .skip(let bound):
                chunk = chunkIndex(for: bound)
                guard chunk < chunks.count else { return }
                position = SortedKeys.position(of: bound, in: chunks[chunk])
            }
        }
    }

    enum Step {
        case next
        case stop
        /// Continue at the first key >= bound.
        case skip(String)
    }
}

extension String {
    /// The smallest string greater than every string that starts with `self` (nil if there is none).
    var prefixSuccessor: String? {
        var scalars = Array(unicodeScalars)
        while let last = scalars.popLast() {
            if last.value < 0x10FFFF, let next = Unicode.Scalar(last.value + 1 == 0xD800 ? 0xE000 : last.value + 1) {
                scalars.append(next)
                var result = ""
                result.unicodeScalars.append(contentsOf: scalars)
                return result
            }
        }
        return nil
    }
}
