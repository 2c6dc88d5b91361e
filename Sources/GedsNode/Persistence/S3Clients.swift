import GedsCore
import GedsS3
import GedsWire
import Logging
import Synchronization

/// A node's S3 clients, one per endpoint and region, made on first use; credentials from the node's own environment
/// or credentials file, never from the MDS.
final class S3Clients: Sendable {
    private let clients = Mutex<[String: S3Client]>([:])
    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    func client(for object: S3ObjectReference) throws(GedsError) -> S3Client {
        let name = object.endpoint + " " + object.region
        if let client = clients.withLock({ $0[name] }) { return client }
        var configuration = try S3Configuration.fromEnvironment(endpoint: object.endpoint)
        configuration.region = object.region
        configuration.logger = logger
        let client = try S3Client(configuration)
        return clients.withLock { clients in
            if let existing = clients[name] { return existing }
            clients[name] = client
            return client
        }
    }

    func shutdown() async {
        for client in clients.withLock({ Array($0.values) }) { await client.shutdown() }
    }
}
