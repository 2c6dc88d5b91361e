import Crypto
@testable import GEDS
import GedsMDS
@testable import GedsNode
import GedsTestSupport
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Nodes over the RDMA data plane, on two simulated hosts with one soft-RoCE device each (tools/test-rdma.sh
/// runs these in the VM): one-sided READs of registered tier-0 copies, the MDS over RDMA send/receive beside
/// TCP, stale rkeys, and falling back to TCP. Outside such a machine they report themselves skipped.
@Suite(.serialized, .timeLimit(.minutes(10)), .enabled(if: TestRDMA.pair != nil, Comment(rawValue: TestRDMA.pairReason)))
struct RDMANodeTests {
    /// The MDS (TCP on loopback, RDMA on the owner's address), an owner node that talks to the MDS over RDMA
    /// and a reader node on the other host that talks to it over TCP.
    struct Setup {
        let cluster: Cluster
        let owner: GEDS
        let reader: GEDS
    }

    static func withSetup(readerAddress: String? = nil, ownerTransport: NodeConfiguration.Transport = .rdma,
                          _ body: (Setup) async throws -> Void) async throws {
        let pair = try #require(TestRDMA.pair)
        let cluster = try await Cluster.start(rdmaListen: Endpoint(host: pair.owner, port: 0), inlineLimit: 0, folderPrefix: "geds-rdma")
        var handles: [GEDS] = []
        do {
            let owner = try await cluster.handle("owner", hostID: "host-owner") { configuration in
                configuration.listen = Endpoint(host: pair.owner, port: 0)
                configuration.transport = ownerTransport
                configuration.mdsRDMA = ownerTransport == .tcp ? nil : cluster.mds.rdma?.endpoint
            }
            handles.append(owner)
            let reader = try await cluster.handle("reader", hostID: "host-reader") { configuration in
                configuration.listen = Endpoint(host: pair.reader, port: 0)
                configuration.rdmaAddress = readerAddress
                configuration.transport = .auto
            }
            handles.append(reader)
            try await body(Setup(cluster: cluster, owner: owner, reader: reader))
        } catch {
            await cluster.close(handles)
            throw error
        }
        await cluster.close(handles)
    }

    static let sizes = [1, 4096, (1 << 20) + 7, (64 << 20) + 3, (256 << 20) + 3]

    @Test(arguments: sizes)
    func remoteReadsOverRDMAMatchByteForByte(size: Int) async throws {
        try await Self.withSetup { setup in
            #expect(setup.owner.node.mds.rdma?.active == true, "the owner talks to the MDS over RDMA")
            #expect(setup.reader.node.mds.rdma == nil, "the reader talks to the MDS over TCP")
            try await setup.owner.createBucket("rdma-test")
            let bytes = randomBytes(size, seed: UInt64(size))
            try await setup.owner.put(bucket: "rdma-test", key: "k", bytes: bytes)
            let info = try await setup.reader.stat(bucket: "rdma-test", key: "k")
            // Packed copies (slab slots) are published with their slab's rkey at their slot's address.
            let packed = size <= 64 << 10  // GedsTier0's default pack limit
            #expect(info.locations.count == 1 && info.locations[0].nodeCopy?.rdma != nil, "published with an rkey")
            #expect((info.locations[0].nodeCopy?.offset != nil) == packed, "small blobs are packed")

            // A range into caller memory (bounce buffer for small ranges, a one-off registration for large ones).
            let offset = size / 3
            let range = try await setup.reader.open(bucket: "rdma-test", key: "k").read(at: UInt64(offset), length: size - offset)
            #expect(sha256(range) == sha256(Array(bytes[offset...])))
            // The whole object, into a fresh tier-0 copy of the reader's, published with its own rkey.
            let view = try await setup.reader.open(bucket: "rdma-test", key: "k").view()
            #expect(sha256(view) == sha256(bytes))
            let reads = setup.reader.node.rdma?.completedReads.load(ordering: .relaxed) ?? 0
            #expect(reads == 2, "both reads went over RDMA")
            let after = try await setup.owner.stat(bucket: "rdma-test", key: "k")
            #expect(after.locations.count == 2 && after.locations.allSatisfy { $0.nodeCopy?.rdma != nil })
        }
    }

    /// Of a blob in a file of its own (its registration ends), and of one packed into a slab slot (the slab stays
    /// registered: the slot header, read with the bytes, no longer names the blob).
    @Test(arguments: [1 << 20, 1000])
    func aStaleLocationFailsCleanlyAndNeverYieldsAnotherObjectsBytes(size: Int) async throws {
        try await Self.withSetup { setup in
            try await setup.owner.createBucket("rdma-test")
            try await setup.owner.put(bucket: "rdma-test", key: "old", bytes: randomBytes(size, seed: 1))
            let stale = try await setup.reader.stat(bucket: "rdma-test", key: "old")
            let packed = size <= 64 << 10  // GedsTier0's default pack limit
            #expect(stale.locations.count == 1 && stale.locations[0].nodeCopy?.rdma != nil)
            #expect((stale.locations[0].nodeCopy?.offset != nil) == packed, "small blobs are packed")
            try await setup.owner.delete(bucket: "rdma-test", key: "old")
            let ownerPlane = try #require(setup.owner.node.rdma)
            #expect(await eventually { ownerPlane.registeredCopies == 0 && !setup.owner.node.tier0.contains(stale.blob) },
                    "deregistered (or its slot freed) once the MDS withdrew it")
            // Same size, same pages likely: the old rkey and address must still never reach them.
            let newer = randomBytes(size, seed: 2)
            try await setup.owner.put(bucket: "rdma-test", key: "new", bytes: newer)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            let error = await gedsError { _ = try await setup.reader.node.read(stale, at: 0, into: buffer) }
            #expect(error?.code == .noSuchBlob || error?.code == .noSuchObject, "got \(String(describing: error))")
            #expect(sha256(UnsafeRawBufferPointer(buffer)) != sha256(newer))
            #expect(try await setup.reader.open(bucket: "rdma-test", key: "new").read(at: 0, length: size) == newer)
        }
    }

    /// Small objects packed into one slab, all published with the slab's one registration, each read with one
    /// READ of its slot (header and bytes); digests compared, also of the copies fetched into the reader's slabs.
    @Test func packedObjectsAreReadOverRDMAFromTheirSlab() async throws {
        try await Self.withSetup { setup in
            try await setup.owner.createBucket("rdma-test")
            let count = 64
            let payloads = (0..<count).map { randomBytes(1024, seed: UInt64(100 + $0)) }
            for (index, bytes) in payloads.enumerated() {
                try await setup.owner.put(bucket: "rdma-test", key: "small-\(index)", bytes: bytes)
            }
            let ownerPlane = try #require(setup.owner.node.rdma)
            var slots = Set<UInt64>()
            for (index, bytes) in payloads.enumerated() {
                let info = try await setup.reader.stat(bucket: "rdma-test", key: "small-\(index)")
                let copy = try #require(info.locations.first?.nodeCopy)
                #expect(copy.offset != nil && copy.rdma != nil, "packed, and published with an rkey")
                slots.insert(try #require(copy.rdma).address)
                let read = try await setup.reader.open(bucket: "rdma-test", key: "small-\(index)").read(at: 0, length: 1024)
                #expect(sha256(read) == sha256(bytes), "object \(index)")
                let range = try await setup.reader.open(bucket: "rdma-test", key: "small-\(index)").read(at: 1000, length: 24)
                #expect(range == Array(bytes[1000...]), "object \(index) from offset 1000")
            }
            #expect(slots.count == count, "each object at a slot of its own")
            #expect(ownerPlane.responder.registrationCount == 1, "one registration for the slab, none per object")
            #expect(ownerPlane.registeredCopies == 0)
            let readerPlane = try #require(setup.reader.node.rdma)
            #expect(readerPlane.completedReads.load(ordering: .relaxed) == 2 * count, "every read went over RDMA")
            // Whole views: copies fetched over RDMA into the reader's own slab slots.
            for (index, bytes) in payloads.enumerated().prefix(8) {
                let view = try await setup.reader.open(bucket: "rdma-test", key: "small-\(index)").view()
                #expect(sha256(view) == sha256(bytes), "view of object \(index)")
            }
        }
    }

    @Test func theOwnerGoingAwayMidReadFailsWithinTheDeadline() async throws {
        try await Self.withSetup { setup in
            try await setup.owner.createBucket("rdma-test")
            try await setup.owner.put(bucket: "rdma-test", key: "big", bytes: randomBytes(128 << 20, seed: 3))
            let info = try await setup.reader.stat(bucket: "rdma-test", key: "big")
            let started = ContinuousClock.now
            async let outcome = gedsError {
                _ = try await setup.reader.open(bucket: "rdma-test", key: "big").read(at: 0, length: 128 << 20)
            }
            try await Task.sleep(for: .milliseconds(200))
            await setup.owner.node.rdma?.shutdown()  // its device stops answering, as when the process dies
            let error = await outcome
            let elapsed = ContinuousClock.now - started
            // Either the read finished before the owner went, or it failed with an error; never a hang.
            if let error { #expect([.peerUnreachable, .timedOut, .io, .noSuchBlob, .objectLost].contains(error.code), "\(error)") }
            #expect(elapsed < .seconds(60))
            _ = info
        }
    }

    @Test func aPeerWithoutRDMAIsReadOverTCP() async throws {
        try await Self.withSetup(ownerTransport: .tcp) { setup in
            try await setup.owner.createBucket("rdma-test")
            let bytes = randomBytes((4 << 20) + 1, seed: 4)
            try await setup.owner.put(bucket: "rdma-test", key: "k", bytes: bytes)
            #expect(try await setup.reader.stat(bucket: "rdma-test", key: "k").locations.allSatisfy { $0.nodeCopy?.rdma == nil })
            #expect(try await setup.reader.open(bucket: "rdma-test", key: "k").read(at: 0, length: bytes.count) == bytes)
            #expect(setup.reader.node.rdma?.completedReads.load(ordering: .relaxed) == 0)
        }
    }

    @Test func aPeerThatCannotBeReachedOverRDMAIsReadOverTCPFromThenOn() async throws {
        // The reader's device is rxe0 (10.10.0.1), which has no route to the owner's: connecting fails, and
        // the read goes over TCP (which reaches every address of the namespace).
        guard TestRDMA.single == "10.10.0.1" else { return }
        try await Self.withSetup(readerAddress: "10.10.0.1") { setup in
            try await setup.owner.createBucket("rdma-test")
            let bytes = randomBytes(300_000, seed: 5)
            try await setup.owner.put(bucket: "rdma-test", key: "k", bytes: bytes)
            let plane = try #require(setup.reader.node.rdma)
            for _ in 0..<2 {
                #expect(try await setup.reader.open(bucket: "rdma-test", key: "k").read(at: 0, length: bytes.count) == bytes)
            }
            let owner = try #require(try await setup.reader.stat(bucket: "rdma-test", key: "k").locations.first?.nodeCopy?.rdma?.endpoint)
            #expect(!plane.offersRDMA(owner))
            #expect(plane.completedReads.load(ordering: .relaxed) == 0)
        }
    }

    @Test func demandingRDMAOnAnAddressWithoutADeviceFailsClearly() async throws {
        let cluster = try await Cluster.start(inlineLimit: 0, folderPrefix: "geds-rdma")
        let error = await gedsError {
            _ = try await cluster.handle("loopback", hostID: "h") { configuration in
                configuration.transport = .rdma
                configuration.rdmaAddress = "127.0.0.1"
            }
        }
        await cluster.close([])
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.hasPrefix("--transport rdma: no usable RDMA device at 127.0.0.1") == true, "\(String(describing: error))")
    }
}
