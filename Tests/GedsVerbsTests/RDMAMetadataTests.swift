import GedsCarrier
import GedsCore
import GedsTestSupport
import GedsMDS
import GedsMetadataRDMA
import GedsTCP
import GedsVerbs
import GedsWire
import Logging
import NIOPosix
import Testing

/// The MDS serving RDMA send/receive and TCP clients at once (soft-RoCE in tools/rxe-vm). Outside such an
/// environment each test reports itself skipped with the reason.
@Suite(.serialized, .timeLimit(.minutes(10))) struct RDMAMetadataTests {
    static let timeout: Duration = .seconds(60)

    @Suite(.serialized, .enabled(if: TestRDMA.single != nil, Comment(rawValue: TestRDMA.singleReason)))
    struct OnOneDevice {
        @Test func rdmaAndTCPClientsShareOneMDS() async throws {
            let address = try #require(TestRDMA.single)
            try await bothCarriersAgree(client: address, mds: address)
        }

        @Test func aMalformedFrameClosesOnlyItsConnection() async throws {
            let address = try #require(TestRDMA.single)
            try await malformedFramesAreRefused(client: address, mds: address)
        }

        @Test func answersDecidedLaterAreSentOverRDMA() async throws {
            let address = try #require(TestRDMA.single)
            try await laterAnswersArrive(client: address, listener: address)
        }

        @Test func subscriptionsArriveOverRDMA() async throws {
            let address = try #require(TestRDMA.single)
            try await eventsArriveOverRDMA(client: address, mds: address)
        }

        @Test func aSubscriberThatStopsReadingIsCutOffAlone() async throws {
            let address = try #require(TestRDMA.single)
            try await slowSubscriberIsCutOff(client: address, mds: address)
        }
    }

    @Suite(.serialized, .enabled(if: TestRDMA.pair != nil, Comment(rawValue: TestRDMA.pairReason)))
    struct AcrossTwoHosts {
        @Test func rdmaAndTCPClientsShareOneMDS() async throws {
            let pair = try #require(TestRDMA.pair)
            try await bothCarriersAgree(client: pair.reader, mds: pair.owner)
        }

        @Test func aMalformedFrameClosesOnlyItsConnection() async throws {
            let pair = try #require(TestRDMA.pair)
            try await malformedFramesAreRefused(client: pair.reader, mds: pair.owner)
        }

        @Test func subscriptionsArriveOverRDMA() async throws {
            let pair = try #require(TestRDMA.pair)
            try await eventsArriveOverRDMA(client: pair.reader, mds: pair.owner)
        }
    }
}

/// A service that answers each kind of `Response` the RDMA listener can carry: at once, deferred, decided later.
struct EveryAnswer: RequestService {
    func respond(to request: Request) -> Response {
        switch request {
        case .lookup(_, let key) where key == "now": .reply(.count(1))
        case .lookup(_, let key) where key == "deferred": .deferred {
            try? await Task.sleep(for: .milliseconds(20))
            return .count(2)
        }
        case .lookup(_, let key) where key == "later": .later { .deferred { .count(3) } }
        default: .reply(.failure(GedsError(.invalidArgument, "not asked in this test")))
        }
    }
}

/// Immediate, deferred and later answers all reach an RDMA client, in order.
func laterAnswersArrive(client: String, listener address: String) async throws {
    let logger = Logger(label: "geds-rdma-listener-test")
    let listener = try await RDMAMetadataListener.start(listen: Endpoint(host: address, port: 0), service: EveryAnswer(),
                                                        logger: logger)
    let rdma = try await RDMAMetadataClient.connect(to: listener.endpoint, from: client, timeout: RDMAMetadataTests.timeout)
    #expect(try await rdma.call(.lookup(bucket: "b", key: "deferred")) == .count(2))
    #expect(try await rdma.call(.lookup(bucket: "b", key: "later")) == .count(3))
    #expect(try await rdma.call(.lookup(bucket: "b", key: "now")) == .count(1))
    await rdma.close()
    await listener.close()
}

/// One way of asking the MDS: over RDMA or over TCP.
typealias MDSCall = @Sendable (Request) async throws -> Reply

/// An MDS with TCP on loopback and RDMA on `mds`, and one client of each kind (the RDMA one from `client`).
struct TwoCarrierMDS {
    let server: MetadataServer
    let rdma: RDMAMetadataClient
    let tcp: Connection

