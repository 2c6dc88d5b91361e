import Foundation
import GedsCore
import GedsS3
import GedsTestSupport
import Testing

/// Faults with real processes: a moto server killed and restarted, a server answering 5xx, wrong credentials.
@Suite struct S3FaultTests {
    @Test func aStoppedServerIsAClearErrorWithinTheRetryBudgetThenARestartSucceeds() async throws {
        let server = try ServerProcess.moto()
        let retry = S3RetryPolicy(maxAttempts: 4, baseDelayMilliseconds: 100, maxDelayMilliseconds: 400)
        let logs = LogRecorder()
        let s3 = try S3Client(testConfiguration(server.endpoint, retry: retry, logger: logs.logger))
        let bucket = uniqueBucket("restart")
        try await s3.createBucket(bucket)
        try await s3.putObject(bucket: bucket, key: "before", bytes: [1, 2, 3])

        server.stop()
        let started = Date()
        let error = await gedsError { _ = try await s3.getObject(bucket: bucket, key: "before") }
        let elapsed = Date().timeIntervalSince(started)
        #expect(error?.code == .peerUnreachable)
        let message = error?.message ?? ""
        #expect(message.contains("GetObject \(bucket)/before at \(server.endpoint)"), "\(message)")
        #expect(message.contains("gave up after 4 attempts"), "\(message)")
        #expect(message.lowercased().contains("connect"), "\(message)")
        // Three pauses of at most 100, 200 and 400 ms, plus connection attempts refused at once.
        // Generous slack: the point is that it gives up (no hang), not how fast a loaded machine is.
        #expect(elapsed < Double(retry.worstCaseBackoffMilliseconds) / 1000 + 15, "\(elapsed) s")
        #expect(logs.all.filter { $0.contains("retrying") }.count == 3, "\(logs.all)")

        // A request that starts while the server is down succeeds once it is back within the retry budget.
        let patient = try S3Client(testConfiguration(server.endpoint,
                                                     retry: S3RetryPolicy(maxAttempts: 30, baseDelayMilliseconds: 100,
                                                                          maxDelayMilliseconds: 500)))
        let attempt = Task { try await patient.createBucket(bucket) }
        try await Task.sleep(nanoseconds: 300_000_000)
        let restarted = try ServerProcess.moto(port: server.port)
        try await attempt.value  // moto keeps its state in memory: the bucket is new again
        try await patient.putObject(bucket: bucket, key: "after", bytes: [4, 5])
        #expect(try await s3.getObject(bucket: bucket, key: "after") == [4, 5])
        restarted.stop()
    }

    @Test func serviceUnavailableIsRetriedWithBackoff() async throws {
        let server = try ServerProcess.faulty(status: 503, failures: 2)
        defer { server.stop() }
        let logs = LogRecorder()
        let s3 = try S3Client(testConfiguration(server.endpoint, retry: S3RetryPolicy(maxAttempts: 4, baseDelayMilliseconds: 100),
                                                logger: logs.logger))
        let started = Date()
        try await s3.deleteObject(bucket: "b", key: "k")
        let elapsed = Date().timeIntervalSince(started)
        #expect(server.log.components(separatedBy: "request ").count - 1 == 3, "two 503s, then success: \(server.log)")
        #expect(elapsed >= 0.1, "backed off (at least 50 + 100 ms): \(elapsed)")
        let warnings = logs.all.filter { $0.contains("retrying") }
        #expect(warnings.count == 2)
        #expect(warnings.first?.contains("503 ServiceUnavailable: try later") == true, "\(warnings)")
    }

    @Test func persistentServerErrorsGiveUpWithTheLastAnswer() async throws {
        let server = try ServerProcess.faulty(status: 500, failures: 1000)
        defer { server.stop() }
        let s3 = try S3Client(testConfiguration(server.endpoint, retry: S3RetryPolicy(maxAttempts: 3, baseDelayMilliseconds: 10)))
        let error = await gedsError { try await s3.putObject(bucket: "b", key: "some/key", bytes: [1, 2, 3]) }
        #expect(error?.code == .io)
        let message = error?.message ?? ""
        #expect(message.contains("PutObject b/some/key"), "\(message)")
        #expect(message.contains("500 ServiceUnavailable: try later (request id r3)"), "\(message)")
        #expect(message.contains("gave up after 3 attempts"), "\(message)")
        #expect(server.log.components(separatedBy: "request ").count - 1 == 3)
        // HEAD answers carry no body: the status alone names the failure.
        let head = await gedsError { _ = try await s3.headObject(bucket: "b", key: "k") }
        #expect(head?.message.contains("HeadObject b/k") == true)
        #expect(head?.message.contains("500 Internal Server Error") == true, "\(head?.message ?? "")")
    }

    @Test func anInterruptedReadResumesWhereItStopped() async throws {
        let size = 3 << 20
        let expected = (0..<size).map { UInt8($0 % 251) }
        for range: Range<UInt64>? in [nil, 1000..<2_500_000] {
            let server = try ServerProcess.cutting(size: size, cutAfter: 1 << 20)
            defer { server.stop() }
            let s3 = try S3Client(testConfiguration(server.endpoint))
            let buffer = TestBuffer(count: size)
            defer { withExtendedLifetime(buffer) {} }
            let count = try await s3.getObject(bucket: "b", key: "k", range: range, into: buffer.mutable)
            let wanted = range.map { Int($0.lowerBound)..<Int($0.upperBound) } ?? 0..<size
            #expect(count == wanted.count)
            #expect(buffer.prefix(count) == Array(expected[wanted]))
            let requests = server.log.split(separator: "\n").filter { $0.hasPrefix("request") }
            #expect(requests.count == 2, "\(requests)")
            // The second request asks only for the rest, and only from the same version of the object.
            let resumeAt = wanted.lowerBound + (1 << 20)
            let end = range.map { "\($0.upperBound - 1)" } ?? ""
            #expect(requests.last == "request 2 range=bytes=\(resumeAt)-\(end) if-match=\"v1\"", "\(requests)")
        }
    }

