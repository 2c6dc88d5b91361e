import Foundation

/// One figure: what was measured, how fast, and against which reference. The stored properties are the
/// JSON keys and CSV columns, in this order (see `fields`); `Report.units` says what each unit is.
struct Measurement {
    var workload: String
    /// "tcp" or "rdma" for what crossed a transport; "none" for in-process and local figures.
    var transport: String
    /// The size of each object moved (0 where no object bytes move).
    var size_bytes: Int
    /// The number of objects in the store, for mds-scale.
    var objects: Int? = nil
    var gbit_per_s: Double? = nil
    var ops_per_s: Double? = nil
    var p50_us: Double? = nil
    var p99_us: Double? = nil
    var p999_us: Double? = nil
    /// The lowest and highest timed sample: in Gbit/s for bandwidth figures, else in µs (latency figures).
    var spread_min: Double? = nil
    var spread_max: Double? = nil
    /// Timed samples behind the figure, warm-up excluded.
    var samples: Int? = nil
    var bytes_per_object: Double? = nil
    /// CPU time (user + system) of the owner gedsd while it served the timed reads, per GiB served.
    var owner_cpu_ms_per_gib: Double? = nil
    var reference: String? = nil
    var reference_value: Double? = nil
    /// GEDS relative to the reference, oriented so that above 1 means GEDS does better.
    var ratio: Double? = nil
    var note: String? = nil

    /// A bandwidth figure from per-repetition rates in Gbit/s: the median, with min and max as spread.
    /// `transport` nil: no transport carried the bytes (local and in-process figures).
    static func bandwidth(_ workload: Workload, transport: Transport?, size: Int, rates: [Double],
                          reference: Reference?, note: String) -> Measurement {
        let median = Statistics.median(rates)
        var result = Measurement(workload: workload.rawValue, transport: transport?.rawValue ?? "none", size_bytes: size,
                                 gbit_per_s: median, spread_min: rates.min(), spread_max: rates.max(),
                                 samples: rates.count, note: note)
        if let reference { result.compare(with: reference, higherIsBetter: true, value: median) }
        return result
    }

    /// A latency figure from per-operation times in µs: p50, p99 and p99.9.
    static func latency(_ workload: Workload, transport: Transport?, size: Int, microseconds: [Double],
                        reference: Reference?, note: String) -> Measurement {
        let sorted = microseconds.sorted()
        let p50 = Statistics.percentile(sorted, 0.5)
        var result = Measurement(workload: workload.rawValue, transport: transport?.rawValue ?? "none", size_bytes: size,
                                 p50_us: p50, p99_us: Statistics.percentile(sorted, 0.99),
                                 p999_us: Statistics.percentile(sorted, 0.999), spread_min: sorted.first,
                                 spread_max: sorted.last, samples: sorted.count, note: note)
        if let reference { result.compare(with: reference, higherIsBetter: false, value: p50) }
        return result
    }

    /// Records the reference beside this figure; the ratio is oriented so that above 1 means GEDS does better.
    mutating func compare(with reference: Reference, higherIsBetter: Bool, value: Double) {
        self.reference = reference.label
        reference_value = reference.value
        ratio = reference.value.map { higherIsBetter ? value / $0 : $0 / value }
    }
}

/// A field's value as it is written out: JSON null and an empty CSV cell where there is none.
enum Cell: Encodable {
    case int(Int), double(Double), string(String), null

    init(_ value: Any) {
        // Mirror hands optionals over boxed; a cast sees through the box (nil fails every cast).
        switch value {
        case let value as Int: self = .int(value)
        case let value as Double: self = value.isFinite ? .double(value) : .null
        case let value as String: self = .string(value)
        default: self = .null
        }
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .int(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }
}

extension Measurement: Encodable {
    /// Every stored property in declaration order, nil ones included: each record has the same keys and
    /// the CSV header cannot drift from the JSON.
    var fields: [(name: String, value: Cell)] {
        Mirror(reflecting: self).children.map { ($0.label!, Cell($0.value)) }
    }

    static var columns: [String] { Measurement(workload: "", transport: "", size_bytes: 0).fields.map(\.name) }

    private struct Key: CodingKey {
        let stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        for (name, value) in fields { try container.encode(value, forKey: Key(stringValue: name)) }
    }
}

enum Statistics {
    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.down)))]
    }

    /// The middle value, or the mean of the two middle ones: with few repetitions the upper one would flatter.
    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return .nan }
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}
