import GedsCarrier
import GedsCore
import GedsTCP
import GedsWire
import Logging
import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A node's data server: serves peers blob bytes (sendfile from the tier-0 file), pulls of objects handed to this
/// node, and persistence requests. It listens before the node's other parts exist (its port goes into the RDMA
/// and MDS registrations), so they are handed to it once made (`serve`); until then it answers "starting".
final class DataServer: Sendable {
    private let frames: FrameServer
    private let service: PeerService

    /// Where it listens (the port chosen when `listen` asked for any).
    var localAddress: Endpoint { frames.localAddress }

    /// `authentication`: the deployment's token each peer must prove (none: open); `tls`: peers connect over TLS.
    static func start(listen: Endpoint, group: any EventLoopGroup, logger: Logger,
                      authentication: ServerAuthentication, tls: TransportSecurity?) async throws(GedsError) -> DataServer {
        let service = PeerService()
        do {
            return DataServer(frames: try await FrameServer.start(listen: listen, service: service, group: group, logger: logger,
                                                                  authentication: authentication, tls: tls),
                              service: service)
        } catch {
            throw GedsError.wrapping(error)
        }
    }

    private init(frames: FrameServer, service: PeerService) {
        self.frames = frames
        self.service = service
    }

    /// Starts answering with the node's parts.
    func serve(tiers: TierManager, readPath: ReadPath, persistence: PersistenceAgent) {
        service.parts.withLock { $0 = PeerService.Parts(tiers: tiers, readPath: readPath, persistence: persistence) }
    }

    func close() async {
        await frames.close()
    }
}

/// The requests peers send a node, answered by the part each concerns.
private final class PeerService: RequestService {
    struct Parts {
        let tiers: TierManager
        let readPath: ReadPath
        let persistence: PersistenceAgent
    }

    let parts = Mutex<Parts?>(nil)

    func respond(to request: Request) -> Response {
        guard let parts = parts.withLock({ $0 }) else {
            return .reply(.failure(GedsError(.internal, "node is starting")))
        }
        let tiers = parts.tiers
        switch request {
        case .readBlob(let blob, let offset, let length):
            guard tiers.holdsInTier1(blob) else { return serve(blob, offset: offset, length: length, from: tiers) }
            // Spilled: promoted back into tier 0 first (off the event loop), then sent from there.
            return .later { [self] () async -> Response in
                do throws(GedsError) {
                    try await tiers.promote(blob)
                    return serve(blob, offset: offset, length: length, from: tiers)
                } catch where error.code == .outOfSpace {
                    // Both tiers full: send from the tier-1 file where it is rather than fail the read.
                    return serve(blob, offset: offset, length: length, from: tiers, tier1: true)
                } catch {
                    return .reply(.failure(error))
                }
            }
        case .pullBlob(let blob, let size, let source):
            return .deferred { () async -> Reply in
                do throws(GedsError) {
                    try await parts.readPath.pull(blob, size: size, from: source)
                    return .ok
                } catch {
                    return .failure(error)
                }
            }
        case .persistBlob, .flush:
            return parts.persistence.respond(to: request)
        default:
            return .reply(.failure(GedsError(.invalidArgument, "a node serves only object bytes; ask the MDS")))
        }
    }

    /// Sends a range of a tier-0 (or, when it cannot be promoted, tier-1) blob with sendfile. Not a view: the blob
    /// may be spilled or deleted meanwhile, and the open descriptor keeps sending its bytes.
    private func serve(_ blob: BlobID, offset: UInt64, length: UInt64, from tiers: TierManager, tier1: Bool = false) -> Response {
        do {
            let (descriptor, start, size) = tier1 ? try tiers.openTier1ForReading(blob) : try tiers.tier0.openForReading(blob)
            guard offset <= size, length <= size - offset else {
                try? descriptor.close()
                return .reply(.failure(GedsError(.invalidArgument, "range \(offset)+\(length) is outside blob \(blob.fileName) of \(size) bytes")))
            }
            tiers.touched(blob)
            return .file(FileStream(descriptor: descriptor, offset: start + offset, length: length))
        } catch {
            return .reply(.failure(error))
        }
    }
}

extension ConnectionPool {
    /// Sends another node's data server a request it answers `ok` once done.
    func ask(_ peer: NodeInfo, _ request: Request, timeout: TimeAmount) async throws(GedsError) {
        let connection = try await connection(to: peer.tcp, peerName: "node \(peer.name)")
        let reply = try await connection.call(request, timeout: timeout)
        switch reply {
        case .ok: return
        case .failure(let error): throw error
        default: throw GedsError(.protocolViolation, "unexpected reply from node \(peer.name): \(reply)")
        }
    }
}
