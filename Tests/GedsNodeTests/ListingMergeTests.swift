import GedsCore
import GedsNode
import GedsTestSupport
import Testing

@Suite struct ListingMergeTests {
    /// Pages through GEDS and S3 listings of random overlapping key sets, with page sizes that vary and an S3
    /// side that returns fewer names than asked for: the merged pages, concatenated, are the union in UTF-8
    /// byte order with every key once.
    @Test func pagingThroughAMergedListingYieldsTheUnionOnce() {
        var generator = SplitMix64(seed: 2026)
        let alphabet = ["a", "b", "z", "é", "日", "0", "~"]
        for round in 0..<200 {
            func randomKey() -> String { (0..<Int.random(in: 1...3, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }.joined() }
            let gedsKeys = Set((0..<Int.random(in: 0...30, using: &generator)).map { _ in randomKey() })
            let s3Keys = Set((0..<Int.random(in: 0...30, using: &generator)).map { _ in randomKey() })
            let limit = Int.random(in: 1...7, using: &generator)
            let gedsSorted = gedsKeys.sorted(by: ListingMerge.precedes)
            let s3Sorted = s3Keys.sorted(by: ListingMerge.precedes)
            var listed: [String] = []
            var startAfter = ""
            var pages = 0
            repeat {
                let gedsRest = gedsSorted.filter { startAfter.isEmpty || ListingMerge.precedes(startAfter, $0) }
                let gedsPage = Array(gedsRest.prefix(limit))
                let geds = ListPage(objects: gedsPage.map { ListEntry(key: $0, size: 1, modified: 0) }, commonPrefixes: [],
                                    nextStartAfter: gedsRest.count > limit ? gedsPage.last : nil)
                let s3Rest = s3Sorted.filter { startAfter.isEmpty || ListingMerge.precedes(startAfter, $0) }
                let s3Page = Array(s3Rest.prefix(Int.random(in: 1...limit, using: &generator)))  // S3 may return fewer
                let merged = ListingMerge.merge(geds: geds, s3Objects: s3Page.map { ListEntry(key: $0, size: 2, modified: 0) },
                                                s3Prefixes: [], s3Truncated: s3Rest.count > s3Page.count,
                                                startAfter: startAfter, limit: limit)
                #expect(merged.objects.count <= limit)
                listed += merged.objects.map(\.key)
                // GEDS's entry wins where both have the key.
                #expect(merged.objects.allSatisfy { gedsKeys.contains($0.key) == ($0.size == 1) })
                startAfter = merged.nextStartAfter ?? ""
                pages += 1
            } while !startAfter.isEmpty && pages < 1000
            #expect(listed == gedsKeys.union(s3Keys).sorted(by: ListingMerge.precedes), "round \(round), limit \(limit)")
        }
    }

    /// A common prefix on either side is listed once, and the next page starts past every key under it.
    @Test func commonPrefixesAreListedOnceAndSkippedWhole() {
        let geds = ListPage(objects: [ListEntry(key: "a", size: 1, modified: 0)], commonPrefixes: ["dir/"], nextStartAfter: "dir/9")
        let merged = ListingMerge.merge(geds: geds, s3Objects: [ListEntry(key: "b", size: 2, modified: 0)],
                                        s3Prefixes: ["dir/", "other/"], s3Truncated: false, startAfter: "", limit: 3)
        #expect(merged.objects.map(\.key) == ["a", "b"])
        #expect(merged.commonPrefixes == ["dir/"])
        #expect(merged.nextStartAfter == "dir/\u{10FFFF}")
        let next = ListingMerge.merge(geds: ListPage(objects: [], commonPrefixes: [], nextStartAfter: nil), s3Objects: [],
                                      s3Prefixes: ["other/"], s3Truncated: false, startAfter: "dir/\u{10FFFF}", limit: 3)
        #expect(next.commonPrefixes == ["other/"] && next.nextStartAfter == nil)
    }
}
