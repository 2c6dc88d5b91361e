import GedsCore
import Testing
import GedsTestSupport

/// Runs `body` and returns the GedsError it threw, or nil when it did not throw.
@Suite struct BucketNameTests {
    static let accepted: [String] = [
        "abc", "a1b", "123", "my-bucket", "my.bucket.name", "a-b-c", "a.b.c", "bucket1", "1bucket",
        "0.0.0", "1.2.3.4.5", "1.2.3.a", "a1.2.3.4", "xn-abc", "xnabc", "axn--b", "sthree", "s3alias",
        "abc-s3aliasx", "abc-s3", "amzn-s3-demo", "bucket.mrapx", "b--ol-s3x", "a--b",
        String(repeating: "a", count: 63), String(repeating: "9", count: 63),
        "a" + String(repeating: "-", count: 61) + "z",
    ]

    static let rejected: [String] = [
        // Length.
        "", "a", "ab", String(repeating: "a", count: 64), String(repeating: "b", count: 200),
        // Characters.
        "ABC", "Abc", "abC", "my_bucket", "my bucket", "bucket!", "buck/et", "bück", "bucket\u{0}", "a\tb",
        "日本語バケット", "a:b", "a+b",
        // First and last character.
        "-abc", "abc-", ".abc", "abc.", "-ab-", ".ab.",
        // Periods.
        "a..b", "ab..", "..ab", "a...b", "a.-b", "a-.b",
        // IP-shaped.
        "192.168.5.4", "1.2.3.4", "0.0.0.0", "255.255.255.255", "10.0.0.1",
        // Reserved prefixes and suffixes.
        "xn--abc", "xn--", "xn--bucket-name", "sthree-abc", "sthree-configurator", "amzn-s3-demo-bucket",
        "abc-s3alias", "my-bucket-s3alias", "abc--ol-s3", "abc.mrap", "abc--x-s3", "abc--table-s3",
    ]

    @Test(arguments: accepted)
    func acceptsValidNames(_ name: String) throws {
        let bucket = try BucketName(name)
        #expect(bucket.rawValue == name)
        #expect(bucket.description == name)
    }

    @Test(arguments: rejected)
    func refusesInvalidNames(_ name: String) {
        let error = gedsError { _ = try BucketName(name) }
        #expect(error?.code == .invalidName, "'\(name.debugDescription)' should be refused")
        #expect(error?.message.isEmpty == false)
    }

    /// S3 refuses names "formatted as an IP address"; the AWS SDKs check the shape `(\d+\.){3}\d+`, so a
    /// dotted quad with numbers above 255 or with leading zeros is refused too.
    @Test(arguments: ["256.256.256.256", "999.1.1.1", "1.2.3.1000", "001.002.003.004"])
    func refusesIPShapedNamesOutsideOctetRange(_ name: String) {
        let error = gedsError { _ = try BucketName(name) }
        #expect(error?.code == .invalidName, "'\(name)' is shaped like an IPv4 address")
    }

    @Test func boundaryLengths() throws {
        #expect(gedsError { _ = try BucketName("aa") }?.code == .invalidName)
        _ = try BucketName("aaa")
        _ = try BucketName(String(repeating: "x", count: 63))
        #expect(gedsError { _ = try BucketName(String(repeating: "x", count: 64)) }?.code == .invalidName)
    }

    @Test func orderingAndHashing() throws {
        let names = try ["b-bucket", "a-bucket", "c.bucket", "a-bucket"].map { (name) throws(GedsError) in try BucketName(name) }
        #expect(names.sorted().map(\.rawValue) == ["a-bucket", "a-bucket", "b-bucket", "c.bucket"])
        #expect(Set(names).count == 3)
    }
}

@Suite struct ObjectKeyTests {
    @Test(arguments: [
        "a", "/", "a/b/c", "dir/", "//", "key with spaces", "ключ", "日本語/キー", "emoji-🎉", "..", ".",
        "a~b", "tab-less", "percent%20encoded", "*?<>|\"'`",
        String(repeating: "k", count: 1024),
        String(repeating: "é", count: 512),  // 2 bytes each: exactly 1024 bytes
        String(repeating: "日", count: 341) + "a",  // 1024 bytes
    ])
    func acceptsValidKeys(_ key: String) throws {
        let parsed = try ObjectKey(key)
        #expect(parsed.rawValue == key)
        #expect(parsed.description == key)
    }

