import Foundation
import GEDS
import GedsCore
import GedsMDS
import GedsS3
import Logging

/// S3 read-through, in-process: a real `moto_server` on loopback holds one object; GEDS (an MDS and a node in
/// this process) reads it through its bucket's S3 store into tier 0, and boto3's `download_fileobj` reads the
/// same object into a /dev/shm file in the same run.
enum S3Bench {
    static let accessKey = "AKIAGEDSPERF00000000"
    static let secretKey = "geds-perf-secret"

    static func measure(size: Int, repetitions: Int) async throws -> [Measurement] {
        let python = try References.find("python3").mapError { $0 as any Error }.get()
        let port = Int.random(in: 20_000...29_999)
        let endpoint = "http://127.0.0.1:\(port)"
        let moto = try Child.spawn(python, ["-c", "from moto.server import main; main(['-H', '127.0.0.1', '-p', '\(port)'])"],
                                   captureOutput: false)
        defer { moto.terminate() }
        setenv("AWS_ACCESS_KEY_ID", accessKey, 1)
        setenv("AWS_SECRET_ACCESS_KEY", secretKey, 1)
        let samples = size >= 256 << 20 ? min(repetitions, 3) : repetitions
        var logger = Logger(label: "geds-perf")
        logger.logLevel = .warning
        // Quiet: its first attempts fail while moto_server starts.
        var quiet = logger
        quiet.logLevel = .critical
        let s3 = try S3Client(S3Configuration(endpoint: endpoint, credentials: S3Credentials(accessKeyID: accessKey, secretAccessKey: secretKey),
                                              logger: quiet))
        var started = false
        for _ in 0..<300 where !started {
            started = (try? await s3.createBucket("geds-perf")) != nil
            if !started { try await Task.sleep(for: .milliseconds(100)) }
        }
        guard started else { throw GedsError(.peerUnreachable, "moto_server did not start on \(endpoint) (pip install 'moto[server]')") }

        let object = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
        defer { object.deallocate() }
        var random = SystemRandomNumberGenerator()
        for index in stride(from: 0, to: size, by: 8) { object.storeBytes(of: random.next() as UInt64, toByteOffset: index, as: UInt64.self) }
        progress("s3: uploading \(Report.formatSize(size)) to moto_server at \(endpoint)")
        try await s3.upload(bucket: "geds-perf", key: "object", from: UnsafeRawBufferPointer(object))

        let mds = try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0),
                                                 token: try DeploymentToken.resolve(tokenFile: nil),
                                                 tls: try TransportSecurity.resolve(), logger: logger)
        let folder = "/dev/shm/geds-perf-s3-\(getpid())"
        Cleanup.folders.withLock { $0.append(folder) }
        defer { Cleanup.folders.withLock { $0.removeAll { $0 == folder } } }
        let geds = try await GEDS.connect(NodeConfiguration(mds: mds.localAddress, tier0Directory: folder,
                                                            removeTier0OnShutdown: true, name: "perf-s3-\(getpid())"),
                                          logger: logger)
        var seconds: [Double] = []
        var writeSeconds: [Double] = []
        do {
            try await geds.setBucketStorage("perf", BucketStorage(endpoint: endpoint, bucket: "geds-perf", persistency: .ephemeral))
            progress("s3: \(samples) + 1 warm-up read-throughs of \(Report.formatSize(size)) into tier 0")
            for run in 0...samples {
                let start = DispatchTime.now().uptimeNanoseconds
                let view = try await geds.open(bucket: "perf", key: "object").view()
                let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                let equal = view.withBytes { bytes in bytes.count == size && memcmp(bytes.baseAddress!, object.baseAddress!, size) == 0 }
                guard equal else { throw GedsError(.internal, "s3: the bytes read through differ from those uploaded") }
                if run > 0 { seconds.append(elapsed) }
                // Deleting removes it from GEDS and S3: put back into S3 only, so the next read goes to S3 again.
                try await geds.delete(bucket: "perf", key: "object")
                try await s3.upload(bucket: "geds-perf", key: "object", from: UnsafeRawBufferPointer(object))
            }
            progress("s3: \(samples) + 1 warm-up write-through puts of \(Report.formatSize(size))")
            for run in 0...samples {
                let start = DispatchTime.now().uptimeNanoseconds
                let writer = try await geds.create(bucket: "perf", key: "written", persistency: .writeThrough)
                try writer.write(UnsafeRawBufferPointer(object), at: 0)
                try await writer.seal()  // returns once the object is in S3
                if run > 0 { writeSeconds.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9) }
                try await geds.delete(bucket: "perf", key: "written")
            }
        } catch {
            await geds.close()
            await mds.close()
            throw error
        }
        await geds.close()
        await mds.close()
        let rates = Bench.rates(bytes: size, seconds)
        let note = "GEDS read-through of an object only in S3 (moto_server on loopback): open + view(), one ranged GET into a tier-0 file"
        let writeRates = Bench.rates(bytes: size, writeSeconds)
        let writeNote = "GEDS write-through put: create + write from memory into tier 0 + seal, which returns once the object is in S3 "
            + "(\(size >= 64 << 20 ? "multipart, 16 MiB parts, 4 at a time" : "one PUT"), from the tier-0 file)"
        // boto3 uploads from a /dev/shm file holding the same bytes.
        let source = "/dev/shm/geds-perf-boto3-source-\(getpid())"
        let wrote = FileManager.default.createFile(atPath: source, contents: Data(UnsafeRawBufferPointer(object)))
        defer { unlink(source) }
        func boto3(_ call: String, file: String, mode: String) -> Result<Double, References.Missing> {
            wrote || mode == "wb" ? S3Bench.boto3(python: python, endpoint: endpoint, size: size, repetitions: samples,
                                                  call: call, file: file, mode: mode)
                : .failure(References.Missing(reason: "cannot write \(source)"))
        }
        let target = "/dev/shm/geds-perf-boto3-\(getpid())"
        defer { unlink(target) }
        return [
            .bandwidth(.s3, transport: .tcp, size: size, rates: rates,
                       reference: Reference("boto3 get_object, body streamed into a /dev/shm file, same object",
                                            boto3(getObject, file: target, mode: "wb")),
                       note: note),
            .bandwidth(.s3, transport: .tcp, size: size, rates: rates,
                       reference: Reference("boto3 download_fileobj (default: 8 MiB ranged GETs, 10 threads) into /dev/shm, same object",
                                            boto3(downloadFileobj, file: target, mode: "wb")),
                       note: note),
            .bandwidth(.s3, transport: .tcp, size: size, rates: writeRates,
                       reference: Reference("boto3 put_object from a /dev/shm file (one PUT), same bytes",
                                            boto3(putObject, file: source, mode: "rb")),
                       note: writeNote),
            .bandwidth(.s3, transport: .tcp, size: size, rates: writeRates,
                       reference: Reference("boto3 upload_fileobj (default: 8 MiB parts, 10 threads) from a /dev/shm file, same bytes",
                                            boto3(uploadFileobj, file: source, mode: "rb")),
                       note: writeNote),
        ]
    }

    static let getObject = "shutil.copyfileobj(s3.get_object(Bucket=\"geds-perf\", Key=\"object\")[\"Body\"], file, 8 << 20)"
    static let downloadFileobj = "s3.download_fileobj(\"geds-perf\", \"object\", file)"
    static let putObject = "s3.put_object(Bucket=\"geds-perf\", Key=\"boto3-put\", Body=file)"
    static let uploadFileobj = "s3.upload_fileobj(file, \"geds-perf\", \"boto3-upload\")"

    /// boto3 moving the object (`call`, with `file` open as `mode`: reading into it, or uploading from it), in
    /// Gbit/s: the median of `repetitions` runs after one untimed one, timed inside Python (no interpreter start).
    static func boto3(python: String, endpoint: String, size: Int, repetitions: Int,
                      call: String, file: String, mode: String) -> Result<Double, References.Missing> {
        let script = """
            import shutil, time, boto3
            s3 = boto3.client("s3", endpoint_url="\(endpoint)", region_name="us-east-1",
                              aws_access_key_id="\(accessKey)", aws_secret_access_key="\(secretKey)")
            for run in range(\(repetitions + 1)):
                start = time.perf_counter()
                with open("\(file)", "\(mode)") as file:
                    \(call)
                elapsed = time.perf_counter() - start
                if run > 0:
                    print(elapsed)
            """
        progress("reference: boto3 (\(call)) of \(Report.formatSize(size)) (\(repetitions) + 1 warm-up)")
        guard let (output, succeeded) = try? Child.run(python, ["-c", script]), succeeded else {
            return .failure(References.Missing(reason: "boto3 failed (pip install boto3)"))
        }
        let rates = output.split(separator: "\n").compactMap { Double($0) }.map { Double(size) * 8 / $0 / 1e9 }
        guard !rates.isEmpty else { return .failure(References.Missing(reason: "boto3 printed no timing")) }
        return .success(Statistics.median(rates))
    }
}
