import Foundation

/// Bandwidth versus object size as an SVG drawn here (no plotting library): one line per GEDS workload
/// and transport, one per reference (a single figure such as iperf3's is a horizontal line), log2 x axis,
/// min–max whiskers. A PNG is the SVG converted by rsvg-convert or ImageMagick.
struct Plot {
    enum Format {
        case svg, png

        init?(path: String) {
            switch URL(fileURLWithPath: path).pathExtension.lowercased() {
            case "svg": self = .svg
            case "png": self = .png
            default: return nil
            }
        }
    }

    struct Point {
        let size: Int
        let gbit: Double
        var low: Double?
        var high: Double?
    }

    struct Series {
        let label: String
        var points: [Point]
        let reference: Bool
    }

    var series: [Series] = []
    /// References and transports without a figure in this run, named in the legend so their absence shows.
    var missing: [String] = []
    let subtitle: String

    init(_ results: [Measurement], machine: Machine) {
        let device = machine.device.split(separator: ":").first.map(String.init) ?? machine.device
        subtitle = "\(machine.cpu), \(machine.cores) cores, \(machine.kernel); \(device); \(machine.started_at)"
        let bandwidth = results.filter { $0.gbit_per_s != nil && $0.size_bytes > 0 }
        for m in bandwidth {
            let point = Point(size: m.size_bytes, gbit: m.gbit_per_s!, low: m.spread_min, high: m.spread_max)
            add(point, to: m.transport == "none" ? "GEDS \(m.workload), local (no transport)" : "GEDS \(m.workload) over \(m.transport)",
                reference: false)
            if let name = m.reference {
                if let value = m.reference_value {
                    add(Point(size: m.size_bytes, gbit: value), to: name, reference: true)
                } else if !missing.contains(name) {
                    missing.append(name)
                }
            }
        }
        for index in series.indices { series[index].points.sort { $0.size < $1.size } }
        for (transport, state) in machine.transports.sorted(by: { $0.key < $1.key }) where state != "measured" {
            missing.append("GEDS over \(transport) (\(state))")
        }
    }

    private mutating func add(_ point: Point, to label: String, reference: Bool) {
        if let index = series.firstIndex(where: { $0.label == label }) {
            if !series[index].points.contains(where: { $0.size == point.size }) { series[index].points.append(point) }
        } else {
            series.append(Series(label: label, points: [point], reference: reference))
        }
    }

    // MARK: Drawing

    static let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e"]

