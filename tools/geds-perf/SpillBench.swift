import Foundation
import GEDS
import GedsCore
import GedsNode
import Logging
import Synchronization

/// Spilling under load: an MDS and one gedsd whose tier 0 is capped (`--tier0-capacity`) and spills to a tier-1
/// folder on the machine's disk; this process reads a hot set of objects from it over TCP again and again,
/// alone first, then while it writes many times tier 0's capacity to the same gedsd, which must spill them.
/// The reader's throughput before and during the spill is the figure; the writer's is reported beside it.
enum SpillBench {
    struct Sizes {
        /// The gedsd's tier-0 capacity.
        var tier0: Int
        /// Bytes the writer writes during the spill phase.
        var written: Int
        /// Size of every object, read or written.
        var object: Int
        /// Bytes of the hot set the reader reads round and round.
        var hot: Int
        /// How long the reader reads alone first.
        var baselineSeconds: Double
    }

    static func measure(binaries: String, parent: String, sizes: Sizes) async throws -> [Measurement] {
        let folder = parent + "/geds-perf-spill-\(getpid())"
        Cleanup.folders.withLock { $0.append(folder) }
        defer {
            try? FileManager.default.removeItem(atPath: folder)
            Cleanup.folders.withLock { $0.removeAll { $0 == folder } }
        }
        // Room in tier 1 for everything written, so a spill never stops for lack of it.
        let tier1Capacity = sizes.written + sizes.hot + sizes.tier0
        let cluster = try Cluster(existingMDS: nil, binaries: binaries, ownerName: nil, hugePages: false,
                                  ownerArguments: ["--tier0-capacity", "\(sizes.tier0)", "--tier1", folder,
                                                   "--tier1-capacity", "\(tier1Capacity)"])
        defer { cluster.stop() }
        let geds = try await cluster.connectReader(named: "perf-spill-reader")
        do {
            let results = try await run(geds: geds, ownerName: cluster.ownerName, folder: folder, sizes: sizes)
            await geds.close()
            return results
        } catch {
            await geds.close()
            throw error
        }
    }

    private static func run(geds: GEDS, ownerName: String, folder: String, sizes: Sizes) async throws -> [Measurement] {
        let setup = try await Bench.Setup(geds: geds, ownerName: ownerName, repetitions: 1)
        let bucket = setup.bucket
        let hotKeys = (0..<max(1, sizes.hot / sizes.object)).map { "hot-\($0)" }
        progress("spill: placing the hot set (\(hotKeys.count) × \(Report.formatSize(sizes.object))) on \(ownerName), "
                 + "tier 0 \(Report.formatSize(sizes.tier0)), tier 1 in \(folder)")
        for key in hotKeys { _ = try await setup.place(key, size: sizes.object) }

        progress("spill: reader alone for \(sizes.baselineSeconds) s")
        let alone = StopFlag()
        let baselineReader = Task { try await readRoundAndRound(geds, bucket: bucket, keys: hotKeys, size: sizes.object, until: alone) }
        try await Task.sleep(for: .seconds(sizes.baselineSeconds))
        alone.stop()
        let before = try await baselineReader.value

        let writes = max(1, sizes.written / sizes.object)
        progress("spill: writing \(Report.formatSize(writes * sizes.object)) as \(writes) objects while the reader reads")
        let spilling = StopFlag()
        let reader = Task { try await readRoundAndRound(geds, bucket: bucket, keys: hotKeys, size: sizes.object, until: spilling) }
        let writeStart = DispatchTime.now().uptimeNanoseconds
        do {
            for index in 0..<writes { _ = try await setup.place("spill-\(index)", size: sizes.object) }
        } catch {
            spilling.stop()
            _ = try? await reader.value
            throw error
        }
        let writeSeconds = Double(DispatchTime.now().uptimeNanoseconds - writeStart) / 1e9
        spilling.stop()
        let during = try await reader.value

        // Where things ended: bytes in the tier-1 folder, and whether the reader's hot set stayed in tier 0.
        let inTier1 = folderBytes(folder)
        var hotSpilled = 0
        for key in hotKeys where try await geds.stat(bucket: bucket, key: key).locations.contains(where: { $0.tier == .tier1 }) {
            hotSpilled += 1
        }
        // A figure of wrong bytes would be worthless: the hot set and the first and last objects written (the
        // first was spilled, if anything was) must read back as written.
        let checked = hotKeys + ["spill-0", "spill-\(writes - 1)"]
        try await checkReadBack(geds, setup: setup, keys: checked, size: sizes.object)
        try await setup.finish()

        let setting = "gedsd with a \(Report.formatSize(sizes.tier0)) tier 0 and its tier 1 in \(folder)"
        let hotSet = "\(hotKeys.count) object(s) of \(Report.formatSize(sizes.object))"
        let beforeFigure = before.measurement(size: sizes.object,
                                              note: "reader alone: \(before.reads) reads of a hot set of \(hotSet) from a \(setting)")
        var duringFigure = during.measurement(size: sizes.object,
                                              note: "reader while \(Report.formatSize(writes * sizes.object)) were written to the same gedsd and spilled: "
                                                  + "\(during.reads) reads; \(hotSpilled) of the hot set's objects ended in tier 1")
        duringFigure.compare(with: Reference("the same reader before the spill", .success(before.gigabitsPerSecond)),
                             higherIsBetter: true, value: during.gigabitsPerSecond)
        let writer = Measurement(workload: Workload.spill.rawValue, transport: Transport.tcp.rawValue, size_bytes: sizes.object,
                                 gbit_per_s: Double(writes * sizes.object) * 8 / writeSeconds / 1e9, samples: writes,
                                 note: "writer: \(writes) objects written here and handed to the \(setting), beside the reader; "
                                     + "\(Report.formatSize(inTier1)) in tier 1 at the end; \(Set(checked).count) objects read back as written")
        progress(String(format: "spill: reader %.1f Gbit/s alone, %.1f during the spill; writer %.1f Gbit/s; %@ in tier 1",
                        before.gigabitsPerSecond, during.gigabitsPerSecond, writer.gbit_per_s ?? 0, Report.formatSize(inTier1)))
        return [beforeFigure, duringFigure, writer]
    }

