import GedsTestSupport
import GedsCore
import GedsWire
import NIOCore
import Testing

func encoded(_ request: Request) -> ByteBuffer {
    var buffer = ByteBuffer()
    request.encode(into: &buffer)
    return buffer
}

func encoded(_ reply: Reply) -> ByteBuffer {
    var buffer = ByteBuffer()
    reply.encode(into: &buffer)
    return buffer
}

func bytes(_ buffer: ByteBuffer) -> [UInt8] { Array(buffer.readableBytesView) }

func decodeRequest(_ bytes: [UInt8]) -> Result<Request, GedsError> {
    var buffer = ByteBuffer(bytes: bytes)
    do throws(GedsError) { return .success(try Request.decode(from: &buffer)) } catch { return .failure(error) }
}

func decodeReply(_ bytes: [UInt8]) -> Result<Reply, GedsError> {
    var buffer = ByteBuffer(bytes: bytes)
    do throws(GedsError) { return .success(try Reply.decode(from: &buffer)) } catch { return .failure(error) }
}

extension Result {
    var error: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }

    var value: Success? {
        if case .success(let value) = self { return value }
        return nil
    }
}

/// Prefix lengths to try: all of them for small messages, the first and last few hundred and a stride in
/// between for large ones (a prefix costs a decode of up to its length).
func truncationLengths(of count: Int) -> [Int] {
    if count <= 8192 { return Array(0..<count) }
    return Array(0..<300) + Array(stride(from: 300, to: count - 300, by: 97)) + Array((count - 300)..<count)
}

/// A payload built by hand, for inputs no encoder would produce.
func payload(_ build: (inout ByteBuffer) -> Void) -> [UInt8] {
    var buffer = ByteBuffer()
    build(&buffer)
    return bytes(buffer)
}

func tag(of request: Request) -> UInt8 { bytes(encoded(request))[0] }
func tag(of reply: Reply) -> UInt8 { bytes(encoded(reply))[0] }

@Suite struct RoundTripTests {
    @Test func everyCaseIsSampled() {
        #expect(Set(Samples.requests.map(caseName)) == allRequestCases)
        #expect(Set(Samples.replies.map(caseName)) == allReplyCases)
    }

