import Foundation
import GEDS
import GedsCore
import Logging

/// The processes a measurement needs (an MDS and an owner node), started here unless --mds names a
/// running MDS, and stopped when the run ends.
final class Cluster {
    let mds: Endpoint
    /// The MDS's RDMA send/receive listener, when RDMA is measured.
    private(set) var mdsRDMA: Endpoint?
    let ownerName: String
    /// The owner gedsd's process (its CPU time is measured while it serves), when started here.
    private(set) var ownerPID: pid_t?
    private var children: [Child] = []
    /// Holds the tier-0 folders of the owner and of the reader (this process).
    let scratch: String
    private let binaries: String
    private var mounted = false

    /// `rdmaOwnerAddress`: the owner serves on that RDMA device's address, and the MDS listens for RDMA there too.
    /// `ownerArguments`: more gedsd options for the owner (tier capacities, a tier-1 folder); `mdsArguments`: more
    /// geds-mds options (its inline limit). `scratch`: a folder of its own for each cluster that runs beside another.
    init(existingMDS: String?, binaries: String, ownerName: String?, hugePages: Bool, rdmaOwnerAddress: String? = nil,
         ownerArguments: [String] = [], mdsArguments: [String] = [], scratch: String = "/dev/shm/geds-perf-\(getpid())") throws {
        mds = try existingMDS.map { try Endpoint(parsing: $0) } ?? Endpoint(host: "127.0.0.1", port: try Cluster.freePort())
        self.ownerName = existingMDS == nil ? "perf-owner" : ownerName ?? ""
        self.binaries = binaries
        self.scratch = scratch
        do {
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            Cleanup.folders.withLock { $0.append(scratch) }
            if hugePages {
                // A tmpfs of its own with transparent huge pages for files at least 2 MiB long: page
                // allocation, mapping and freeing cost a 512th of what 4 KiB pages cost.
                guard mount("tmpfs", scratch, "tmpfs", 0, "huge=within_size,mode=0755") == 0 else {
                    throw GedsError.io("cannot mount a huge-page tmpfs at \(scratch) (needs root; or use --tier0-pages small)", errno: errno)
                }
                mounted = true
            }
            if existingMDS == nil {
                let rdmaListen = rdmaOwnerAddress.map { ["--rdma-listen", "\($0):0"] } ?? []
                let mdsOutput = try launch(binaries + "/geds-mds", ["--listen", mds.description, "--log-level", "warning"] + rdmaListen + mdsArguments,
                                           until: rdmaOwnerAddress == nil ? "listening" : "listening for RDMA on ")
                if rdmaOwnerAddress != nil, let line = mdsOutput.split(separator: "\n").first(where: { $0.contains("listening for RDMA on ") }) {
                    mdsRDMA = try Endpoint(parsing: String(line.split(separator: " ").last ?? ""))
                }
                ownerPID = try launchOwner(binaries, listen: "\(rdmaOwnerAddress ?? "127.0.0.1"):0", extra: ownerArguments)
            }
        } catch {
            stop()  // neither an MDS without its node nor a scratch folder may outlive this failure
            throw error
        }
        progress(existingMDS == nil
            ? "cluster: started geds-mds at \(mds) and gedsd \(self.ownerName) (host perf-owner-host); this process reads as host perf-reader-host"
            : "cluster: the running MDS at \(mds), owner \(self.ownerName.isEmpty ? "any gedsd" : self.ownerName); this process reads as host perf-reader-host")
    }

    /// The MDS this cluster started (nil when it uses a running one).
    var mdsPID: pid_t? { ownerPID == nil ? nil : children.first?.pid }

    /// This process's own node, on the reader's (simulated) host, over TCP, logging warnings only.
    func connectReader(named name: String) async throws -> GEDS {
        var logger = Logger(label: "geds-perf")
        logger.logLevel = .warning
        return try await GEDS.connect(NodeConfiguration(
            mds: mds, tier0Directory: scratch + "/" + name, name: "\(name)-\(getpid())", hostID: "perf-reader-host",
            publishCachedCopies: false), logger: logger)
    }

    /// Starts one more gedsd on a (simulated) host of its own; returns its process id.
    func startNode(name: String, hostID: String) throws -> pid_t {
        try launch(binaries + "/gedsd", ["--mds", mds.description, "--listen", "127.0.0.1:0", "--tier0", scratch + "/" + name,
                                         "--name", name, "--host-id", hostID, "--log-level", "warning"])
        return children.last!.pid
    }

    private func launchOwner(_ binaries: String, listen: String, extra: [String]) throws -> pid_t {
        try launch(binaries + "/gedsd", ["--mds", mds.description, "--listen", listen, "--tier0", scratch + "/owner",
                                         "--name", ownerName, "--host-id", "perf-owner-host", "--log-level", "warning"] + extra)
        return children.last!.pid
    }

    /// Starts a child and waits for its line containing `until` (the "listening" line, as the command-line
    /// contract promises); returns its output so far.
    @discardableResult
    private func launch(_ path: String, _ arguments: [String], until marker: String = "listening") throws -> String {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw GedsError(.invalidArgument, "\(path) not found: build with swift build -c release, or pass --bin")
        }
        let child = try Child.spawn(path, arguments, captureOutput: true)
        children.append(child)
        let output = child.read(until: { $0.contains(marker) && $0.hasSuffix("\n") })
        guard output.contains(marker) else {
            throw GedsError(.internal, "\(path) exited before it was listening")
        }
        return output
    }

    /// The CPU seconds (user + system) process `pid` has used so far, from /proc; nil when it cannot be read.
    static func cpuSeconds(of pid: pid_t) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let afterName = stat.range(of: ") ", options: .backwards) else { return nil }
        // Fields after "(comm) ": state is field 3, utime 14 and stime 15 of the whole line.
        let fields = stat[afterName.upperBound...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw GedsError(.io, "no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    func stop() {
        for child in children.reversed() { child.terminate() }
        children = []
        if mounted { umount(scratch) }
        try? FileManager.default.removeItem(atPath: scratch)
        Cleanup.folders.withLock { $0.removeAll { $0 == scratch } }
    }
}
