import Foundation

/// The machine a run was taken on, written beside its figures: figures mean nothing without it.
struct Machine: Encodable {
    let cpu: String
    /// Logical CPUs online.
    let cores: Int
    let memory_bytes: UInt64
    let kernel: String
    let os: String
    /// What the measured bytes crossed.
    let device: String
    let tier0: String
    /// Each requested transport: "measured", or "absent: why".
    let transports: [String: String]
    /// Each reference tool: its path, or "missing (…)".
    let references: [String: String]
    let command: String
    let started_at: String

    static func describe(device: String, tier0: String, transports: [Transport], rdma: RDMAPair?,
                         references: [String: String]) -> Machine {
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }?
            .split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: name.release) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        let os = (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("PRETTY_NAME=") }?
            .dropFirst("PRETTY_NAME=".count).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) ?? "unknown"
        return Machine(
            cpu: cpu, cores: ProcessInfo.processInfo.activeProcessorCount,
            memory_bytes: ProcessInfo.processInfo.physicalMemory, kernel: "Linux \(release)", os: os,
            device: device, tier0: tier0,
            transports: Dictionary(uniqueKeysWithValues: transports.map { ($0.rawValue, $0.absence(rdma: rdma).map { "absent: \($0)" } ?? "measured") }),
            references: references,
            command: CommandLine.arguments.joined(separator: " "),
            started_at: ISO8601DateFormatter().string(from: Date()))
    }

    var summary: String {
        "\(cpu), \(cores) cores, \(memory_bytes >> 30) GiB, \(kernel), \(device)"
    }

    static func loopbackDevice() -> String {
        let mtu = (try? String(contentsOfFile: "/sys/class/net/lo/mtu", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        return "loopback (lo, MTU \(mtu)): the MDS, the owner gedsd and this reader on one machine"
    }

    /// The RDMA devices the kernel knows (mlx5_0, rxe0, …).
    static func rdmaDevices() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/infiniband")) ?? []).sorted()
    }
}
