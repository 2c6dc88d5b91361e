import GedsCore
import GedsWire
import NIOCore
import Testing

/// Values no encoder produces: each is refused as malformed, never decoded into something else.
@Suite struct EventCodecTests {
    @Test func unknownScopeKindIsRefused() {
        for kind in [0, 4, 0xFF] as [UInt8] {
            let bytes = payload { buffer in
                buffer.writeInteger(tag(of: .subscribe(scope: .bucket("b"), after: nil)))
                buffer.writeInteger(kind)
                for text in ["bucket", "key"] {
                    buffer.writeInteger(UInt32(text.utf8.count))
                    buffer.writeString(text)
                }
                buffer.writeInteger(UInt8(0))
            }
            #expect(decodeRequest(bytes).error?.code == .protocolViolation, "scope kind \(kind)")
        }
    }

    @Test func unknownEventKindAndEndReasonAreRefused() {
        let event = NamespaceEvent(revision: 1, kind: .created, bucket: "b", key: "k")
        var good = bytes(encoded(Reply.events([event])))
        // tag, count (4), revision (8), then the kind byte.
        good[13] = 0
        #expect(decodeReply(good).error?.code == .protocolViolation)
        good[13] = UInt8(NamespaceEvent.Kind.allCases.count + 1)
        #expect(decodeReply(good).error?.code == .protocolViolation)
        var ended = bytes(encoded(Reply.subscriptionEnded(.compacted(oldest: 3))))
        ended[1] = 3
        #expect(decodeReply(ended).error?.code == .protocolViolation)
    }
}
