import GedsTestSupport
import GedsCore
import GedsMDS
import GedsWire
import Testing

/// One entry of a listing, in the order S3 gives them: keys and common prefixes interleaved by key order.
enum Item: Equatable, CustomStringConvertible {
    case object(String)
    case prefix(String)

    var description: String {
        switch self {
        case .object(let key): "object \(key.debugDescription)"
        case .prefix(let prefix): "prefix \(prefix.debugDescription)"
        }
    }
}

func byteOrder(_ lhs: String, _ rhs: String) -> Bool { lhs.utf8.lexicographicallyPrecedes(rhs.utf8) }

/// The brute-force answer (ListObjectsV2 semantics, UTF-8 byte order): every key after `startAfter` under
/// `prefix`, each key whose rest after the prefix contains the delimiter rolled up into one common prefix.
func referenceListing(_ keys: [String], prefix: String, delimiter: String, startAfter: String) -> [Item] {
    var items: [Item] = []
    var lastPrefix: String?
    let prefixBytes = Array(prefix.utf8)
    let delimiterBytes = Array(delimiter.utf8)
    for key in keys.sorted(by: byteOrder) {
        guard byteOrder(startAfter, key), key.utf8.starts(with: prefixBytes) else { continue }
        let bytes = Array(key.utf8)
        var rolled: String?
        if !delimiterBytes.isEmpty {
            var index = prefixBytes.count
            while index + delimiterBytes.count <= bytes.count {
                if Array(bytes[index..<(index + delimiterBytes.count)]) == delimiterBytes {
                    rolled = String(decoding: bytes[..<(index + delimiterBytes.count)], as: UTF8.self)
                    break
                }
                index += 1
            }
        }
        if let rolled {
            if rolled != lastPrefix { items.append(.prefix(rolled)) }
            lastPrefix = rolled
        } else {
            items.append(.object(key))
        }
    }
    return items
}

/// A page's entries in key order (a common prefix sorts where its first key does).
func items(of page: ListPage) -> [Item] {
    let all = page.objects.map { Item.object($0.key) } + page.commonPrefixes.map { Item.prefix($0) }
    return all.sorted { lhs, rhs in
        func sortKey(_ item: Item) -> String {
            switch item {
            case .object(let key): key
            case .prefix(let prefix): prefix
            }
        }
        return byteOrder(sortKey(lhs), sortKey(rhs))
    }
}

func firstDifference(_ got: [Item], _ want: [Item]) -> String {
    for index in 0..<max(got.count, want.count) {
        let lhs = index < got.count ? got[index].description : "nothing"
        let rhs = index < want.count ? want[index].description : "nothing"
        if lhs != rhs { return "at \(index): got \(lhs), expected \(rhs) (\(got.count) vs \(want.count) entries)" }
    }
    return "equal"
}

@Suite struct ListingTests {
    /// A few thousand keys over a small alphabet, so that prefixes are shared and delimiters repeat
    /// ("a//b/", "/", "a-b-c-", keys that equal a common prefix, multi-byte characters).
    static func randomKeys(count: Int, seed: UInt64) -> [String] {
        var random = SplitMix64(seed: seed)
        let parts = ["a", "b", "c", "ab", "/", "/", "//", "-", ".", "é", "日", "~", "z"]
        var keys = Set<String>()
        while keys.count < count {
            let length = 1 + Int(random.next() % 9)
            var key = (0..<length).map { _ in parts[Int(random.next() % UInt64(parts.count))] }.joined()
            if random.next() % 10 == 0 { key = "dir/sub/" + key }
            if random.next() % 10 == 0 { key += "/" }
            keys.insert(key)
        }
        return keys.sorted(by: byteOrder)  // a fixed order, so the queries drawn from it reproduce
    }

    static func makeStore(_ keys: [String]) throws -> (MetadataStore, [String: UInt64]) {
        var store = MetadataStore(leaseMilliseconds: 1000, epoch: 1)
        let node = store.register(registration("n"), now: 0)
        try store.createBucket("bkt")
        var sizes: [String: UInt64] = [:]
        for (index, key) in keys.enumerated() {
            let blob = try store.createObject(bucket: "bkt", key: key, node: node)
            sizes[key] = UInt64(index)
            try store.seal(blob: blob, size: UInt64(index), metadata: [:], placement: BlobPlacement(node: node, tier: .tier0),
                           now: UInt64(1000 + index))
        }
        return (store, sizes)
    }