    @Test func lengthIsCountedInUTF8Bytes() {
        #expect(ObjectKey.maximumLength == 1024)
        #expect(gedsError { _ = try ObjectKey("") }?.code == .invalidName)
        #expect(gedsError { _ = try ObjectKey(String(repeating: "k", count: 1025)) }?.code == .invalidName)
        // 513 two-byte characters: 513 characters would be fine, 1026 bytes are not.
        #expect(gedsError { _ = try ObjectKey(String(repeating: "é", count: 513)) }?.code == .invalidName)
        #expect(gedsError { _ = try ObjectKey(String(repeating: "日", count: 342)) }?.code == .invalidName)
        #expect(gedsError { _ = try ObjectKey(String(repeating: "🎉", count: 257)) }?.code == .invalidName)
        #expect(gedsError { _ = try ObjectKey(String(repeating: "🎉", count: 256)) } == nil)
    }

    @Test(arguments: Array(0..<0x20).map { UInt8($0) } + [0x7F])
    func refusesASCIIControlCharacters(_ byte: UInt8) {
        let control = String(UnicodeScalar(byte))
        for key in [control, "a" + control, control + "b", "dir/" + control + "/file"] {
            let error = gedsError { _ = try ObjectKey(key) }
            #expect(error?.code == .invalidName, "key \(key.debugDescription) should be refused")
        }
    }

    /// U+0080…U+009F are control characters too (Unicode category Cc, e.g. U+0085 NEXT LINE), and break
    /// listings the same way.
    @Test(arguments: [0x80, 0x85, 0x9B, 0x9F])
    func refusesC1ControlCharacters(_ scalar: Int) {
        let key = "a" + String(UnicodeScalar(UInt8(scalar))) + "b"
        #expect(gedsError { _ = try ObjectKey(key) }?.code == .invalidName, "key \(key.debugDescription) should be refused")
    }

    @Test func ordering() throws {
        let keys = try ["b", "a/b", "a", "a/"].map { (key) throws(GedsError) in try ObjectKey(key) }
        #expect(keys.sorted().map(\.rawValue) == ["a", "a/", "a/b", "b"])
    }
}

@Suite struct ObjectPathTests {
    @Test func parsesBucketAndKey() throws {
        let path = try ObjectPath(parsing: "my-bucket/dir/sub/file.txt")
        #expect(path.bucket.rawValue == "my-bucket")
        #expect(path.key.rawValue == "dir/sub/file.txt")
        #expect(path.description == "my-bucket/dir/sub/file.txt")
        #expect(try ObjectPath(parsing: path.description) == path)

        let slashKey = try ObjectPath(parsing: "abc//")
        #expect(slashKey.key.rawValue == "/")
        let built = ObjectPath(bucket: try BucketName("abc"), key: try ObjectKey("k"))
        #expect(built.description == "abc/k")
        #expect(try ObjectPath(parsing: "abc/k") == built)
    }

    @Test(arguments: ["", "bucket", "bucket/", "/key", "ab/key", "Bucket/key", "bucket/a\nb", "xn--abc/key",
                      "my_bucket/key", "bucket/" + String(repeating: "k", count: 1025)])
    func refusesMalformedPaths(_ text: String) {
        #expect(gedsError { _ = try ObjectPath(parsing: text) }?.code == .invalidName, "\(text.debugDescription)")
    }
}

@Suite struct EndpointTests {
    @Test(arguments: [
        ("127.0.0.1:4381", "127.0.0.1", 4381),
        ("localhost:0", "localhost", 0),
        ("example.com:65535", "example.com", 65535),
        ("[::1]:9000", "::1", 9000),
        ("[fe80::1%eth0]:1", "fe80::1%eth0", 1),
        ("node-7.cluster.local:80", "node-7.cluster.local", 80),
    ])
    func parses(_ text: String, _ host: String, _ port: Int) throws {
        let endpoint = try Endpoint(parsing: text)
        #expect(endpoint.host == host)
        #expect(endpoint.port == port)
        #expect(endpoint == Endpoint(host: host, port: port))
        #expect(endpoint.description == text)
        #expect(try Endpoint(parsing: endpoint.description) == endpoint)
    }

    @Test(arguments: ["", "host", "host:", ":80", "[]:80", "host:65536", "host:-1", "host:http", "host:8o",
                      "host:99999999999999999999", "127.0.0.1", "[::1]"])
    func refuses(_ text: String) {
        #expect(gedsError { _ = try Endpoint(parsing: text) }?.code == .invalidArgument, "\(text.debugDescription)")
    }

