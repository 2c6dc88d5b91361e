import GedsTestSupport
import GedsCore
import GedsWire
import NIOCore
import Testing

func readHeader(_ bytes: [UInt8]) -> Result<FrameHeader?, GedsError> {
    var buffer = ByteBuffer(bytes: bytes)
    do throws(GedsError) { return .success(try FrameHeader.read(from: &buffer)) } catch { return .failure(error) }
}

func headerBytes(magic: UInt16 = FrameHeader.magic, version: UInt8 = FrameHeader.version, kind: UInt8,
                 id: UInt64 = 1, length: UInt32) -> [UInt8] {
    payload {
        $0.writeInteger(magic)
        $0.writeInteger(version)
        $0.writeInteger(kind)
        $0.writeInteger(id)
        $0.writeInteger(length)
    }
}

@Suite struct FrameHeaderTests {
    @Test func layoutIsAsDocumented() {
        #expect(FrameHeader.size == 16)
        var buffer = ByteBuffer()
        FrameHeader(kind: .reply, requestID: 0x0102_0304_0506_0708, length: 0x0A0B_0C0D).write(to: &buffer)
        #expect(bytes(buffer) == [0x47, 0x45, FrameHeader.version, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0x0A, 0x0B, 0x0C, 0x0D])
    }

    @Test(arguments: [FrameHeader.Kind.request, .reply, .data])
    func roundTrip(_ kind: FrameHeader.Kind) {
        for (id, length) in [(UInt64(0), UInt32(0)), (1, 1), (.max, 4 << 20), (123_456_789, 65_536)] {
            let header = FrameHeader(kind: kind, requestID: id, length: length)
            var buffer = ByteBuffer()
            header.write(to: &buffer)
            buffer.writeBytes([9, 9, 9])  // the payload's first bytes stay unread
            var reader = buffer
            let result: FrameHeader?
            do throws(GedsError) { result = try FrameHeader.read(from: &reader) } catch {
                Issue.record("valid header refused: \(error)")
                continue
            }
            #expect(result == header)
            #expect(reader.readableBytes == 3)
        }
    }

    @Test func partialHeaderIsNotConsumed() {
        let full = headerBytes(kind: 1, length: 10)
        for count in 0..<FrameHeader.size {
            var buffer = ByteBuffer(bytes: full[..<count])
            let result: FrameHeader??
            do throws(GedsError) { result = try FrameHeader.read(from: &buffer) } catch {
                Issue.record("a partial header is not an error: \(error)")
                continue
            }
            #expect(result == .some(nil), "\(count) bytes")
            #expect(buffer.readableBytes == count)
        }
    }

    @Test func badMagicIsRefused() {
        for magic: UInt16 in [0, 0x4547, 0x4746, 0xFFFF, 0x4845] {
            #expect(readHeader(headerBytes(magic: magic, kind: 1, length: 0)).error?.code == .protocolViolation, "magic \(magic)")
        }
        // An HTTP request on the port.
        #expect(readHeader(Array("GET / HTTP/1.1\r\n\r\n".utf8)).error?.code == .protocolViolation)
    }

    @Test func badVersionIsRefused() {
        for version: UInt8 in [0, 2, 3, 0xFF] where version != FrameHeader.version {
            #expect(readHeader(headerBytes(version: version, kind: 1, length: 0)).error?.code == .protocolViolation)
        }
    }

    @Test func unknownKindIsRefused() {
        for kind: UInt8 in [0, 4, 5, 0x80, 0xFF] {
            #expect(readHeader(headerBytes(kind: kind, length: 0)).error?.code == .protocolViolation, "kind \(kind)")
        }
    }

    /// Only the 16 header bytes are present: the length alone is enough to refuse the frame.
    @Test func oversizedLengthIsRefusedBeforeThePayload() {
        for kind in [FrameHeader.Kind.request, .reply] {
            let limit = WireLimits.maximumMessagePayload
            #expect(readHeader(headerBytes(kind: kind.rawValue, length: limit)).value??.length == limit)
            for length in [limit + 1, limit * 2, .max] {
                #expect(readHeader(headerBytes(kind: kind.rawValue, length: length)).error?.code == .frameTooLarge)
            }
        }
        let dataLimit = WireLimits.maximumDataPayload
        #expect(readHeader(headerBytes(kind: 3, length: dataLimit)).value??.length == dataLimit)
        #expect(readHeader(headerBytes(kind: 3, length: dataLimit + 1)).error?.code == .frameTooLarge)
        #expect(readHeader(headerBytes(kind: 3, length: .max)).error?.code == .frameTooLarge)
    }

