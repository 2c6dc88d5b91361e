import ArgumentParser
import GedsCore
import GedsMDS
import Logging

@main
struct GedsMDSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "geds-mds", abstract: "The GEDS metadata service: buckets, objects, locations and node leases.")

    @Option(help: "Address to listen on, HOST:PORT.")
    var listen: String = "127.0.0.1:4381"

    @Option(name: .customLong("lease-ms"), help: "A node that sends no heartbeat for this long is declared dead.")
    var leaseMilliseconds: UInt64 = 5000

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String = "info"

    func run() async throws {
        var logger = Logger(label: "geds-mds")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let server: MetadataServer
        do {
            server = try await MetadataServer.start(listen: try Endpoint(parsing: listen),
                                                        leaseMilliseconds: leaseMilliseconds, logger: logger)
            printLine("geds-mds listening on \(server.localAddress)")
        } catch {
            printError("geds-mds: \(GedsError.wrapping(error).message)")
            throw ExitCode(1)
        }
        while true { try await Task.sleep(for: .seconds(3600)) }
        _ = server
    }
}
