import Foundation
import GEDS
import GedsCore

/// The processes a measurement needs (an MDS and an owner node), started here unless --mds names a
/// running MDS, and stopped when the run ends.
final class Cluster {
    let mds: Endpoint
    let ownerName: String
    private var children: [Child] = []
    private let scratch: String

    init(existingMDS: String?, binaries: String, ownerName: String?) throws {
        scratch = "/dev/shm/geds-perf-\(getpid())"
        if let existingMDS {
            mds = try Endpoint(parsing: existingMDS)
            self.ownerName = ownerName ?? ""
            return
        }
        let port = try Cluster.freePort()
        mds = Endpoint(host: "127.0.0.1", port: port)
        self.ownerName = "perf-owner"
        try launch(binaries + "/geds-mds", ["--listen", mds.description, "--log-level", "warning"])
        try launch(binaries + "/gedsd", ["--mds", mds.description, "--listen", "127.0.0.1:0", "--tier0", scratch + "/owner",
                                         "--name", self.ownerName, "--host-id", "perf-owner-host", "--log-level", "warning"])
    }

    private func launch(_ path: String, _ arguments: [String]) throws {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw GedsError(.invalidArgument, "\(path) not found: build with swift build -c release, or pass --bin")
        }
        let child = try Child.spawn(path, arguments, captureOutput: true)
        children.append(child)
        // Wait for the "listening" line, as the command-line contract promises.
        guard child.read(until: { $0.contains("listening") }).contains("listening") else {
            throw GedsError(.internal, "\(path) exited before it was listening")
        }
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
        try? FileManager.default.removeItem(atPath: scratch)
    }
}