    func svg() -> String {
        let (width, left, top, plotWidth, plotHeight) = (900.0, 80.0, 70.0, 780.0, 400.0)
        let sizes = series.flatMap { $0.points.map(\.size) }
        var (minExponent, maxExponent) = (log2(Double(sizes.min() ?? 1)), log2(Double(sizes.max() ?? 1)))
        if maxExponent - minExponent < 1 { (minExponent, maxExponent) = (minExponent - 1, maxExponent + 1) }
        let highest = series.flatMap { $0.points.map { max($0.gbit, $0.high ?? 0) } }.max() ?? 1
        let yStep = Plot.niceCeiling(highest * 1.05 / 6)
        let yTop = max(yStep, (highest * 1.05 / yStep).rounded(.up) * yStep)
        func x(_ size: Int) -> Double { left + (log2(Double(size)) - minExponent) / (maxExponent - minExponent) * plotWidth }
        func y(_ gbit: Double) -> Double { top + plotHeight - gbit / yTop * plotHeight }
        let legendTop = top + plotHeight + 70
        let height = legendTop + Double(series.count + missing.count) * 20 + 20

        var svg = [
            #"<svg xmlns="http://www.w3.org/2000/svg" width="\#(Int(width))" height="\#(Int(height))" viewBox="0 0 \#(Int(width)) \#(Int(height))" font-family="sans-serif" font-size="12">"#,
            #"<rect width="100%" height="100%" fill="white"/>"#,
            text("GEDS read bandwidth versus object size", x: width / 2, y: 24, size: 16, anchor: "middle", weight: "bold"),
            text(subtitle, x: width / 2, y: 44, size: 11, anchor: "middle"),
        ]
        // Axes, grid and ticks: every power of two, or of four, sixteen… when they would crowd.
        let step = max(1, Int((maxExponent - minExponent) / 12) + 1)
        var exponent = Int(minExponent.rounded(.up))
        while Double(exponent) <= maxExponent {
            let position = x(1 << exponent)
            svg.append(line(position, top, position, top + plotHeight, color: "#e0e0e0"))
            svg.append(text(Report.formatSize(1 << exponent), x: position, y: top + plotHeight + 18, anchor: "middle"))
            exponent += step
        }
        for tick in stride(from: 0.0, through: yTop + yStep / 1000, by: yStep) {
            svg.append(line(left, y(tick), left + plotWidth, y(tick), color: "#e0e0e0"))
            svg.append(text(String(format: "%g", tick), x: left - 8, y: y(tick) + 4, anchor: "end"))
        }
        svg.append(#"<rect x="\#(left)" y="\#(top)" width="\#(plotWidth)" height="\#(plotHeight)" fill="none" stroke="black"/>"#)
        svg.append(text("object size (log2 scale; KiB, MiB, GiB = 2^10, 2^20, 2^30 bytes)",
                        x: left + plotWidth / 2, y: top + plotHeight + 42, size: 13, anchor: "middle"))
        svg.append(text("bandwidth (Gbit/s, 1 Gbit/s = 10^9 bit/s)", x: 22, y: top + plotHeight / 2, size: 13,
                        anchor: "middle", rotate: true))

        for (index, series) in series.enumerated() {
            let color = Plot.colors[index % Plot.colors.count]
            let dash = series.reference ? #" stroke-dasharray="8 5""# : ""
            // A reference with one figure for every size is a horizontal line across the whole axis.
            let flat = series.reference && Set(series.points.map(\.gbit)).count == 1
            let points = flat ? [(left, y(series.points[0].gbit)), (left + plotWidth, y(series.points[0].gbit))]
                               : series.points.map { (x($0.size), y($0.gbit)) }
            let path = points.map { "\(Plot.f($0.0)),\(Plot.f($0.1))" }.joined(separator: " ")
            svg.append(#"<polyline points="\#(path)" fill="none" stroke="\#(color)" stroke-width="2"\#(dash)/>"#)
            for point in series.points where !flat {
                svg.append(#"<circle cx="\#(Plot.f(x(point.size)))" cy="\#(Plot.f(y(point.gbit)))" r="3.5" fill="\#(color)"/>"#)
                if let low = point.low, let high = point.high {
                    let position = x(point.size)
                    svg.append(line(position, y(low), position, y(high), color: color))
                    svg.append(line(position - 4, y(low), position + 4, y(low), color: color))
                    svg.append(line(position - 4, y(high), position + 4, y(high), color: color))
                }
            }
            let entry = legendTop + Double(index) * 20
            svg.append(#"<line x1="\#(left)" y1="\#(entry - 4)" x2="\#(left + 30)" y2="\#(entry - 4)" stroke="\#(color)" stroke-width="2"\#(dash)/>"#)
            svg.append(text(series.label + (series.reference ? " (reference)" : ""), x: left + 40, y: entry))
        }
        for (index, name) in missing.enumerated() {
            svg.append(text("\(name): no figure, not drawn", x: left + 40, y: legendTop + Double(series.count + index) * 20,
                            color: "#808080"))
        }
        svg.append(text("Points: medians; whiskers: min–max over repetitions (warm-up excluded).",
                        x: left + plotWidth, y: top - 8, size: 11, anchor: "end", color: "#404040"))
        svg.append("</svg>")
        return svg.joined(separator: "\n") + "\n"
    }

    /// The smallest 1, 2 or 5 × 10^k at least `value`.
    static func niceCeiling(_ value: Double) -> Double {
        guard value > 0 else { return 1 }
        let magnitude = pow(10, (log10(value)).rounded(.down))
        return [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= value * 0.999_999 }!
    }

    private func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, color: String) -> String {
        #"<line x1="\#(Plot.f(x1))" y1="\#(Plot.f(y1))" x2="\#(Plot.f(x2))" y2="\#(Plot.f(y2))" stroke="\#(color)"/>"#
    }

    private func text(_ content: String, x: Double, y: Double, size: Int = 12, anchor: String = "start",
                      weight: String = "normal", color: String = "black", rotate: Bool = false) -> String {
        let escaped = content.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
        let transform = rotate ? #" transform="rotate(-90 \#(Plot.f(x)) \#(Plot.f(y)))""# : ""
        return #"<text x="\#(Plot.f(x))" y="\#(Plot.f(y))" font-size="\#(size)" text-anchor="\#(anchor)" font-weight="\#(weight)" fill="\#(color)"\#(transform)>"#
            + escaped + "</text>"
    }

    /// A coordinate with one decimal: enough for a screen, and short.
    static func f(_ value: Double) -> String { String(format: "%.1f", value) }

    // MARK: Files

    func write(to path: String) throws {
        let svg = Data(svg().utf8)
        if Format(path: path) == .png {
            let source = FileManager.default.temporaryDirectory.appendingPathComponent("geds-perf-\(getpid()).svg").path
            try svg.write(to: URL(fileURLWithPath: source))
            defer { try? FileManager.default.removeItem(atPath: source) }
            try Plot.convert(svg: source, to: path)
        } else {
            try svg.write(to: URL(fileURLWithPath: path), options: .atomic)
        }
        progress("wrote \(path)")
    }

    struct ConversionError: Error, CustomStringConvertible {
        let description: String
    }

    /// Converts an SVG file to PNG with the first converter that works; says what was tried when none does.
    static func convert(svg source: String, to destination: String) throws {
        var tried: [String] = []
        for (tool, arguments) in [("rsvg-convert", ["-f", "png", "-o", destination, source]),
                                  ("convert", [source, destination])] {
            guard let path = References.which(tool) else {
                tried.append("\(tool): not installed")
                continue
            }
            try? FileManager.default.removeItem(atPath: destination)
            let (_, succeeded) = try Child.run(path, arguments)
            let written = FileManager.default.contents(atPath: destination)?.starts(with: [0x89, 0x50, 0x4E, 0x47]) ?? false
            if succeeded, written { return }
            tried.append("\(tool): failed")
        }
        throw ConversionError(description: "cannot write a PNG: no working SVG-to-PNG converter (\(tried.joined(separator: "; "))). "
            + "Install librsvg2-bin (rsvg-convert) or imagemagick, or use --plot FILE.svg")
    }

    /// Fails at once when no converter can make a PNG, before any measuring.
    static func checkPNGConverter() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("geds-perf-probe-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let source = directory + "/probe.svg"
        try Data(#"<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>"#.utf8)
            .write(to: URL(fileURLWithPath: source))
        try convert(svg: source, to: directory + "/probe.png")
    }
}