    @Test func requestsRoundTrip() {
        for request in Samples.requests {
            let wire = bytes(encoded(request))
            let decoded = decodeRequest(wire)
            #expect(decoded.value == request, "\(caseName(request)): \(String(describing: decoded.error))")
            // Encoding is deterministic (metadata is written in name order).
            if let value = decoded.value { #expect(bytes(encoded(value)) == wire) }
        }
    }

    @Test func repliesRoundTrip() {
        for reply in Samples.replies {
            let wire = bytes(encoded(reply))
            let decoded = decodeReply(wire)
            #expect(decoded.value == reply, "\(caseName(reply)): \(String(describing: decoded.error))")
            if let value = decoded.value { #expect(bytes(encoded(value)) == wire) }
        }
    }

    @Test func metadataEncodingDoesNotDependOnInsertionOrder() {
        var first: [String: String] = [:]
        var second: [String: String] = [:]
        let pairs = (0..<50).map { ("name-\($0)", "value-\($0)") }
        for (name, value) in pairs { first[name] = value }
        for (name, value) in pairs.reversed() { second[name] = value }
        let a = Request.setMetadata(bucket: "b", key: "k", metadata: first)
        let b = Request.setMetadata(bucket: "b", key: "k", metadata: second)
        #expect(bytes(encoded(a)) == bytes(encoded(b)))
        #expect(decodeRequest(bytes(encoded(a))).value == b)
    }

    @Test func tagsAreDistinct() {
        var requestTags: [UInt8: String] = [:]
        for request in Samples.requests {
            let raw = tag(of: request)
            #expect(requestTags[raw] == nil || requestTags[raw] == caseName(request))
            requestTags[raw] = caseName(request)
        }
        #expect(requestTags.count == allRequestCases.count)
        var replyTags: [UInt8: String] = [:]
        for reply in Samples.replies {
            let raw = tag(of: reply)
            #expect(replyTags[raw] == nil || replyTags[raw] == caseName(reply))
            replyTags[raw] = caseName(reply)
        }
        #expect(replyTags.count == allReplyCases.count)
    }

    @Test func unknownErrorCodeDecodesAsInternal() {
        var wire = bytes(encoded(Reply.failure(GedsError(.io, "disk on fire"))))
        wire[1] = 0xFF  // error code u16, big-endian, right after the tag
        wire[2] = 0xFF
        #expect(decodeReply(wire).value == .failure(GedsError(.internal, "disk on fire")))
    }

    @Test func longFailureMessagesAreCutToTheStringLimit() {
        let long = String(repeating: "m", count: WireLimits.maximumString + 500)
        let decoded = decodeReply(bytes(encoded(Reply.failure(GedsError(.io, long)))))
        guard case .failure(let error)? = decoded.value else {
            Issue.record("a failure with a long message did not decode: \(String(describing: decoded.error))")
            return
        }
        #expect(error.code == .io)
        #expect(error.message.utf8.count <= WireLimits.maximumString)
        #expect(long.hasPrefix(error.message))
    }

    /// A long message whose byte limit falls inside a multi-byte character keeps the text before it.
    @Test func longFailureMessagesAreCutAtACharacterBoundary() {
        let long = "a" + String(repeating: "é", count: 3000)  // the 4096th byte is the first half of an 'é'
        let decoded = decodeReply(bytes(encoded(Reply.failure(GedsError(.noSuchObject, long)))))
        guard case .failure(let error)? = decoded.value else {
            Issue.record("a failure with a long message did not decode: \(String(describing: decoded.error))")
            return
        }
        #expect(error.code == .noSuchObject)
        #expect(error.message.utf8.count <= WireLimits.maximumString)
        let isPrefix = long.utf8.starts(with: error.message.utf8)
        #expect(isPrefix && error.message.utf8.count >= WireLimits.maximumString - 3,
                "got \(error.message.utf8.count) bytes: \(error.message.prefix(20).debugDescription)")
    }
}

@Suite struct MalformedPayloadTests {
    @Test func emptyPayloadsAreRefused() {
        #expect(decodeRequest([]).error?.code == .protocolViolation)
        #expect(decodeReply([]).error?.code == .protocolViolation)
    }

    @Test func truncatedRequestsAreRefusedAtEveryLength() {
        for request in Samples.requests {
            let wire = bytes(encoded(request))
            for length in truncationLengths(of: wire.count) {
                let result = decodeRequest(Array(wire[..<length]))
                #expect(result.error?.code == .protocolViolation,
                        "\(caseName(request)) cut to \(length) of \(wire.count) bytes: \(result)")
            }
        }
    }

