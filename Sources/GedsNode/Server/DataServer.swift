import GedsCarrier
import GedsCore
import GedsMetadataRDMA
import GedsTCP
import GedsTier0
import GedsTier1
import GedsVerbs
import GedsWire
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Serves peers: blob bytes (sendfile from the tier-0 file) and relocation requests.
final class NodeService: RequestService {
    let node = Mutex<Node?>(nil)

    func respond(to request: Request) -> Response {
        guard let node = node.withLock({ $0 }) else {
            return .reply(.failure(GedsError(.internal, "node is starting")))
        }
        switch request {
        case .readBlob(let blob, let offset, let length):
            guard node.holdsInTier1(blob) else { return serve(blob, offset: offset, length: length, from: node) }
            // Spilled: promoted back into tier 0 first (off the event loop), then sent from there.
            return .later { [self] () async -> Response in
                do throws(GedsError) {
                    try await node.promote(blob)
                    return serve(blob, offset: offset, length: length, from: node)
                } catch where error.code == .outOfSpace {
                    // Both tiers full: send from the tier-1 file where it is rather than fail the read.
                    return serve(blob, offset: offset, length: length, from: node, tier1: true)
                } catch {
                    return .reply(.failure(error))
                }
            }
        case .pullBlob(let blob, let size, let source):
            return .deferred { () async -> Reply in
                do throws(GedsError) {
                    try await node.pull(blob, size: size, from: source)
                    return .ok
                } catch {
                    return .failure(error)
                }
            }
        case .persistBlob, .flush:
            return node.respondToPersistence(request)
        default:
            return .reply(.failure(GedsError(.invalidArgument, "a node serves only object bytes; ask the MDS")))
        }
    }

    /// Sends a range of a tier-0 (or, when it cannot be promoted, tier-1) blob with sendfile. Not a view: the blob
    /// may be spilled or deleted meanwhile, and the open descriptor keeps sending its bytes.
    private func serve(_ blob: BlobID, offset: UInt64, length: UInt64, from node: Node, tier1: Bool = false) -> Response {
        do {
            let (descriptor, start, size) = tier1 ? try node.openTier1ForReading(blob) : try node.tier0.openForReading(blob)
            guard offset <= size, length <= size - offset else {
                close(descriptor)
                return .reply(.failure(GedsError(.invalidArgument, "range \(offset)+\(length) is outside blob \(blob.fileName) of \(size) bytes")))
            }
            node.touched(blob)
            return .file(FileStream(descriptor: descriptor, offset: start + offset, length: length))
        } catch {
            return .reply(.failure(error))
        }
    }
}