    static func queries(_ keys: [String], count: Int, seed: UInt64)
        -> [(prefix: String, delimiter: String, startAfter: String, maxKeys: UInt32)] {
        var random = SplitMix64(seed: seed)
        func randomKeyPrefix() -> String {
            let key = keys[Int(random.next() % UInt64(keys.count))]
            let scalars = Array(key.unicodeScalars)
            var result = ""
            result.unicodeScalars.append(contentsOf: scalars.prefix(Int(random.next() % UInt64(scalars.count + 1))))
            return result
        }
        let delimiters = ["", "/", "/", "//", "-", "a", "ab", "é", "/b"]
        let fixedPrefixes = ["", "", "a", "dir/", "dir/sub/", "a/", "/", "zzzz", "é", "~"]
        let maxKeys: [UInt32] = [1, 2, 3, 5, 7, 10, 50, 1000, 5000]
        var queries: [(String, String, String, UInt32)] = []
        for _ in 0..<count {
            let prefix = random.next() % 2 == 0 ? fixedPrefixes[Int(random.next() % UInt64(fixedPrefixes.count))] : randomKeyPrefix()
            let delimiter = delimiters[Int(random.next() % UInt64(delimiters.count))]
            let startAfter: String
            switch random.next() % 4 {
            case 0: startAfter = ""
            case 1: startAfter = keys[Int(random.next() % UInt64(keys.count))]
            case 2: startAfter = randomKeyPrefix()
            default: startAfter = prefix + randomKeyPrefix()
            }
            queries.append((prefix, delimiter, startAfter, maxKeys[Int(random.next() % UInt64(maxKeys.count))]))
        }
        return queries
    }

    @Test func onePageMatchesBruteForce() throws {
        let keys = ListingTests.randomKeys(count: 3000, seed: 1)
        let (store, sizes) = try ListingTests.makeStore(keys)
        var failures = 0
        for query in ListingTests.queries(keys, count: 600, seed: 2) {
            let page = try store.list(bucket: "bkt", prefix: query.prefix, delimiter: query.delimiter,
                                      startAfter: query.startAfter, maxKeys: query.maxKeys)
            let all = referenceListing(keys, prefix: query.prefix, delimiter: query.delimiter, startAfter: query.startAfter)
            let limit = Int(min(query.maxKeys, 1000))
            let want = Array(all.prefix(limit))
            let got = items(of: page)
            let context = "prefix \(query.prefix.debugDescription) delimiter \(query.delimiter.debugDescription) startAfter \(query.startAfter.debugDescription) maxKeys \(query.maxKeys)"
            if got != want || (page.nextStartAfter != nil) != (all.count > limit) {
                failures += 1
                if failures <= 10 {
                    Issue.record("\(context): \(firstDifference(got, want)); next \(String(describing: page.nextStartAfter)), \(all.count) entries in all")
                }
            }
            for entry in page.objects {
                #expect(entry.size == sizes[entry.key] && entry.modified == 1000 + sizes[entry.key]!)
            }
            // Objects and prefixes each come in key order.
            #expect(page.objects.map(\.key) == page.objects.map(\.key).sorted(by: byteOrder))
            #expect(page.commonPrefixes == page.commonPrefixes.sorted(by: byteOrder))
        }
        #expect(failures == 0, "\(failures) of 600 listings differ from the brute-force answer")
    }

    /// Following `nextStartAfter` page by page yields the whole listing: nothing twice, nothing missing.
    @Test func pagingMatchesBruteForce() throws {
        let keys = ListingTests.randomKeys(count: 2500, seed: 3)
        let (store, _) = try ListingTests.makeStore(keys)
        var failures = 0
        for query in ListingTests.queries(keys, count: 150, seed: 4) {
            let maxKeys = min(query.maxKeys, 50)
            let want = referenceListing(keys, prefix: query.prefix, delimiter: query.delimiter, startAfter: query.startAfter)
            var got: [Item] = []
            var after = query.startAfter
            var pages = 0
            while pages <= want.count + 1 {
                let page = try store.list(bucket: "bkt", prefix: query.prefix, delimiter: query.delimiter,
                                          startAfter: after, maxKeys: maxKeys)
                pages += 1
                let pageItems = items(of: page)
                #expect(pageItems.count <= Int(maxKeys))
                got += pageItems
                guard let next = page.nextStartAfter else { break }
                #expect(pageItems.count == Int(maxKeys), "a page with a continuation is full")
                after = next
            }
            if got != want {
                failures += 1
                if failures <= 10 {
                    Issue.record("paging prefix \(query.prefix.debugDescription) delimiter \(query.delimiter.debugDescription) startAfter \(query.startAfter.debugDescription) maxKeys \(maxKeys): \(firstDifference(got, want))")
                }
            }
        }
        #expect(failures == 0, "\(failures) of 150 paged listings differ from the brute-force answer")
    }