    static func start(client: String, mds: String, eventHistory: Int = MetadataStore.defaultEventHistory,
                      subscriberQueueLimit: Int = MetadataService.defaultSubscriberQueueLimit) async throws -> TwoCarrierMDS {
        var logger = Logger(label: "geds-mds-test")
        logger.logLevel = .warning
        // The nodes registered here send no heartbeats: a lease that outlasts the test under emulation keeps their
        // copies published (5 s ran out midway in one run, and a lookup then found no location).
        let server = try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0),
                                                    rdmaListen: Endpoint(host: mds, port: 0), leaseMilliseconds: 120_000,
                                                    eventHistory: eventHistory, subscriberQueueLimit: subscriberQueueLimit,
                                                    logger: logger)
        let endpoint = try #require(server.rdma?.endpoint)
        let rdma = try await RDMAMetadataClient.connect(to: endpoint, from: client, timeout: RDMAMetadataTests.timeout)
        let tcp = try await Connection.connect(to: server.localAddress, peerName: "MDS", group: MultiThreadedEventLoopGroup.singleton)
        return TwoCarrierMDS(server: server, rdma: rdma, tcp: tcp)
    }

    var overRDMA: MDSCall { { [rdma] in try await rdma.call($0) } }
    var overTCP: MDSCall { { [tcp] in try await tcp.call($0, timeout: .seconds(60)) } }

    func stop() async {
        await rdma.close()
        tcp.close()
        await server.close()
    }
}

/// An RDMA client and a TCP client at the same time: each registers a node and creates and seals objects in
/// one bucket; then each lists the bucket and looks up every object, its own and the other's: the answers
/// are identical.
func bothCarriersAgree(client: String, mds: String) async throws {
    let cluster = try await TwoCarrierMDS.start(client: client, mds: mds)
    let carriers: [(name: String, call: MDSCall)] = [("rdma", cluster.overRDMA), ("tcp", cluster.overTCP)]
    #expect(try await cluster.overRDMA(.createBucket("shared")) == .ok)
    // The bucket exists for the other carrier too.
    #expect(isFailure(try await cluster.overTCP(.createBucket("shared")), .bucketExists))
    let count = 25
    try await withThrowingTaskGroup(of: Void.self) { group in
        for carrier in carriers {
            group.addTask { try await putObjects(carrier.call, name: carrier.name, count: count) }
        }
        try await group.waitForAll()
    }
    let listing = Request.list(bucket: "shared", prefix: "", delimiter: "", startAfter: "", maxKeys: 1000)
    let pages = try await (cluster.overRDMA(listing), cluster.overTCP(listing))
    #expect(pages.0 == pages.1)
    guard case .page(let page) = pages.0 else { Issue.record("listing: \(pages.0)"); return }
    #expect(page.objects.count == 2 * count)
    #expect(Set(page.objects.map(\.key)) == Set(carriers.flatMap { carrier in (0..<count).map { "\(carrier.name)/\($0)" } }))
    for entry in page.objects {
        let lookup = Request.lookup(bucket: "shared", key: entry.key)
        let answers = try await (cluster.overRDMA(lookup), cluster.overTCP(lookup))
        #expect(answers.0 == answers.1, "\(entry.key)")
        guard case .object(let info) = answers.0 else { Issue.record("lookup \(entry.key): \(answers.0)"); continue }
        #expect(info.sealed && info.size == entry.size && info.locations.count == 1, "\(entry.key)")
        #expect(info.locations.first?.holder == entry.key.split(separator: "/").first.map(String.init), "\(entry.key)")
    }
    #expect(try await (cluster.overRDMA(.listBuckets), cluster.overTCP(.listBuckets)) == (.buckets(["shared"]), .buckets(["shared"])))
    // Many tasks on the one RDMA client at once: calls take turns, and each gets its own answer.
    let keys = page.objects.map(\.key)
    let answers = try await withThrowingTaskGroup(of: (String, Reply).self) { group in
        for key in keys {
            group.addTask { (key, try await cluster.overRDMA(.lookup(bucket: "shared", key: key))) }
        }
        return try await group.reduce(into: [String: Reply]()) { $0[$1.0] = $1.1 }
    }
    for key in keys {
        guard case .object(let info) = answers[key] else { Issue.record("\(key): \(String(describing: answers[key]))"); continue }
        #expect(info.key == key)
    }
    await cluster.stop()
}

func isFailure(_ reply: Reply, _ code: GedsError.Code) -> Bool {
    if case .failure(let error) = reply { return error.code == code }
    return false
}