    private static func checkReadBack(_ geds: GEDS, setup: Bench.Setup, keys: [String], size: Int) async throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
        defer { buffer.deallocate() }
        for key in Set(keys) {
            let got = try await geds.read(bucket: setup.bucket, key: key, into: buffer)
            guard got == size, setup.holdsPattern(UnsafeRawBufferPointer(buffer)) else {
                throw GedsError(.internal, "spill: \(setup.bucket)/\(key) read back \(got) bytes that differ from those written")
            }
        }
    }

    /// What a reader did: its reads' durations and the bytes they moved, over the whole time it ran.
    struct ReadLog: Sendable {
        var seconds: [Double] = []
        var bytes = 0
        var elapsed = 0.0

        var reads: Int { seconds.count }
        var gigabitsPerSecond: Double { elapsed > 0 ? Double(bytes) * 8 / elapsed / 1e9 : 0 }

        /// The throughput over the whole run (waits included), with the slowest and fastest single read as spread
        /// and the reads' p50 and p99 times (a spill shows as stalls in the tail).
        func measurement(size: Int, note: String) -> Measurement {
            let rates = seconds.map { Double(size) * 8 / $0 / 1e9 }
            let microseconds = seconds.map { $0 * 1e6 }.sorted()
            return Measurement(workload: Workload.spill.rawValue, transport: Transport.tcp.rawValue, size_bytes: size,
                               gbit_per_s: gigabitsPerSecond, p50_us: Statistics.percentile(microseconds, 0.5),
                               p99_us: Statistics.percentile(microseconds, 0.99), spread_min: rates.min(),
                               spread_max: rates.max(), samples: reads, note: note)
        }
    }

    /// Reads `keys` whole into one buffer, in turn, until `flag` is stopped (at least one read).
    private static func readRoundAndRound(_ geds: GEDS, bucket: String, keys: [String], size: Int,
                                          until flag: StopFlag) async throws -> ReadLog {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
        defer { buffer.deallocate() }
        var log = ReadLog()
        let start = DispatchTime.now().uptimeNanoseconds
        var index = 0
        repeat {
            let readStart = DispatchTime.now().uptimeNanoseconds
            let got = try await geds.read(bucket: bucket, key: keys[index % keys.count], into: buffer)
            guard got == size else { throw GedsError(.internal, "read \(got) of \(size) bytes") }
            log.seconds.append(Double(DispatchTime.now().uptimeNanoseconds - readStart) / 1e9)
            log.bytes += got
            index += 1
        } while !flag.isStopped
        log.elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return log
    }

    private static func folderBytes(_ folder: String) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.reduce(0) { total, name in
            let size = (try? FileManager.default.attributesOfItem(atPath: folder + "/" + name)[.size] as? Int) ?? nil
            return total + (size ?? 0)
        }
    }
}

/// Tells a reader task when to stop.
final class StopFlag: Sendable {
    private let stopped = Atomic<Bool>(false)
    func stop() { stopped.store(true, ordering: .relaxed) }
    var isStopped: Bool { stopped.load(ordering: .relaxed) }
}
