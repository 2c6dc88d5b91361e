import GedsCore

/// Merges a page of GEDS's listing with a page of the bucket's S3 store's, both asked for after the same
/// `startAfter`: names in UTF-8 byte order, each once (GEDS's entry wins). The union, up to the last name of
/// each side that has more (beyond it that side's names are unknown), and at most `limit` of it, is exactly the
/// merged listing's next page, so paging stays correct however few names either side returned. Pure, so it is
/// unit-tested on its own.
public enum ListingMerge {
    public static func merge(geds: ListPage, s3Objects: [ListEntry], s3Prefixes: [String], s3Truncated: Bool,
                             startAfter: String, limit: Int) -> ListPage {
        var entries: [String: ListEntry?] = [:]  // nil: a common prefix
        for object in s3Objects { entries[object.key] = object }
        for common in s3Prefixes { entries[common] = .some(nil) }
        for object in geds.objects { entries[object.key] = object }
        for common in geds.commonPrefixes { entries[common] = .some(nil) }
        let s3Names = s3Objects.map(\.key) + s3Prefixes
        let gedsNames = geds.objects.map(\.key) + geds.commonPrefixes
        let bound = [s3Truncated ? s3Names.max(by: precedes) : nil,
                     geds.nextStartAfter != nil ? gedsNames.max(by: precedes) : nil].compactMap { $0 }.min(by: precedes)
        let names = entries.keys.sorted(by: precedes).filter { name in
            (startAfter.isEmpty || precedes(startAfter, name)) && bound.map { !precedes($0, name) } ?? true
        }
        let taken = names.prefix(max(limit, 1))
        var merged = ListPage(objects: [], commonPrefixes: [], nextStartAfter: nil)
        for name in taken {
            if let entry = entries[name]!{ merged.objects.append(entry) } else { merged.commonPrefixes.append(name) }
        }
        if let last = taken.last, names.count > taken.count || bound != nil {
            // After a common prefix the next page starts past every key under it (U+10FFFF sorts after any key byte).
            merged.nextStartAfter = entries[last]! == nil ? last + "\u{10FFFF}" : last
        }
        return merged
    }

    /// Key order: UTF-8 bytes, as S3 and the MDS sort keys.
    public static func precedes(_ lhs: String, _ rhs: String) -> Bool { lhs.utf8.lexicographicallyPrecedes(rhs.utf8) }
}
