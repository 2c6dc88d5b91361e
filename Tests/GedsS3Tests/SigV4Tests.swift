import Crypto
import Foundation
import GedsCore
@_spi(Testing) import GedsS3
import Testing

/// AWS's published Signature V4 vectors: the general test suite (service "service", 2015-08-30) and the S3 API
/// reference's examples ("Signature Calculations for the Authorization Header", 2013-05-24).
@Suite struct SigV4Tests {
    let suiteSigner = SigV4Signer(credentials: S3Credentials(accessKeyID: "AKIDEXAMPLE",
                                                             secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                                  region: "us-east-1", service: "service")
    let s3Signer = SigV4Signer(credentials: S3Credentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE",
                                                          secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                               region: "us-east-1")
    let suiteHeaders = [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]
    let s3Host = ("Host", "examplebucket.s3.amazonaws.com")

    @Test func getVanilla() {
        let signed = suiteSigner.sign(method: "GET", encodedPath: "/", query: [], headers: suiteHeaders,
                                      payloadHash: emptyPayloadSHA256, amzDate: "20150830T123600Z")
        #expect(signed.canonicalRequest == """
            GET
            /

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """)
        #expect(signed.stringToSign == """
            AWS4-HMAC-SHA256
            20150830T123600Z
            20150830/us-east-1/service/aws4_request
            bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63
            """)
        #expect(signed.authorization == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            + "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    }

    @Test func getVanillaQueryOrderKeyCase() {
        let signed = suiteSigner.sign(method: "GET", encodedPath: "/", query: [("Param2", "value2"), ("Param1", "value1")],
                                      headers: suiteHeaders, payloadHash: emptyPayloadSHA256, amzDate: "20150830T123600Z")
        #expect(signed.canonicalRequest.split(separator: "\n", omittingEmptySubsequences: false)[2] == "Param1=value1&Param2=value2")
        #expect(signed.signature == "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")
    }

    @Test func postVanilla() {
        let signed = suiteSigner.sign(method: "POST", encodedPath: "/", query: [], headers: suiteHeaders,
                                      payloadHash: emptyPayloadSHA256, amzDate: "20150830T123600Z")
        #expect(signed.signature == "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b")
    }

    /// The key-derivation example of the IAM documentation (2012-02-15).
    @Test func signingKeyDerivation() {
        let signer = SigV4Signer(credentials: S3Credentials(accessKeyID: "AKIDEXAMPLE",
                                                            secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                                 region: "us-east-1", service: "iam")
        #expect(hex(signer.signingKey(day: "20120215")) == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d")
    }

    @Test func s3GetObjectWithRange() {
        let signed = s3Signer.sign(method: "GET", encodedPath: "/test.txt", query: [],
                                   headers: [s3Host, ("Range", "bytes=0-9"), ("x-amz-content-sha256", emptyPayloadSHA256),
                                             ("x-amz-date", "20130524T000000Z")],
                                   payloadHash: emptyPayloadSHA256, amzDate: "20130524T000000Z")
        #expect(sha256Hex(Array(signed.canonicalRequest.utf8)) == "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972")
        #expect(signed.authorization == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            + "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    @Test func s3PutObject() {
        let body = Array("Welcome to Amazon S3.".utf8)
        let payload = sha256Hex(body)
        #expect(payload == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        let signed = s3Signer.sign(method: "PUT", encodedPath: "/" + uriEncode("test$file.text", encodeSlash: false), query: [],
                                   headers: [("Date", "Fri, 24 May 2013 00:00:00 GMT"), s3Host,
                                             ("x-amz-date", "20130524T000000Z"),
                                             ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                                             ("x-amz-content-sha256", payload)],
                                   payloadHash: payload, amzDate: "20130524T000000Z")
        #expect(sha256Hex(Array(signed.canonicalRequest.utf8)) == "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d")
        #expect(signed.signedHeaders == "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class")
        #expect(signed.signature == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    }

    @Test func s3GetBucketLifecycle() {
        let signed = s3Signer.sign(method: "GET", encodedPath: "/", query: [("lifecycle", "")],
                                   headers: [s3Host, ("x-amz-content-sha256", emptyPayloadSHA256),
                                             ("x-amz-date", "20130524T000000Z")],
                                   payloadHash: emptyPayloadSHA256, amzDate: "20130524T000000Z")
        #expect(sha256Hex(Array(signed.canonicalRequest.utf8)) == "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca")
        #expect(signed.signature == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
    }

    @Test func s3ListObjects() {
        let signed = s3Signer.sign(method: "GET", encodedPath: "/", query: [("prefix", "J"), ("max-keys", "2")],
                                   headers: [s3Host, ("x-amz-content-sha256", emptyPayloadSHA256),
                                             ("x-amz-date", "20130524T000000Z")],
                                   payloadHash: emptyPayloadSHA256, amzDate: "20130524T000000Z")
        #expect(sha256Hex(Array(signed.canonicalRequest.utf8)) == "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7")
        #expect(signed.signature == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    @Test func everyInputChangesTheSignature() {
        func signature(_ signer: SigV4Signer, method: String = "GET", path: String = "/k", query: [(String, String)] = [],
                       headers: [(String, String)] = [("host", "h")], payload: String = emptyPayloadSHA256,
                       date: String = "20130524T000000Z") -> String {
            signer.sign(method: method, encodedPath: path, query: query, headers: headers, payloadHash: payload, amzDate: date).signature
        }
        let base = signature(s3Signer)
        let other = SigV4Signer(credentials: S3Credentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "other"),
                                region: "us-east-1")
        let otherRegion = SigV4Signer(credentials: s3Signer.credentials, region: "eu-west-1")
        let variants = [signature(other), signature(otherRegion), signature(s3Signer, method: "PUT"),
                        signature(s3Signer, path: "/l"), signature(s3Signer, query: [("a", "b")]),
                        signature(s3Signer, headers: [("host", "g")]), signature(s3Signer, payload: "UNSIGNED-PAYLOAD"),
                        signature(s3Signer, date: "20130525T000000Z")]
        for variant in variants { #expect(variant != base) }
    }

    @Test func canonicalHeaderValuesAreTrimmedAndFolded() {
        #expect(SigV4Signer.canonicalHeaderValue("  a   b \t c  ") == "a b c")
    }

    @Test func uriEncoding() {
        #expect(uriEncode("a b/c~d$", encodeSlash: false) == "a%20b/c~d%24")
        #expect(uriEncode("a/b", encodeSlash: true) == "a%2Fb")
        #expect(uriEncode("é+=&?*", encodeSlash: true) == "%C3%A9%2B%3D%26%3F%2A")
        #expect(uriEncode("AZaz09-_.~", encodeSlash: true) == "AZaz09-_.~")
        #expect(uriDecode("a%20b%2Fc%C3%A9%zz") == "a b/cé%zz")
    }

    @Test func amzDates() {
        #expect(amzDate(secondsSinceEpoch: 0) == "19700101T000000Z")
        #expect(amzDate(secondsSinceEpoch: 1_369_353_600) == "20130524T000000Z")
        #expect(amzDate(secondsSinceEpoch: 1_440_938_160) == "20150830T123600Z")
        #expect(amzDate(secondsSinceEpoch: 1_709_251_199) == "20240229T235959Z")
        #expect(amzDate(secondsSinceEpoch: 4_102_444_800) == "21000101T000000Z")
    }
}

@Suite struct XMLTests {
    @Test func listBucketResult() throws {
        let xml = """
            <?xml version="1.0" encoding="UTF-8"?>
            <!-- a comment -->
            <ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
              <Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>
              <Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>
              <Contents><Key>p/a &amp; b&lt;c&gt; &#233;&#xE9; &quot;q&apos;</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>
                <ETag>&quot;abc&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>
              <Contents><Key><![CDATA[p/<raw>]]></Key><Size>0</Size><Owner/></Contents>
              <CommonPrefixes><Prefix>p/dir/</Prefix></CommonPrefixes>
              <NextContinuationToken>tok/en+=</NextContinuationToken>
            </ListBucketResult>
            """
        let root = try XMLTree.parse(Array(xml.utf8))
        #expect(root.name == "ListBucketResult")
        let contents = root.children("Contents")
        #expect(contents.count == 2)
        #expect(contents[0]["Key"] == "p/a & b<c> éé \"q'")
        #expect(contents[0]["ETag"] == "\"abc\"")
        #expect(contents[0]["Size"] == "12")
        #expect(contents[1]["Key"] == "p/<raw>")
        #expect(contents[1].child("Owner") != nil)
        #expect(root.children("CommonPrefixes").map { $0["Prefix"] } == ["p/dir/"])
        #expect(root["NextContinuationToken"] == "tok/en+=")
        #expect(root["IsTruncated"] == "true")
    }

    @Test func keysKeepTheirSpaces() throws {
        let root = try XMLTree.parse(Array("<R><Key>  two  spaces  </Key></R>".utf8))
        #expect(root["Key"] == "  two  spaces  ")
    }

    @Test func errorDocument() throws {
        let body = Array("<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>k</Key><RequestId>42</RequestId></Error>".utf8)
        let error = try #require(S3ErrorDocument(body))
        #expect(error.code == "NoSuchKey")
        #expect(error.message == "The specified key does not exist.")
        #expect(error.requestID == "42")
        #expect(S3ErrorDocument(Array("<html>".utf8)) == nil)
        #expect(S3ErrorDocument([]) == nil)
    }

    @Test(arguments: ["", "<a>", "<a></b>", "<a>x &bogus; y</a>", "<a>&</a>", "text", "<a/><b/>", "<a></a>junk<b/>",
                      "<a b=\"unterminated></a>", "</a>", "<a><!-- unterminated </a>"])
    func malformedDocumentsAreRefused(_ text: String) {
        #expect(throws: GedsError.self) { try XMLTree.parse(Array(text.utf8)) }
    }

    @Test func deepNestingIsRefused() {
        let text = String(repeating: "<a>", count: 100) + String(repeating: "</a>", count: 100)
        #expect(throws: GedsError.self) { try XMLTree.parse(Array(text.utf8)) }
    }

    @Test func escaping() {
        #expect(xmlEscape("a&<>\"'b") == "a&amp;&lt;&gt;&quot;&apos;b")
    }
}

@Suite struct ConfigurationTests {
    @Test func credentialsNeverShowTheirSecrets() {
        let credentials = S3Credentials(accessKeyID: "AKIAEXAMPLEKEY123456", secretAccessKey: testSecret, sessionToken: testToken)
        let texts = [credentials.description, credentials.debugDescription, "\(credentials)", String(reflecting: credentials),
                     String(describing: S3Configuration(endpoint: "http://h:1", credentials: credentials)),
                     { var out = ""; dump(credentials, to: &out); return out }()]
        for text in texts {
            #expect(!text.contains(testSecret), "\(text)")
            #expect(!text.contains(testToken), "\(text)")
            #expect(!text.contains("AKIAEXAMPLEKEY123456"), "\(text)")
        }
        #expect(credentials.description.contains("3456"))
        #expect(credentials.redacting("x \(testSecret) y \(testToken)") == "x <redacted> y <redacted>")
    }

    @Test func credentialsFromTheEnvironment() throws {
        let environment = ["AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token",
                           "AWS_REGION": "eu-west-3"]
        #expect(S3Credentials(environment: environment) == S3Credentials(accessKeyID: "id", secretAccessKey: "secret", sessionToken: "token"))
        #expect(S3Credentials(environment: ["AWS_ACCESS_KEY_ID": "id"]) == nil)
        #expect(S3Credentials(environment: ["AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": ""]) == nil)
        let configuration = try S3Configuration.fromEnvironment(endpoint: "http://127.0.0.1:9000/", environment: environment)
        #expect(configuration.region == "eu-west-3")
        #expect(configuration.endpoint == "http://127.0.0.1:9000")
        let fallback = try S3Configuration.fromEnvironment(endpoint: "http://h", environment: [
            "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "ap-south-1"])
        #expect(fallback.region == "ap-south-1")
        #expect(fallback.credentials.sessionToken == nil)
    }

    @Test func credentialsFromAFile() throws {
        let path = "/tmp/geds-s3-credentials-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(path) }
        let text = """
            # comment
            [default]
            aws_access_key_id = DEFAULTID
            aws_secret_access_key = defaultsecret

            [profile work]
            aws_access_key_id=WORKID
            aws_secret_access_key=worksecret
            aws_session_token = worktoken
            """
        let file = fopen(path, "w")
        fputs(text, file)
        fclose(file)
        #expect(try S3Credentials(credentialsFile: path) == S3Credentials(accessKeyID: "DEFAULTID", secretAccessKey: "defaultsecret"))
        #expect(try S3Credentials(credentialsFile: path, profile: "work")
            == S3Credentials(accessKeyID: "WORKID", secretAccessKey: "worksecret", sessionToken: "worktoken"))
        #expect(throws: GedsError.self) { try S3Credentials(credentialsFile: path, profile: "missing") }
        let resolved = try S3Credentials.resolve(environment: ["AWS_SHARED_CREDENTIALS_FILE": path, "AWS_PROFILE": "work"])
        #expect(resolved.accessKeyID == "WORKID")
        let error = #expect(throws: GedsError.self) { try S3Credentials.resolve(environment: ["HOME": "/nonexistent"]) }
        #expect(error?.message.contains("AWS_ACCESS_KEY_ID") == true)
    }

    @Test func bucketAddresses() throws {
        let address = try S3BucketAddress(parsing: "http://127.0.0.1:9000/data/run1/")
        #expect(address == S3BucketAddress(endpoint: "http://127.0.0.1:9000", bucket: "data", prefix: "run1/"))
        #expect(address.s3Key(for: "x/y") == "run1/x/y")
        #expect(try S3BucketAddress(parsing: "https://s3.example.com/b") == S3BucketAddress(endpoint: "https://s3.example.com", bucket: "b"))
        for bad in ["127.0.0.1:9000/b", "http://127.0.0.1:9000", "http://127.0.0.1:9000/", "ftp://h/b"] {
            #expect(throws: GedsError.self, "\(bad)") { try S3BucketAddress(parsing: bad) }
        }
    }

    @Test func endpointsWithAPathAreRefused() {
        for bad in ["127.0.0.1:9000", "http://h:1/bucket", "http://", "http://user:pw@h"] {
            #expect(throws: GedsError.self, "\(bad)") {
                try S3Client(S3Configuration(endpoint: bad, credentials: S3Credentials(accessKeyID: "a", secretAccessKey: "b")))
            }
        }
    }

    @Test func backoffStaysWithinItsBounds() {
        let policy = S3RetryPolicy(maxAttempts: 6, baseDelayMilliseconds: 100, maxDelayMilliseconds: 1000)
        for _ in 0..<100 {
            #expect((50...100).contains(policy.delayMilliseconds(after: 1)))
            #expect((100...200).contains(policy.delayMilliseconds(after: 2)))
            #expect((400...800).contains(policy.delayMilliseconds(after: 4)))
            #expect((500...1000).contains(policy.delayMilliseconds(after: 5)))
            #expect((500...1000).contains(policy.delayMilliseconds(after: 60)))
        }
        #expect(policy.worstCaseBackoffMilliseconds == 100 + 200 + 400 + 800 + 1000)
    }

    @Test func partSizes() throws {
        let client = try S3Client(S3Configuration(endpoint: "http://127.0.0.1:1", credentials: S3Credentials(accessKeyID: "a", secretAccessKey: "b"),
                                                  partSize: 8 << 20))
        #expect(client.partSize(forLength: 100 << 20) == 8 << 20)
        let huge: UInt64 = 1 << 40  // 1 TiB needs parts above 8 MiB to stay within 10,000
        let size = client.partSize(forLength: huge)
        #expect(size * 10_000 >= huge && size % (1 << 20) == 0)
        let tiny = try S3Client(S3Configuration(endpoint: "http://127.0.0.1:1", credentials: S3Credentials(accessKeyID: "a", secretAccessKey: "b"),
                                                partSize: 1 << 20))
        #expect(tiny.partSize(forLength: 100 << 20) == 5 << 20)
    }
}
