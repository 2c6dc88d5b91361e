import ArgumentParser
import GedsCore
import GedsMDS
import Logging

@main
struct GedsMDSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "geds-mds", abstract: "The GEDS metadata service: buckets, objects, locations and node leases.",
        version: "geds-mds \(GedsVersion.release)")

    @Option(help: "Address to listen on, HOST:PORT.")
    var listen: String = "127.0.0.1:4381"

    @Option(name: .customLong("rdma-listen"),
            help: "Also serve clients over RDMA send/receive on HOST:PORT (HOST: an address of an RDMA device).")
    var rdmaListen: String?

    @Option(name: .customLong("lease-ms"), help: "A node that sends no heartbeat for this long is declared dead.")
    var leaseMilliseconds: UInt64 = 5000

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String = "info"

    func run() async throws {
        var logger = Logger(label: "geds-mds")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        // Said before anything starts, so that a machine without RDMA gets one line naming the option.
        if rdmaListen != nil, let reason = RDMAMetadata.unavailableReason {
            printError("geds-mds: --rdma-listen: \(reason)")
            throw ExitCode(1)
        }
        let server: MetadataServer
        do {
            server = try await MetadataServer.start(listen: try Endpoint(parsing: listen),
                                                    rdmaListen: try rdmaListen.map { (text) throws(GedsError) in try Endpoint(parsing: text) },
                                                    leaseMilliseconds: leaseMilliseconds, logger: logger)
            printLine("geds-mds listening on \(server.localAddress)")
            if let rdma = server.rdma { printLine("geds-mds listening for RDMA on \(rdma.endpoint)") }
        } catch {
            printError("geds-mds: \(GedsError.wrapping(error).message)")
            throw ExitCode(1)
        }
        while true { try await Task.sleep(for: .seconds(3600)) }
        _ = server
    }
}