/// Registers a node called `name` and puts `count` objects "name/i" of i + 1 bytes into bucket "shared".
func putObjects(_ call: MDSCall, name: String, count: Int) async throws {
    let registration = NodeRegistration(name: name, hostID: "host-\(name)", role: .daemon, tcp: Endpoint(host: "127.0.0.1", port: 9),
                                        tier0Directory: "/dev/shm/\(name)")
    guard case .nodeRegistered(let node, _, _) = try await call(.registerNode(registration)) else {
        Issue.record("\(name): registration refused")
        return
    }
    for index in 0..<count {
        let created = try await call(.createObject(bucket: "shared", key: "\(name)/\(index)", node: node))
        guard case .created(let blob) = created else {
            Issue.record("\(name)/\(index): \(created)")
            return
        }
        let sealed = try await call(.sealObject(blob: blob, size: UInt64(index + 1), metadata: ["by": name],
                                                placement: BlobPlacement(node: node, tier: .tier0)))
        #expect(sealed == .ok, "\(name)/\(index)")
    }
}

/// Subscriptions over RDMA send/receive: the events of changes made over TCP arrive in revision order, each once; a
/// resume replays exactly the events after its revision; one from before the history gets `compacted`.
func eventsArriveOverRDMA(client: String, mds: String) async throws {
    let cluster = try await TwoCarrierMDS.start(client: client, mds: mds, eventHistory: 4)
    let endpoint = try #require(cluster.server.rdma?.endpoint)
    let engine = try RDMAEngine(localAddress: client)
    // From revision 0 of a fresh MDS: nothing can be missed while the changes below race the subscription.
    let (live, liveReplies) = try await subscribeOverRDMA(after: 0, mds: endpoint, engine: engine)
    #expect(try await cluster.overTCP(.createBucket("shared")) == .ok)
    try await putObjects(cluster.overTCP, name: "tcp", count: 5)
    let expected = [NamespaceEvent(revision: 1, kind: .bucketCreated, bucket: "shared")]
        + (0..<5).map { NamespaceEvent(revision: UInt64($0 + 2), kind: .created, bucket: "shared", key: "tcp/\($0)") }
    let (first, events) = await firstEvents(6, of: liveReplies)
    guard case .subscribed = first else { Issue.record("the stream began with \(String(describing: first))"); return }
    #expect(events == expected)
    let (resumed, resumedReplies) = try await subscribeOverRDMA(after: 2, mds: endpoint, engine: engine)
    let (resumedFirst, replayed) = await firstEvents(4, of: resumedReplies)
    #expect(resumedFirst == .subscribed(revision: 6))
    #expect(replayed == Array(expected[2...]))
    // The history keeps 4 events (3...6): a resume from 0 needs revisions 1 and 2.
    let (compacted, compactedReplies) = try await subscribeOverRDMA(after: 0, mds: endpoint, engine: engine)
    var ending: [Reply] = []
    for await reply in compactedReplies { ending.append(reply) }  // the MDS closes the stream after its answer
    #expect(ending == [.subscriptionEnded(.compacted(oldest: 3))])
    for connection in [live, resumed, compacted] { connection.close() }
    await cluster.stop()
    engine.shutdown()
}

/// A subscriber over RDMA that takes its first reply and then never reads again: the MDS's sends wait for its credits,
/// its events pile up in its bounded queue (50), and it is ended alone; a subscriber that reads gets every event.
func slowSubscriberIsCutOff(client: String, mds: String) async throws {
    let cluster = try await TwoCarrierMDS.start(client: client, mds: mds, subscriberQueueLimit: 50)
    let endpoint = try #require(cluster.server.rdma?.endpoint)
    let engine = try RDMAEngine(localAddress: client)
    #expect(try await cluster.overTCP(.createBucket("shared")) == .ok)
    let stalled = try await RDMAMetadataClient.connect(to: endpoint, engine: engine, timeout: RDMAMetadataTests.timeout)
    guard case .subscribed = try await stalled.call(.subscribe(scope: .bucket("shared"), after: nil)) else {
        Issue.record("the stalled subscription was not confirmed")
        return
    }
    let (reading, replies) = try await subscribeOverRDMA(after: 1, mds: endpoint, engine: engine)
    let count = 150  // beyond the reader's 16 receive buffers, the 32 sends the MDS lets wait, and the queue of 50
    try await putObjects(cluster.overTCP, name: "tcp", count: count)
    let (_, events) = await firstEvents(count, of: replies)
    #expect(events.map(\.key) == (0..<count).map { "tcp/\($0)" })
    #expect(cluster.server.service.subscriptionCount == 1, "the stalled subscriber was not ended")
    reading.close()
    await stalled.close()
    await cluster.stop()
    engine.shutdown()
}

