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
