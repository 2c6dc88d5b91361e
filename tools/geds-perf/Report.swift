import Foundation
import GedsCore

/// The outputs of a run: the table on stdout, JSON, CSV. Units are stated once, here.
enum Report {
    static let units: [String: String] = [
        "size_bytes": "bytes; the table writes KiB, MiB, GiB for 2^10, 2^20, 2^30 bytes",
        "gbit_per_s": "gigabits per second of object bytes: 1 Gbit/s = 10^9 bit/s (not GiB/s, not GB/s)",
        "ops_per_s": "operations per second",
        "p50_us, p99_us, p999_us": "microseconds: percentiles of individually timed operations",
        "spread_min, spread_max": "lowest and highest timed sample: in Gbit/s where gbit_per_s is set, else in microseconds",
        "samples": "timed samples behind the figure; warm-up runs are excluded",
        "bytes_per_object": "bytes of resident memory per object",
        "owner_cpu_ms_per_gib": "milliseconds of the owner gedsd's CPU time (user + system, from /proc) per GiB it served, for remote reads of 256 MiB and more",
        "reference_value": "the reference's figure, in the unit of the GEDS figure it is compared with",
        "ratio": "GEDS relative to the reference, above 1 means GEDS does better: GEDS/reference for rates, reference/GEDS for latencies",
    ]

    static func formatSize(_ bytes: Int) -> String {
        if bytes >= 1 << 30, bytes % (1 << 30) == 0 { return "\(bytes >> 30) GiB" }
        if bytes >= 1 << 20, bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
        if bytes >= 1 << 10, bytes % (1 << 10) == 0 { return "\(bytes >> 10) KiB" }
        return "\(bytes) B"
    }

    // MARK: Table

    static func table(_ results: [Measurement], machine: Machine) {
        func number(_ value: Double?) -> String {
            guard let value, value.isFinite else { return "-" }
            return String(format: abs(value) >= 1000 ? "%.0f" : abs(value) >= 10 ? "%.1f" : "%.2f", value)
        }
        var rows = [["workload", "transport", "size", "Gbit/s", "ops/s", "p50 µs", "p99 µs", "spread (min–max)",
                     "reference", "ref value", "ratio"]]
        var notes: [Int: String] = [:]
        for m in results {
            let spreadUnit = m.gbit_per_s != nil ? " Gbit/s" : " µs"
            let spread = m.spread_min.map { "\(number($0))–\(number(m.spread_max))\(spreadUnit)" } ?? "-"
            let size = m.objects.map { "\($0.formatted()) objects" } ?? (m.size_bytes > 0 ? formatSize(m.size_bytes) : "-")
            rows.append([m.workload, m.transport, size, number(m.gbit_per_s), number(m.ops_per_s), number(m.p50_us),
                         number(m.p99_us), spread, m.reference ?? "-", number(m.reference_value),
                         m.ratio.map { String(format: "%.2fx", $0) } ?? "-"])
            notes[rows.count - 1] = m.note
        }
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max()! }
        var lines: [String] = []
        for (index, row) in rows.enumerated() {
            lines.append(zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces))
            if let note = notes[index] { lines.append("    \(note)") }
        }
        lines.append("")
        lines.append("Units: Gbit/s = 10^9 bit/s of object bytes; sizes in KiB/MiB/GiB (2^10, 2^20, 2^30 bytes); latencies in µs;")
        lines.append("       figures are medians (bandwidth, over repetitions) or p50/p99 (per operation), warm-up excluded;")
        lines.append("       ratio above 1 means GEDS does better than the reference.")
        for (transport, state) in machine.transports.sorted(by: { $0.key < $1.key }) {
            lines.append("Transport \(transport): \(state)")
        }
        for (tool, path) in machine.references.sorted(by: { $0.key < $1.key }) where path.hasPrefix("missing") {
            lines.append("Reference \(tool): \(path)")
        }
        lines.append("Machine: \(machine.cpu), \(machine.cores) cores, \(machine.memory_bytes >> 30) GiB, \(machine.kernel), \(machine.os)")
        lines.append("Device: \(machine.device); tier 0: \(machine.tier0)")
        printLine(lines.joined(separator: "\n"))
    }

    // MARK: Files

    struct Document: Encodable {
        let machine: Machine
        let units: [String: String]
        let measurements: [Measurement]
    }

    static func writeJSON(_ results: [Measurement], machine: Machine, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try encoder.encode(Document(machine: machine, units: units, measurements: results))
            .write(to: URL(fileURLWithPath: path), options: .atomic)
        progress("wrote \(path)")
    }

    static func writeCSV(_ results: [Measurement], to path: String) throws {
        func cell(_ value: Cell) -> String {
            switch value {
            case .int(let value): return String(value)
            case .double(let value): return String(value)
            case .null: return ""
            case .string(let text):
                guard text.contains(where: { ",\"\n\r".contains($0) }) else { return text }
                return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            }
        }
        let lines = [Measurement.columns.joined(separator: ",")]
            + results.map { $0.fields.map { cell($0.value) }.joined(separator: ",") }
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        progress("wrote \(path)")
    }
}