    /// The smallest case of the above: a page that ends right after a common prefix.
    @Test func pagingPastACommonPrefix() throws {
        let (store, _) = try ListingTests.makeStore(["a/1", "a/2", "b", "c/1", "d"])
        var got: [Item] = []
        var after = ""
        for _ in 0..<10 {
            let page = try store.list(bucket: "bkt", prefix: "", delimiter: "/", startAfter: after, maxKeys: 1)
            got += items(of: page)
            guard let next = page.nextStartAfter else { break }
            after = next
        }
        #expect(got == [.prefix("a/"), .object("b"), .prefix("c/"), .object("d")])
    }

    @Test func smallListings() throws {
        let keys = ["a", "a/", "a/b", "a/b/c", "a/c", "a//d", "b-1-2", "b-2", "c"]
        let (store, _) = try ListingTests.makeStore(keys)
        func list(_ prefix: String, _ delimiter: String, after: String = "", max: UInt32 = 1000) throws -> [Item] {
            items(of: try store.list(bucket: "bkt", prefix: prefix, delimiter: delimiter, startAfter: after, maxKeys: max))
        }
        #expect(try list("", "") == keys.sorted(by: byteOrder).map { .object($0) })
        #expect(try list("", "/") == [.object("a"), .prefix("a/"), .object("b-1-2"), .object("b-2"), .object("c")])
        #expect(try list("a/", "/") == [.object("a/"), .prefix("a//"), .object("a/b"), .prefix("a/b/"), .object("a/c")])
        #expect(try list("a/", "") == [.object("a/"), .object("a//d"), .object("a/b"), .object("a/b/c"), .object("a/c")])
        #expect(try list("b", "-") == [.prefix("b-")])
        #expect(try list("b-", "-") == [.prefix("b-1-"), .object("b-2")])
        #expect(try list("", "", after: "a/b") == ["a/b/c", "a/c", "b-1-2", "b-2", "c"].map { .object($0) })
        #expect(try list("", "", after: "a/b", max: 2) == [.object("a/b/c"), .object("a/c")])
        #expect(try list("a/", "", after: "zzz") == [])
        #expect(try list("nothing", "/") == [])
        #expect(try list("", "", max: 0).count == 1)  // at least one key per page
        #expect(gedsError { _ = try store.list(bucket: "nope", prefix: "", delimiter: "", startAfter: "", maxKeys: 1) }?.code == .noSuchBucket)
    }

    @Test func pagesHoldAtMostAThousandKeys() throws {
        let keys = (0..<2500).map { "k\(String(1_000_000 + $0))" }
        let (store, _) = try ListingTests.makeStore(keys)
        let page = try store.list(bucket: "bkt", prefix: "", delimiter: "", startAfter: "", maxKeys: .max)
        #expect(page.objects.count == 1000)
        #expect(page.nextStartAfter == keys[999])
        let second = try store.list(bucket: "bkt", prefix: "", delimiter: "", startAfter: page.nextStartAfter!, maxKeys: 5000)
        #expect(second.objects.first?.key == keys[1000])
        #expect(second.objects.count == 1000)
        let third = try store.list(bucket: "bkt", prefix: "", delimiter: "", startAfter: second.nextStartAfter!, maxKeys: 5000)
        #expect(third.objects.map(\.key) == Array(keys[2000...]))
        #expect(third.nextStartAfter == nil)
    }

    /// Keys are UTF-8 byte strings, as in S3: a prefix matches bytes, not whole characters, and keys that
    /// differ in bytes are different keys even when Unicode calls them equivalent.
    @Test func keysAreComparedAsBytes() throws {
        var store = MetadataStore(leaseMilliseconds: 1000, epoch: 1)
        let node = store.register(registration("n"), now: 0)
        try store.createBucket("bkt")
        let composed = "caf\u{E9}"  // é as one scalar
        let decomposed = "cafe\u{301}"  // e + combining acute accent
        for (index, key) in [composed, decomposed, "cafe", "cafez"].enumerated() {
            let blob = try store.createObject(bucket: "bkt", key: key, node: node)
            try store.seal(blob: blob, size: UInt64(index), metadata: [:], placement: BlobPlacement(node: node, tier: .tier0), now: 0)
        }
        #expect(store.objectCount == 4, "'café' composed and decomposed are two S3 keys")
        #expect(try store.lookup(bucket: "bkt", key: composed).size == 0)
        #expect(try store.lookup(bucket: "bkt", key: decomposed).size == 1)
        let page = try store.list(bucket: "bkt", prefix: "cafe", delimiter: "", startAfter: "", maxKeys: 100)
        #expect(page.objects.map { Array($0.key.utf8) } == ["cafe", "cafez", decomposed].map { Array($0.utf8) },
                "a listing of prefix 'cafe' holds every key whose bytes start with it")
    }
}
