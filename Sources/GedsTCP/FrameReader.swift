import GedsCore
import GedsWire
import NIOCore

/// What arrives on a GEDS connection, one frame (or one slice of a data frame) at a time.
@_spi(Fuzzing) public enum InboundFrame {
    case request(id: UInt64, Request)
    case reply(id: UInt64, Reply)
    /// Part of a data frame, handed on as it arrives so that object bytes go straight to their destination
    /// instead of being gathered into a frame-sized buffer first.
    case data(id: UInt64, ByteBuffer)
}

/// Cuts the byte stream into frames. Headers are validated (magic, version, kind, length bound) before any
/// payload is buffered; a violation is thrown and the connection is closed by the caller.
@_spi(Fuzzing) public struct FrameReader {
    private var pending: ByteBuffer?
    private var header: FrameHeader?
    private var dataRemaining = 0

    public init() {}

    /// Whether the bytes waiting for the rest of a header are a TLS record: what a TLS server sends a plain client (an
    /// alert) before it closes the connection.
    public var holdsTLSRecord: Bool {
        guard header == nil, let pending, pending.readableBytes >= 3,
              let type = pending.getInteger(at: pending.readerIndex, as: UInt8.self),
              let major = pending.getInteger(at: pending.readerIndex + 1, as: UInt8.self) else { return false }
        return (type == TLSRecord.alert || type == TLSRecord.handshake) && major == TLSRecord.majorVersion
    }

    public mutating func consume(_ incoming: ByteBuffer, _ emit: (InboundFrame) throws(GedsError) -> Void) throws(GedsError) {
        var buffer: ByteBuffer
        if var pending = self.pending {
            var incoming = incoming
            pending.writeBuffer(&incoming)
            buffer = pending
            self.pending = nil
        } else {
            buffer = incoming
        }
        while buffer.readableBytes > 0 {
            if dataRemaining > 0, let header {
                let take = min(dataRemaining, buffer.readableBytes)
                let slice = buffer.readSlice(length: take)!
                dataRemaining -= take
                if dataRemaining == 0 { self.header = nil }
                try emit(.data(id: header.requestID, slice))
                continue
            }
            if header == nil {
                guard let next = try FrameHeader.read(from: &buffer) else { break }
                if next.kind == .data {
                    if next.length > 0 {
                        header = next
                        dataRemaining = Int(next.length)
                    }
                    continue
                }
                header = next
            }
            let current = header!
            guard buffer.readableBytes >= Int(current.length) else { break }
            var payload = buffer.readSlice(length: Int(current.length))!
            header = nil
            switch current.kind {
            case .request: try emit(.request(id: current.requestID, try Request.decode(from: &payload)))
            case .reply: try emit(.reply(id: current.requestID, try Reply.decode(from: &payload)))
            case .data: break
            }
        }
        if buffer.readableBytes > 0 {
            buffer.discardReadBytes()
            pending = buffer
        }
    }
}
