import Foundation
import GedsCore
import GedsTier1

/// Tier 1 on its own, in-process: sequential write and read of one object through `Tier1Store` (O_DIRECT, its
/// default threads, stripes and chunks, as a node uses it), beside fio (1 MiB blocks) with the same size and
/// folder. The two take turns, sample by sample: this VM's disk drifts by a third within a minute, so a figure
/// measured a minute after its reference compares two different disks.
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

        // Capacity for the one object (written anew each repetition).
        let store = try Tier1Store(Tier1Configuration(
            directory: folder, capacity: UInt64(size) * 2 + (16 << 20), directIO: .auto,
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
        var writeSeconds: [Double] = []
        var readSeconds: [Double] = []
        var fioWrites: [Result<Double, References.Missing>] = []
        var fioReads: [Result<Double, References.Missing>] = []
        do {
            // Writes first (a read needs the files they leave), each mode warmed up once on both sides.
            for sample in 0...samples {
                // The last object's deletion is not timed, as fio's deletion of its file is not.
                _ = try await store.remove(blob)
                blob = blob.next
                writeSeconds += try await Bench.timed(warmups: 0, samples: 1) { try await store.write(blob, from: source) }
                fioWrites.append(References.fio(folder: folder, mode: "write", size: size, repetitions: 1, warmups: 0))
                if sample == 0 { writeSeconds = []; fioWrites = [] }
            }
            for sample in 0...samples {
                readSeconds += try await Bench.timed(warmups: 0, samples: 1) {
                    let got = try await store.read(blob, into: buffer)
                    precondition(got == size)
                }
                fioReads.append(References.fio(folder: folder, mode: "read", size: size, repetitions: 1, warmups: 0))
                if sample == 0 { readSeconds = []; fioReads = [] }
            }
            _ = try await store.remove(blob)
        } catch {
            await store.shutdown()
            throw error
        }
        await store.shutdown()

        let how = direct ? "O_DIRECT" : "buffered (the folder refuses O_DIRECT)"
        let fioWrite = References.median(fioWrites)
        let fioRead = References.median(fioReads)
        try? FileManager.default.removeItem(atPath: folder + "/fio-reference")
        let label = { (mode: String) in "fio --direct=1 --bs=1M --rw=\(mode) --ioengine=psync, same folder" }
        return [
            .bandwidth(.tier1, transport: nil, size: size, rates: Bench.rates(bytes: size, writeSeconds),
                       reference: Reference(label("write"), fioWrite),
                       note: "Tier1Store sequential write of one object, \(how), in \(folder), taking turns with fio"
                           + Tier1Bench.pairedRatios(Bench.rates(bytes: size, writeSeconds), fioWrites)),
            .bandwidth(.tier1, transport: nil, size: size, rates: Bench.rates(bytes: size, readSeconds),
                       reference: Reference(label("read"), fioRead),
                       note: "Tier1Store sequential read of one object (checksum checked), \(how), in \(folder), taking turns with fio"
                           + Tier1Bench.pairedRatios(Bench.rates(bytes: size, readSeconds), fioReads)),
        ]
    }

    /// Each GEDS sample over the fio run right after it, as "; paired ratios 0.91–1.12×" (empty without fio).
    static func pairedRatios(_ rates: [Double], _ references: [Result<Double, References.Missing>]) -> String {
        let ratios = zip(rates, references).compactMap { rate, reference in (try? reference.get()).map { rate / $0 } }
        guard let low = ratios.min(), let high = ratios.max() else { return "" }
        return String(format: "; paired ratios %.2f–%.2f×", low, high)
    }
}

extension References {
    /// The median of figures measured one at a time; missing when any is.
    static func median(_ figures: [Result<Double, Missing>]) -> Result<Double, Missing> {
        Result { Statistics.median(try figures.map { try $0.get() }) }.mapError { $0 as? Missing ?? Missing(reason: "\($0)") }
    }

    /// fio sequential `mode` ("write" or "read") of `size` bytes in 1 MiB direct I/O in `folder`, in Gbit/s:
    /// the median of `repetitions` runs (after `warmups` untimed ones, as the GEDS figure has a warm-up). Run
    /// "write" first: "read" reads the file it leaves.
    static func fio(folder: String, mode: String, size: Int, repetitions: Int, warmups: Int = 1) -> Result<Double, Missing> {
        Result {
            let fio = try find("fio").get()
            progress("reference: fio --rw=\(mode) of \(Report.formatSize(size)) (\(repetitions) + \(warmups) warm-up)")
            let arguments = ["--name=geds-perf", "--filename=\(folder)/fio-reference", "--direct=1", "--bs=1M",
                             "--rw=\(mode)", "--size=\(size)", "--ioengine=psync", "--output-format=json"]
            var results: [Double] = []
            var failure = "fio gave no \(mode) figure"
            for run in 0..<(warmups + repetitions) {
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
                if run >= warmups { results.append(bytesPerSecond * 8 / 1e9) }
            }
            guard !results.isEmpty else { throw Missing(reason: failure) }
            return Statistics.median(results)
        }.mapError { $0 as? Missing ?? Missing(reason: "\($0)") }
    }
}
