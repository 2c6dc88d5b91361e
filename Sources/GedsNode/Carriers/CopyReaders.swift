import GedsCarrier
import GedsCore
import GedsS3
import GedsTCP
import GedsWire
import NIOCore

/// The carriers a node reads copies over, and the choice among them, made once per read from the copy's location
/// and the peer's state.
struct CopyCarriers: Sendable {
    let rdma: RDMADataPlane?
    /// Nil under TLS: every TCP read then goes over the peer's multiplexed connection.
    let bulk: BulkReader?
    let pool: ConnectionPool
    let s3Clients: S3Clients
    let timeoutMilliseconds: Int64

    /// Reads at least this long go over a bulk TCP connection of their own, shorter ones over the peer's
    /// multiplexed connection (one round trip, no thread hand-off).
    static let bulkThreshold: UInt64 = 256 << 10
    /// How long a read waits on a silent peer while another copy remains (a reader fails over within 2 s).
    static let failoverMilliseconds: Int64 = 2000

    init(rdma: RDMADataPlane?, bulk: BulkReader?, pool: ConnectionPool, s3Clients: S3Clients, timeoutMilliseconds: Int64) {
        self.rdma = rdma
        self.bulk = bulk
        self.pool = pool
        self.s3Clients = s3Clients
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// S3 for an S3 copy; one-sided RDMA READs of a peer's registered copy when both ends run over RDMA (unless
    /// connecting to that peer failed recently), else TCP: bulk for large reads, multiplexed for small ones.
    /// `withAlternative`: another copy remains to be tried, so a peer that makes no progress for
    /// `failoverMilliseconds` (a hung or unreachable node) is given up then rather than after the usual deadline.
    func reader(for location: Location, length: UInt64, withAlternative: Bool = false) -> any CopyReader {
        let timeoutMilliseconds = withAlternative ? min(timeoutMilliseconds, Self.failoverMilliseconds) : timeoutMilliseconds
        switch location {
        case .s3(let object):
            return S3CopyReader(clients: s3Clients, object: object)
        case .node(let copy):
            let overTCP: any CopyReader = if let bulk, length >= Self.bulkThreshold {
                BulkTCPCopyReader(bulk: bulk, copy: copy, timeoutMilliseconds: timeoutMilliseconds)
            } else {
                MultiplexedTCPCopyReader(pool: pool, copy: copy, timeout: .milliseconds(timeoutMilliseconds))
            }
            guard let rdma, let access = copy.rdma, rdma.offersRDMA(access.endpoint) else { return overTCP }
            return RDMACopyReader(plane: rdma, access: access, packed: copy.offset != nil, peerName: "node \(copy.node)",
                                  overTCP: overTCP, timeout: .milliseconds(timeoutMilliseconds))
        }
    }
}

/// One-sided RDMA READs of a peer's registered copy; over TCP when no RDMA connection to the peer can be made.
struct RDMACopyReader: CopyReader {
    let plane: RDMADataPlane
    let access: RDMAAccess
    /// The copy is a slab slot (whose header the READ checks).
    let packed: Bool
    let peerName: String
    let overTCP: any CopyReader
    let timeout: Duration

    func read(_ range: CopyRange, into sink: any ReadSink) async throws(GedsError) -> UInt64 {
        do throws(RDMADataPlane.PeerFailure) {
            try await plane.read(access, objectSize: range.objectSize, offset: range.offset, length: range.length, into: sink,
                                 packed: packed ? range.blob : nil, peerName: peerName, timeout: timeout)
            NodeMetrics.readRDMA.increment(by: Int64(range.length))
            return range.length
        } catch .failed(let failure) {
            throw failure
        } catch {
            // No RDMA connection to this peer: this read goes over TCP.
            return try await overTCP.read(range, into: sink)
        }
    }
}

/// Large reads over a blocking TCP connection of their own, received straight into the destination.
struct BulkTCPCopyReader: CopyReader {
    let bulk: BulkReader
    let copy: NodeCopy
    let timeoutMilliseconds: Int64

    func read(_ range: CopyRange, into sink: any ReadSink) async throws(GedsError) -> UInt64 {
        let got = try await bulk.read(blob: range.blob, offset: range.offset, length: range.length, from: copy.tcp,
                                      peerName: "node \(copy.node)", into: sink,
                                      timeoutMilliseconds: timeoutMilliseconds)
        NodeMetrics.readTCP.increment(by: Int64(got))
        return got
    }
}

/// Small reads over the peer's multiplexed event-loop connection.
struct MultiplexedTCPCopyReader: CopyReader {
    let pool: ConnectionPool
    let copy: NodeCopy
    let timeout: TimeAmount

    func read(_ range: CopyRange, into sink: any ReadSink) async throws(GedsError) -> UInt64 {
        let connection = try await pool.connection(to: copy.tcp, peerName: "node \(copy.node)")
        let got = try await connection.read(blob: range.blob, offset: range.offset, length: range.length, into: sink,
                                            timeout: timeout)
        NodeMetrics.readTCP.increment(by: Int64(got))
        return got
    }
}

/// A ranged GET of the S3 object that holds the copy.
struct S3CopyReader: CopyReader {
    let clients: S3Clients
    let object: S3ObjectReference

    func read(_ range: CopyRange, into sink: any ReadSink) async throws(GedsError) -> UInt64 {
        let client = try clients.client(for: object)
        let destination = UnsafeMutableRawBufferPointer(rebasing: sink.destination[..<Int(range.length)])
        let got = try await client.getObject(bucket: object.bucket, key: object.key,
                                             range: range.offset..<(range.offset + range.length), into: destination)
        NodeMetrics.readS3.increment(by: Int64(got))
        return UInt64(got)
    }
}