    @Test func ipv6DescriptionUsesBrackets() {
        #expect(Endpoint(host: "::1", port: 5).description == "[::1]:5")
        #expect(Endpoint(host: "10.1.2.3", port: 5).description == "10.1.2.3:5")
    }
}

@Suite struct UserMetadataTests {
    @Test func acceptsValid() throws {
        try UserMetadata.validate([:])
        try UserMetadata.validate(["content-type": "text/plain", "Owner_Name.v2": "ünïcödé ✓", "x": ""])
        try UserMetadata.validate([String(repeating: "n", count: 128): "v"])
        // Exactly 2048 bytes of names and values.
        try UserMetadata.validate(["a": String(repeating: "v", count: 2047)])
        try UserMetadata.validate(["ab": String(repeating: "v", count: 1000), "cd": String(repeating: "w", count: 1044)])
    }

    @Test(arguments: ["", "has space", "colon:", "slash/", "ünï", "new\nline", "equals=",
                      String(repeating: "n", count: 129)])
    func refusesBadNames(_ name: String) {
        #expect(gedsError { try UserMetadata.validate([name: "value"]) }?.code == .invalidArgument, "\(name.debugDescription)")
    }

    @Test func refusesMoreThan2KiB() {
        #expect(UserMetadata.maximumTotalBytes == 2048)
        #expect(gedsError { try UserMetadata.validate(["a": String(repeating: "v", count: 2048)]) }?.code == .metadataTooLarge)
        #expect(gedsError {
            try UserMetadata.validate(["ab": String(repeating: "v", count: 1000), "cd": String(repeating: "w", count: 1045)])
        }?.code == .metadataTooLarge)
        // Values are counted in bytes: 683 three-byte characters are 2049 bytes with the name.
        #expect(gedsError { try UserMetadata.validate(["k": String(repeating: "日", count: 683)]) }?.code == .metadataTooLarge)
        #expect(gedsError { try UserMetadata.validate(["k": String(repeating: "日", count: 682)]) } == nil)
        // Many small entries add up.
        var many: [String: String] = [:]
        for index in 0..<300 { many["name\(index)"] = "value" }
        #expect(gedsError { try UserMetadata.validate(many) }?.code == .metadataTooLarge)
    }
}

@Suite struct BlobIDTests {
    @Test func fileNameIsSixteenLowercaseHexDigits() {
        #expect(BlobID(0).fileName == "0000000000000000")
        #expect(BlobID(1).fileName == "0000000000000001")
        #expect(BlobID(0xABCDEF).fileName == "0000000000abcdef")
        #expect(BlobID(.max).fileName == "ffffffffffffffff")
        #expect(BlobID(0x1_0000_0000_0000).fileName == "0001000000000000")
    }

    @Test func roundTrip() {
        var generator = SplitMix64(seed: 42)
        var values: [BlobID] = [0, 1, 15, 16, 255, 256, BlobID(.max), BlobID(.max - 1), BlobID(1 << 44), BlobID((1 << 44) + 1)]
        for _ in 0..<10_000 { values.append(BlobID(generator.next() >> (generator.next() % 64))) }
        for value in values {
            let name = value.fileName
            #expect(name.utf8.count == 16)
            #expect(BlobID(fileName: name) == value)
        }
        // Names sort as the ids do.
        let sorted = values.sorted()
        #expect(sorted.map(\.fileName) == sorted.map(\.fileName).sorted())
    }

    @Test(arguments: ["", "0", "000000000000001", "00000000000000001", "000000000000000g", "zzzzzzzzzzzzzzzz",
                      "0000000000000001.partial", " 000000000000001", "000000000000001 "])
    func refusesOtherNames(_ name: String) {
        #expect(BlobID(fileName: name) == nil, "\(name.debugDescription)")
    }

    /// Parsing is the inverse of `fileName`: only the canonical spelling of an id is a blob file, so a
    /// stray file in a tier-0 folder is never mistaken for (and deleted as) one.
    @Test(arguments: ["+000000000000001", "-000000000000000", "00000000000000FF", "ABCDEF0123456789"])
    func acceptsOnlyCanonicalNames(_ name: String) {
        if let blob = BlobID(fileName: name) {
            #expect(blob.fileName == name, "'\(name)' parsed as blob \(blob.fileName)")
        }
    }
}