    @Test func truncatedRepliesAreRefusedAtEveryLength() {
        for reply in Samples.replies {
            let wire = bytes(encoded(reply))
            for length in truncationLengths(of: wire.count) {
                let result = decodeReply(Array(wire[..<length]))
                #expect(result.error?.code == .protocolViolation,
                        "\(caseName(reply)) cut to \(length) of \(wire.count) bytes")
            }
        }
    }

    @Test func trailingBytesAreRefused() {
        for request in Samples.requests {
            for extra in [[0], [1], [0xFF, 0xFF, 0xFF, 0xFF], [UInt8](repeating: 7, count: 100)] as [[UInt8]] {
                let result = decodeRequest(bytes(encoded(request)) + extra)
                #expect(result.error?.code == .protocolViolation, "\(caseName(request)) + \(extra.count) bytes")
            }
        }
        for reply in Samples.replies {
            for extra in [[0], [1], [0xFF, 0xFF, 0xFF, 0xFF], [UInt8](repeating: 7, count: 100)] as [[UInt8]] {
                let result = decodeReply(bytes(encoded(reply)) + extra)
                #expect(result.error?.code == .protocolViolation, "\(caseName(reply)) + \(extra.count) bytes")
            }
        }
    }

    @Test func unknownTagsAreRefused() {
        let requestTags = Set(Samples.requests.map { tag(of: $0) })
        let replyTags = Set(Samples.replies.map { tag(of: $0) })
        for raw in 0...255 {
            let byte = UInt8(raw)
            for tail in [[], [0, 0, 0, 0], [UInt8](repeating: 0xAB, count: 64)] as [[UInt8]] {
                if !requestTags.contains(byte) {
                    #expect(decodeRequest([byte] + tail).error?.code == .protocolViolation, "request tag \(raw)")
                }
                if !replyTags.contains(byte) {
                    #expect(decodeReply([byte] + tail).error?.code == .protocolViolation, "reply tag \(raw)")
                }
            }
        }
        #expect(!requestTags.contains(0) && !requestTags.contains(0xFF))
        #expect(!replyTags.contains(0) && !replyTags.contains(0xFF))
    }

    @Test func stringLengthLyingPastTheEndIsRefused() {
        let createBucket = tag(of: .createBucket("x"))
        for claimed: UInt32 in [4, 5, 100, 4096, 4097, 1 << 20, .max] {
            let wire = payload {
                $0.writeInteger(createBucket)
                $0.writeInteger(claimed)
                $0.writeString("abc")
            }
            #expect(decodeRequest(wire).error?.code == .protocolViolation, "string claiming \(claimed) bytes")
        }
        // A lie in the middle: the key's length runs past the end, though the bytes after it exist.
        let lookup = tag(of: .lookup(bucket: "b", key: "k"))
        let wire = payload {
            $0.writeInteger(lookup)
            $0.writeInteger(UInt32(6))
            $0.writeString("bucket")
            $0.writeInteger(UInt32(9))
            $0.writeString("key")
        }
        #expect(decodeRequest(wire).error?.code == .protocolViolation)
    }

    @Test func stringsLongerThanTheLimitAreRefusedEvenWhenPresent() {
        let createBucket = tag(of: .createBucket("x"))
        let limit = WireLimits.maximumString
        let atLimit = payload {
            $0.writeInteger(createBucket)
            $0.writeInteger(UInt32(limit))
            $0.writeString(String(repeating: "a", count: limit))
        }
        #expect(decodeRequest(atLimit).value == .createBucket(String(repeating: "a", count: limit)))
        let overLimit = payload {
            $0.writeInteger(createBucket)
            $0.writeInteger(UInt32(limit + 1))
            $0.writeString(String(repeating: "a", count: limit + 1))
        }
        #expect(decodeRequest(overLimit).error?.code == .protocolViolation)
        #expect(decodeRequest(bytes(encoded(Request.createBucket(String(repeating: "a", count: limit + 1))))).error?.code
            == .protocolViolation)
    }

    @Test func transportsOfferedAreAFlagThenTheRDMAEndpoint() {
        let tcpOnly = NodeRegistration(name: "n", hostID: "h", role: .daemon, tcp: Endpoint(host: "a", port: 1),
                                       tier0Directory: "d")
        var withRDMA = tcpOnly
        withRDMA.rdma = Endpoint(host: "b", port: 2)
        let plain = bytes(encoded(Request.registerNode(tcpOnly)))
        let offering = bytes(encoded(Request.registerNode(withRDMA)))
        #expect(plain.last == 0)
        #expect(offering.count == plain.count + 4 + 1 + 2)
        #expect(Array(offering.suffix(8)) == [1, 0, 0, 0, 1, UInt8(ascii: "b"), 0, 2])
        // A registration that says it offers RDMA but stops there, or names a host longer than the limit.
        #expect(decodeRequest(Array(plain.dropLast()) + [1]).error?.code == .protocolViolation)
        var tooLong = tcpOnly
        tooLong.rdma = Endpoint(host: String(repeating: "h", count: WireLimits.maximumString + 1), port: 1)
        #expect(decodeRequest(bytes(encoded(Request.registerNode(tooLong)))).error?.code == .protocolViolation)
    }

    @Test func elementCountsTooLargeAreRefused() {
        let heartbeatAck = tag(of: Reply.heartbeatAck(drop: []))
        // More elements than the payload can hold.
        for claimed: UInt32 in [1, 2, 1000, 100_000, 100_001, 1 << 24, .max] {
            let wire = payload {
                $0.writeInteger(heartbeatAck)
                $0.writeInteger(claimed)
                $0.writeInteger(UInt64(7))
                $0.writeInteger(UInt8(0))  // drain: false
                $0.writeInteger(UInt32(0))  // no replication orders
            }
            if claimed == 1 {
                #expect(decodeReply(wire).value == .heartbeatAck(drop: [7]))
            } else {
                #expect(decodeReply(wire).error?.code == .protocolViolation, "list claiming \(claimed) elements")
            }
        }
        // Above the element limit although every element is there.
        let limit = WireLimits.maximumElements
        let atLimit = payload {
            $0.writeInteger(heartbeatAck)
            $0.writeInteger(UInt32(limit))
            for index in 0..<limit { $0.writeInteger(UInt64(index)) }
            $0.writeInteger(UInt8(0))  // drain: false
            $0.writeInteger(UInt32(0))  // no replication orders
        }
        #expect(decodeReply(atLimit).value == .heartbeatAck(drop: (0..<limit).map { BlobID(UInt64($0)) }))
        let overLimit = payload {
            $0.writeInteger(heartbeatAck)
            $0.writeInteger(UInt32(limit + 1))
            for index in 0...limit { $0.writeInteger(UInt64(index)) }
        }
        #expect(decodeReply(overLimit).error?.code == .protocolViolation)
    }

    @Test func hugeCountsInEveryListAreRefused() {
        // The first count in each list-bearing message, set to UInt32.max.
        let buckets = tag(of: Reply.buckets([]))
        let page = tag(of: Reply.page(ListPage(objects: [], commonPrefixes: [], nextStartAfter: nil)))
        let nodes = tag(of: Reply.nodes([]))
        for wire in [[buckets], [page], [nodes]].map({ $0 + [0xFF, 0xFF, 0xFF, 0xFF] + [UInt8](repeating: 0, count: 32) }) {
            #expect(decodeReply(wire).error?.code == .protocolViolation)
        }
        // Common prefixes after an empty object list.
        #expect(decodeReply([page, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]).error?.code == .protocolViolation)
        // Metadata in a request, locations in a reply.
        let setMetadata = tag(of: Request.setMetadata(bucket: "", key: "", metadata: [:]))
        #expect(decodeRequest([setMetadata, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]).error?.code == .protocolViolation)
        var object = bytes(encoded(Reply.object(ObjectInfo(bucket: "", key: "", blob: 0, size: 0, sealed: true, modified: 0,
                                                          metadata: [:], locations: []))))
        object.replaceSubrange((object.count - 4)..., with: [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(decodeReply(object + [0, 0, 0]).error?.code == .protocolViolation)
    }

    @Test func badEnumerationValuesAreRefused() {
        // A tier that does not exist, in a placement.
        var add = bytes(encoded(Request.addLocation(blob: 5, placement: BlobPlacement(node: 2, tier: .tier0))))
        #expect(add.count == 1 + 8 + 4 + 1 + 8 + 4 + 1 + 1)  // ends with the checksum and slot flags (none)
        for tier: UInt8 in [3, 4, 0x7F, 0xFF] {
            add[13] = tier
            #expect(decodeRequest(add).error?.code == .protocolViolation, "tier \(tier)")
        }
        // A tier that does not exist, or S3, in a node's copy; a location kind that does not exist.
        let pull = bytes(encoded(Request.pullBlob(blob: 1, size: 1, source: .node(NodeCopy(
            node: "", hostID: "", tier: .tier0, tcp: Endpoint(host: "", port: 0), rdma: nil, path: "")))))
        let kindAt = 1 + 8 + 8
        #expect(pull[kindAt] == 0 && pull[kindAt + 1 + 4 + 4] == Tier.tier0.rawValue)
        for tier in [9, Tier.s3.rawValue] {
            var wrongTier = pull
            wrongTier[kindAt + 1 + 4 + 4] = tier
            #expect(decodeRequest(wrongTier).error?.code == .protocolViolation, "tier \(tier)")
        }
        var wrongKind = pull
        wrongKind[kindAt] = 2
        #expect(decodeRequest(wrongKind).error?.code == .protocolViolation)
        // A node role that does not exist.
        var register = bytes(encoded(Request.registerNode(NodeRegistration(
            name: "", hostID: "", role: .daemon, tcp: Endpoint(host: "", port: 0), tier0Directory: ""))))
        #expect(register[1 + 4 + 4] == NodeRole.daemon.rawValue)
        register[1 + 4 + 4] = 2
        #expect(decodeRequest(register).error?.code == .protocolViolation)
    }
}

@Suite struct FuzzTests {
    /// Random byte strings, half of them starting with a valid tag so that the decoders get past it.
    @Test func randomBytesNeverCrashTheDecoders() {
        var random = SplitMix64(seed: 0x6745_4453)
        let requestTags = Array(Set(Samples.requests.map { tag(of: $0) }))
        let replyTags = Array(Set(Samples.replies.map { tag(of: $0) }))
        var decodedRequests = 0
        var decodedReplies = 0
        for round in 0..<20_000 {
            let length = Int(random.next() % (round % 10 == 0 ? 512 : 48))
            var wire = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            // Small numbers are likelier to be accepted as lengths and counts.
            for index in wire.indices where random.next() % 3 == 0 { wire[index] = UInt8(random.next() % 4) }
            var requestWire = wire
            var replyWire = wire
            if !wire.isEmpty, round % 2 == 0 {
                requestWire[0] = requestTags[Int(random.next() % UInt64(requestTags.count))]
                replyWire[0] = replyTags[Int(random.next() % UInt64(replyTags.count))]
            }
            switch decodeRequest(requestWire) {
            case .success(let request):
                decodedRequests += 1
                _ = decodeRequest(bytes(encoded(request)))
            case .failure(let error):
                #expect(error.code == .protocolViolation)
            }
            switch decodeReply(replyWire) {
            case .success(let reply):
                decodedReplies += 1
                _ = decodeReply(bytes(encoded(reply)))
            case .failure(let error):
                #expect(error.code == .protocolViolation)
            }
        }
        // Some random inputs are valid messages (e.g. a lone `listNodes` tag); the loop reached the decoders.
        #expect(decodedRequests > 0)
        #expect(decodedReplies > 0)
    }

    /// Valid messages with a few bytes changed, inserted or removed: deep paths through every decoder.
    @Test func mutatedMessagesNeverCrashTheDecoders() {
        var random = SplitMix64(seed: 7)
        let requestWires = Samples.requests.map { bytes(encoded($0)) }.filter { $0.count < 10_000 }
        let replyWires = Samples.replies.map { bytes(encoded($0)) }.filter { $0.count < 10_000 }
        func mutate(_ original: [UInt8]) -> [UInt8] {
            var wire = original
            for _ in 0...(random.next() % 4) {
                switch random.next() % 5 {
                case 0, 1:
                    if !wire.isEmpty { wire[Int(random.next() % UInt64(wire.count))] = UInt8(truncatingIfNeeded: random.next()) }
                case 2:
                    if !wire.isEmpty { wire[Int(random.next() % UInt64(wire.count))] ^= 1 << (random.next() % 8) }
                case 3:
                    wire.insert(UInt8(truncatingIfNeeded: random.next()), at: Int(random.next() % UInt64(wire.count + 1)))
                default:
                    if !wire.isEmpty { wire.remove(at: Int(random.next() % UInt64(wire.count))) }
                }
            }
            return wire
        }
        for _ in 0..<10_000 {
            let request = mutate(requestWires[Int(random.next() % UInt64(requestWires.count))])
            if case .failure(let error) = decodeRequest(request) { #expect(error.code == .protocolViolation) }
            let reply = mutate(replyWires[Int(random.next() % UInt64(replyWires.count))])
            if case .failure(let error) = decodeReply(reply) { #expect(error.code == .protocolViolation) }
        }
    }
}

@Suite struct InlineSizeTests {
    /// An `object` reply whose size is past `Int.max` and that carries inline bytes is refused, never a trap (the
    /// mutation test found `Int(size)` trapping once the handshake's samples shifted its random sequence).
    @Test func aSizePastIntMaxWithInlineBytesIsRefused() {
        let reply = Reply.object(ObjectInfo(bucket: "b", key: "k", blob: 7, size: .max, sealed: true, modified: 1,
                                            metadata: [:], locations: [], contents: [1, 2, 3]))
        #expect(decodeReply(bytes(encoded(reply))).error?.code == .protocolViolation)
    }
}