    /// moto checks signatures once IAM authentication is switched on: our SigV4 must satisfy it with the right
    /// keys, and wrong keys must give a clear error naming the bucket and key, with no secret in any text.
    @Test func signaturesAreCheckedAndWrongCredentialsAreClearWithoutSecrets() async throws {
        let server = try ServerProcess.moto()
        defer { server.stop() }
        // IAM: a user with an access key allowed everything, created before authentication is switched on.
        let setup = Process()
        setup.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        setup.arguments = ["python3", "-c", """
            import boto3, json, urllib.request
            iam = boto3.client("iam", endpoint_url="\(server.endpoint)", region_name="us-east-1",
                               aws_access_key_id="AKIASETUP00000000000", aws_secret_access_key="setup")
            iam.create_user(UserName="geds")
            iam.put_user_policy(UserName="geds", PolicyName="all", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
            key = iam.create_access_key(UserName="geds")["AccessKey"]
            urllib.request.urlopen(urllib.request.Request("\(server.endpoint)/moto-api/reset-auth", data=b"0", method="POST",
                                                          headers={"Content-Type": "text/plain"})).read()
            print(key["AccessKeyId"], key["SecretAccessKey"])
            """]
        let output = Pipe()
        setup.standardOutput = output
        try setup.run()
        setup.waitUntilExit()
        #expect(setup.terminationStatus == 0)
        let words = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: " ")
        try #require(words.count == 2)
        let (keyID, secret) = (String(words[0]), words[1].trimmingCharacters(in: .whitespacesAndNewlines))

        func configuration(_ credentials: S3Credentials, logger: LogRecorder) -> S3Configuration {
            var configuration = testConfiguration(server.endpoint, logger: logger.logger)
            configuration.credentials = credentials
            return configuration
        }

        // The right keys: every kind of request passes moto's signature check.
        let logs = LogRecorder()
        let good = try S3Client(configuration(S3Credentials(accessKeyID: keyID, secretAccessKey: secret), logger: logs))
        let bucket = uniqueBucket("auth")
        try await good.createBucket(bucket)
        // (moto's checker rebuilds the URL its own way and so refuses even boto3's signatures for keys with
        // `+ * ( ) ü`, or a query value with a space or a slash (a delimiter); those encodings are covered by
        // AWS's vectors in SigV4Tests.)
        try await good.putObject(bucket: bucket, key: "a b/c d", bytes: pattern(10_000), metadata: ["x": "1"])
        #expect(try await good.getObject(bucket: bucket, key: "a b/c d") == pattern(10_000))
        #expect(try await good.listObjects(bucket: bucket, prefix: "a", maxKeys: 1).objects.map(\.key) == ["a b/c d"])
        let big = pattern(11 << 20)
        let bigBuffer = TestBuffer(big)
        defer { withExtendedLifetime(bigBuffer) {} }
        try await good.upload(bucket: bucket, key: "big", from: bigBuffer.readable)
        #expect(try await good.headObject(bucket: bucket, key: "big").size == UInt64(big.count))

        // A wrong secret, and an unknown key id, each with a session token that must not leak either.
        let cases: [(S3Credentials, String)] = [
            (S3Credentials(accessKeyID: keyID, secretAccessKey: testSecret, sessionToken: nil), "SignatureDoesNotMatch"),
            (S3Credentials(accessKeyID: "AKIANOSUCHKEY0000000", secretAccessKey: testSecret, sessionToken: testToken),
             "InvalidAccessKeyId"),
        ]
        for (credentials, expected) in cases {
            let s3 = try S3Client(configuration(credentials, logger: logs))
            let errors = [
                await gedsError { _ = try await s3.getObject(bucket: bucket, key: "a b/c d") },
                await gedsError { try await s3.putObject(bucket: bucket, key: "new", bytes: [1]) },
                await gedsError { _ = try await s3.listObjects(bucket: bucket) },
                await gedsError { _ = try await s3.headObject(bucket: bucket, key: "big") },
            ]
            for error in errors {
                let message = try #require(error).message
                #expect(error?.code == .invalidArgument, "\(message)")
                #expect(message.contains(bucket), "\(message)")
                #expect(message.contains("403"), "\(message)")
                #expect(!message.contains(testSecret) && !message.contains(testToken) && !message.contains(secret), "\(message)")
                #expect(!"\(error!)".contains(testSecret) && !String(reflecting: error!).contains(testSecret))
            }
            #expect(errors[0]?.message.contains(expected) == true, "\(errors[0]?.message ?? "")")
            #expect(errors[0]?.message.contains("\(bucket)/a b/c d") == true)
            #expect(!"\(s3.configuration)".contains(testSecret))
        }
        for line in logs.all {
            #expect(!line.contains(testSecret) && !line.contains(testToken) && !line.contains(secret), "\(line)")
        }
    }
}
