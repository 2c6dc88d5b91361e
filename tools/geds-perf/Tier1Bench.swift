import Foundation
import GedsCore
import GedsTier1

/// Tier 1 on its own, in-process: sequential write and read of one object through `Tier1Store` (O_DIRECT),
/// beside fio with the same block size, size and folder in the same run.
enum Tier1Bench {
    /// Measures in a fresh folder `geds-perf-tier1-PID` under `parent`, removed afterwards.
    static func measure(parent: String, size: Int, repetitions: Int) async throws -> [Measurement] {
        let folder = parent + "/geds-perf-tier1-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        Cleanup.folders.withLock { $0.append(folder) }
        defer {
            try? FileManager.default.removeItem(atPath: folder)
            Cleanup.folders.withLock { $0.removeAll { $0 == folder } }
        }
        let samples = size >= 256 << 20 ? min(repetitions, 3) : repetitions

        // Blocks of 1 MiB, as fio's --bs=1M; capacity for the one object (written anew each repetition).
        let store = try Tier1Store(Tier1Configuration(
            directory: folder, capacity: UInt64(size) * 2 + (16 << 20), directIO: .auto, chunkSize: 1 << 20,
            log: { line in progress("tier1: \(line)") }))
        let direct = store.usesDirectIO
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 1 << 20)
        defer { buffer.deallocate() }
        // 1 MiB of random bytes, repeated (as Bench fills objects): incompressible to any device that compresses.
        var random = SystemRandomNumberGenerator()
        let pattern = min(size, 1 << 20)
        for index in 0..<pattern { buffer[index] = random.next() }
        var filled = pattern
        while filled < size {
            let count = min(filled, size - filled)
            UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<(filled + count)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            filled += count
        }
        let source = UnsafeRawBufferPointer(buffer)
        progress("tier1: \(samples) × write + read of \(Report.formatSize(size)) in \(folder)\(direct ? "" : " (no O_DIRECT here: buffered)")")
        var blob: BlobID = 1
        let writeSeconds: [Double]
        let readSeconds: [Double]
        do {
            writeSeconds = try await Bench.timed(samples: samples) {
                _ = try await store.remove(blob)
                blob += 1
                try await store.write(blob, from: source)
            }
            readSeconds = try await Bench.timed(samples: samples) {
                let got = try await store.read(blob, into: buffer)
                precondition(got == size)
            }
            _ = try await store.remove(blob)
        } catch {
            await store.shutdown()
            throw error
        }
        await store.shutdown()

        let how = direct ? "O_DIRECT" : "buffered (the folder refuses O_DIRECT)"
        let fioWrite = References.fio(folder: folder, mode: "write", size: size, repetitions: samples)
        let fioRead = References.fio(folder: folder, mode: "read", size: size, repetitions: samples)
        try? FileManager.default.removeItem(atPath: folder + "/fio-reference")
        let label = { (mode: String) in "fio --direct=1 --bs=1M --rw=\(mode) --ioengine=psync, same folder" }
        return [
            .bandwidth(.tier1, transport: nil, size: size, rates: Bench.rates(bytes: size, writeSeconds),
                       reference: Reference(label("write"), fioWrite),
                       note: "Tier1Store sequential write of one object, \(how), in \(folder)"),
            .bandwidth(.tier1, transport: nil, size: size, rates: Bench.rates(bytes: size, readSeconds),
                       reference: Reference(label("read"), fioRead),
                       note: "Tier1Store sequential read of one object (checksum checked), \(how), in \(folder)"),
        ]
    }
}

extension References {
    /// fio sequential `mode` ("write" or "read") of `size` bytes in 1 MiB direct I/O in `folder`, in Gbit/s:
    /// the median of `repetitions` runs (after one untimed run, as the GEDS figure has a warm-up). Run "write"
    /// first: "read" reads the file it leaves.
    static func fio(folder: String, mode: String, size: Int, repetitions: Int) -> Result<Double, Missing> {
        Result {
            let fio = try find("fio").get()
            progress("reference: fio --rw=\(mode) of \(Report.formatSize(size)) (\(repetitions) + 1 warm-up)")
            let arguments = ["--name=geds-perf", "--filename=\(folder)/fio-reference", "--direct=1", "--bs=1M",
                             "--rw=\(mode)", "--size=\(size)", "--ioengine=psync", "--output-format=json"]
            var results: [Double] = []
            var failure = "fio gave no \(mode) figure"
            for run in 0...repetitions {
                // Each write run makes a new file, as each GEDS write makes a new object's file (a rewrite in
                // place would skip allocating blocks); read runs read the file the last write left.
                if mode == "write" { unlink(folder + "/fio-reference") }
                let (output, succeeded) = try Child.run(fio, arguments)
                // fio may print lines before the JSON document.
                let json = output.firstIndex(of: "{").map { String(output[$0...]) } ?? ""
                guard succeeded,
                      let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
                      let jobs = object["jobs"] as? [[String: Any]], let job = jobs.first,
                      let figures = job[mode] as? [String: Any],
                      let bytesPerSecond = (figures["bw_bytes"] as? NSNumber)?.doubleValue, bytesPerSecond > 0 else {
                    if !succeeded { failure = "fio --rw=\(mode) failed in \(folder) (does the file system take O_DIRECT?)" }
                    continue
                }
                if run > 0 { results.append(bytesPerSecond * 8 / 1e9) }
            }
            guard !results.isEmpty else { throw Missing(reason: failure) }
            return Statistics.median(results)
        }.mapError { $0 as? Missing ?? Missing(reason: "\($0)") }
    }
}
