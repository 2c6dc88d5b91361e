import GedsCore
import Testing

/// The order a reader tries an object's copies in (and `geds where` lists them): its own, its host's, one over RDMA
/// when it reads over RDMA, the others in the MDS's order, S3 last.
@Suite struct ReadingOrderTests {
    static func copy(_ node: String, host: String, rdma: Bool = false) -> Location {
        .node(NodeCopy(node: node, hostID: host, tier: .tier0, tcp: Endpoint(host: "10.0.0.1", port: 1),
                       rdma: rdma ? RDMAAccess(endpoint: Endpoint(host: "10.1.0.1", port: 2), address: 4096, rkey: 7) : nil,
                       path: "/dev/shm/\(node)/0000000000000001"))
    }

    static let s3 = Location.s3(S3ObjectReference(endpoint: "http://127.0.0.1:4569", bucket: "b", key: "k", region: "us-east-1"))
    static let locations = [s3, copy("far-tcp", host: "h3"), copy("far-rdma", host: "h4", rdma: true), copy("far-tcp-2", host: "h5"),
                            copy("neighbour", host: "h1"), copy("me", host: "h1")]

    @Test func ownThenHostThenRDMAThenTheRestThenS3() {
        let order = Location.readingOrder(Self.locations, node: "me", hostID: "h1", overRDMA: true).map(\.holder)
        #expect(order == ["me", "neighbour", "far-rdma", "far-tcp", "far-tcp-2", Self.s3.holder])
    }

    @Test func aReaderWithoutRDMAKeepsTheMDSOrderAmongOtherHosts() {
        let order = Location.readingOrder(Self.locations, node: "elsewhere", hostID: "h9", overRDMA: false).map(\.holder)
        #expect(order == ["far-tcp", "far-rdma", "far-tcp-2", "neighbour", "me", Self.s3.holder])
    }
}