/// Subscribes to the bucket "shared" over RDMA send/receive; the stream's replies as they come, until it closes.
func subscribeOverRDMA(after: UInt64?, mds: Endpoint, engine: RDMAEngine) async throws -> (RDMAPushConnection, AsyncStream<Reply>) {
    let (replies, continuation) = AsyncStream.makeStream(of: Reply.self)
    let connection = try await RDMAPushConnection.open(to: mds, engine: engine, request: .subscribe(scope: .bucket("shared"), after: after),
                                                       timeout: RDMAMetadataTests.timeout,
                                                       onReply: { continuation.yield($0) }, onClose: { _ in continuation.finish() })
    return (connection, replies)
}

/// The stream's first reply, and its first `count` events (progress marks skipped).
func firstEvents(_ count: Int, of replies: AsyncStream<Reply>) async -> (Reply?, [NamespaceEvent]) {
    var first: Reply?
    var events: [NamespaceEvent] = []
    for await reply in replies {
        if first == nil { first = reply }
        if case .events(let batch) = reply { events += batch }
        if events.count >= count { break }
    }
    return (first, events)
}

/// Malformed frames over RDMA each get a failure reply (id 0) and lose their connection; a client that was
/// connected all along is still served, over RDMA and TCP.
func malformedFramesAreRefused(client: String, mds: String) async throws {
    let cluster = try await TwoCarrierMDS.start(client: client, mds: mds)
    let endpoint = try #require(cluster.server.rdma?.endpoint)
    #expect(try await cluster.overRDMA(.createBucket("steady")) == .ok)
    func header(kind: UInt8, id: UInt64, length: UInt32) -> [UInt8] {
        [0x47, 0x45, 1, kind] + withUnsafeBytes(of: id.bigEndian, Array.init) + withUnsafeBytes(of: length.bigEndian, Array.init)
    }
    let good = WholeFrame.bytes(Request.listBuckets, id: 7)
    let samples: [(String, [UInt8], GedsError.Code)] = [
        ("not a frame", Array("hello, MDS".utf8), .protocolViolation),
        ("a header only", Array(good.prefix(FrameHeader.size - 1)), .protocolViolation),
        ("a header over the bound", header(kind: 1, id: 1, length: WireLimits.maximumMessagePayload + 1), .frameTooLarge),
        ("a payload shorter than announced", Array(good.dropLast()), .protocolViolation),
        ("a trailing byte inside the payload", header(kind: 1, id: 2, length: UInt32(good.count - FrameHeader.size + 1))
            + good.dropFirst(FrameHeader.size) + [0], .protocolViolation),
        ("a reply sent to the MDS", WholeFrame.bytes(Reply.ok, id: 3), .protocolViolation),
    ]
    let engine = try RDMAEngine(localAddress: client)
    for (what, bytes, code) in samples {
        let raw = try await RDMAMessageConnection.connect(engine: engine, to: endpoint, timeout: RDMAMetadataTests.timeout)
        try await raw.send(bytes, timeout: RDMAMetadataTests.timeout)
        let (id, reply) = try WholeFrame.reply(from: try await raw.receive(timeout: RDMAMetadataTests.timeout))
        #expect(id == 0 && isFailure(reply, code), "\(what): \(reply)")
        await #expect(throws: RDMAError.self, "\(what): the MDS closes the connection") {
            _ = try await raw.receive(timeout: RDMAMetadataTests.timeout)
        }
        // Everyone else is still served.
        #expect(try await cluster.overRDMA(.listBuckets) == .buckets(["steady"]), "after \(what)")
        #expect(try await cluster.overTCP(.listBuckets) == .buckets(["steady"]), "after \(what)")
    }
    // A well-formed frame on a fresh connection is answered as usual.
    let fresh = try await RDMAMessageConnection.connect(engine: engine, to: endpoint, timeout: RDMAMetadataTests.timeout)
    try await fresh.send(good, timeout: RDMAMetadataTests.timeout)
    let (id, reply) = try WholeFrame.reply(from: try await fresh.receive(timeout: RDMAMetadataTests.timeout))
    #expect(id == 7 && reply == .buckets(["steady"]))
    await fresh.close()
    engine.shutdown()
    await cluster.stop()
}