    /// Frames appended one after another to one buffer (as a server gathers a read's replies, behind bytes already
    /// there) are byte for byte the frames made one at a time.
    @Test func appendedFramesEqualFramesMadeAlone() {
        var gathered = ByteBufferAllocator().buffer(capacity: 1)
        gathered.writeBytes([7, 7, 7])
        var alone: [UInt8] = [7, 7, 7]
        for (index, reply) in Samples.replies.enumerated() {
            FrameEncoder.append(reply, id: UInt64(index), to: &gathered)
            alone += bytes(FrameEncoder.frame(reply, id: UInt64(index), allocator: ByteBufferAllocator()))
        }
        for (index, request) in Samples.requests.enumerated() {
            FrameEncoder.append(request, id: .max - UInt64(index), to: &gathered)
            alone += bytes(FrameEncoder.frame(request, id: .max - UInt64(index), allocator: ByteBufferAllocator()))
        }
        #expect(bytes(gathered) == alone)
    }

    @Test func encoderFramesMessages() {
        for (index, request) in Samples.requests.enumerated() {
            var frame = FrameEncoder.frame(request, id: UInt64(index) * 1_000_003, allocator: ByteBufferAllocator())
            let total = frame.readableBytes
            guard case .success(let header?) = { () -> Result<FrameHeader?, GedsError> in
                do throws(GedsError) { return .success(try FrameHeader.read(from: &frame)) } catch { return .failure(error) }
            }() else {
                Issue.record("frame header of \(caseName(request)) unreadable")
                continue
            }
            #expect(header.kind == .request)
            #expect(header.requestID == UInt64(index) * 1_000_003)
            #expect(Int(header.length) == total - FrameHeader.size)
            #expect(decodeRequest(bytes(frame)).value == request)
        }
        for (index, reply) in Samples.replies.enumerated() {
            var frame = FrameEncoder.frame(reply, id: .max - UInt64(index), allocator: ByteBufferAllocator())
            let total = frame.readableBytes
            guard case .success(let header?) = { () -> Result<FrameHeader?, GedsError> in
                do throws(GedsError) { return .success(try FrameHeader.read(from: &frame)) } catch { return .failure(error) }
            }() else {
                Issue.record("frame header of \(caseName(reply)) unreadable")
                continue
            }
            #expect(header.kind == .reply)
            #expect(header.requestID == .max - UInt64(index))
            #expect(Int(header.length) == total - FrameHeader.size)
            #expect(decodeReply(bytes(frame)).value == reply)
        }
        let data = FrameEncoder.dataHeader(id: 99, length: 1 << 20, allocator: ByteBufferAllocator())
        #expect(data.readableBytes == FrameHeader.size)
        #expect(readHeader(bytes(data)).value == FrameHeader(kind: .data, requestID: 99, length: 1 << 20))
    }

    @Test func randomHeadersNeverCrash() {
        var random = SplitMix64(seed: 99)
        for _ in 0..<20_000 {
            var wire = (0..<16).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            if random.next() % 2 == 0 { wire[0] = 0x47; wire[1] = 0x45; wire[2] = FrameHeader.version }
            switch readHeader(wire) {
            case .success(let header):
                #expect(header != nil)
                if let header { #expect(header.length <= max(WireLimits.maximumDataPayload, WireLimits.maximumMessagePayload)) }
            case .failure(let error):
                #expect(error.code == .protocolViolation || error.code == .frameTooLarge)
            }
        }
    }
}

/// Frames carried whole as one message each (RDMA send/receive).
@Suite struct WholeFrameTests {
    @Test func requestsAndRepliesRoundTrip() throws {
        let request = Request.lookup(bucket: "bkt", key: "a/b")
        let decoded = try WholeFrame.request(from: WholeFrame.bytes(request, id: 42))
        #expect(decoded.id == 42 && decoded.request == request)
        let reply = Reply.buckets(["one", "two"])
        let answer = try WholeFrame.reply(from: WholeFrame.bytes(reply, id: .max))
        #expect(answer.id == .max && answer.reply == reply)
    }

    @Test func aMessageMustHoldExactlyOneFrameOfTheExpectedKind() {
        let frame = WholeFrame.bytes(Request.listBuckets, id: 1)
        for (what, message, code) in [("short", Array(frame.prefix(10)), GedsError.Code.protocolViolation),
                                      ("missing payload", Array(frame.dropLast()), .protocolViolation),
                                      ("extra byte", frame + [0], .protocolViolation),
                                      ("over the bound", headerBytes(kind: 1, length: WireLimits.maximumMessagePayload + 1), .frameTooLarge),
                                      ("a reply", WholeFrame.bytes(Reply.ok, id: 1), .protocolViolation)] {
            #expect(throws: GedsError.self, "\(what)") { _ = try WholeFrame.request(from: message) }
            do throws(GedsError) { _ = try WholeFrame.request(from: message) } catch { #expect(error.code == code, "\(what)") }
        }
        #expect(throws: GedsError.self) { _ = try WholeFrame.reply(from: frame) }
    }
}
