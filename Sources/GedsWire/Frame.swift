import GedsCore
import NIOCore

/// Every message on every GEDS port travels in a frame with this 16-byte header:
///
///     magic u16 = 0x4745 ("GE") | version u8 | kind u8 | request id u64 | payload length u32
///
/// All integers are big-endian. The length is checked against `WireLimits` before any payload is read or
/// allocated, so a lying peer costs nothing but its connection.
public struct FrameHeader: Sendable, Equatable {
    public static let size = 16
    public static let magic: UInt16 = 0x4745
    public static let version: UInt8 = 1

    public enum Kind: UInt8, Sendable {
        /// A request (payload: `Request`).
        case request = 1
        /// The answer to the request with the same id (payload: `Reply`).
        case reply = 2
        /// Object bytes streamed for the request with the same id, after a `.stream` reply.
        case data = 3
    }

    public var kind: Kind
    public var requestID: UInt64
    public var length: UInt32

    public init(kind: Kind, requestID: UInt64, length: UInt32) {
        self.kind = kind
        self.requestID = requestID
        self.length = length
    }

    public func write(to buffer: inout ByteBuffer) {
        buffer.writeInteger(FrameHeader.magic)
        buffer.writeInteger(FrameHeader.version)
        buffer.writeInteger(kind.rawValue)
        buffer.writeInteger(requestID)
        buffer.writeInteger(length)
    }

    func set(in buffer: inout ByteBuffer, at index: Int) {
        buffer.setInteger(FrameHeader.magic, at: index)
        buffer.setInteger(FrameHeader.version, at: index + 2)
        buffer.setInteger(kind.rawValue, at: index + 3)
        buffer.setInteger(requestID, at: index + 4)
        buffer.setInteger(length, at: index + 12)
    }

    /// Reads a header if 16 bytes are there (nil otherwise); throws on a header no GEDS peer would send.
    public static func read(from buffer: inout ByteBuffer) throws(GedsError) -> FrameHeader? {
        guard buffer.readableBytes >= size else { return nil }
        let magic = buffer.readInteger(as: UInt16.self)!
        let version = buffer.readInteger(as: UInt8.self)!
        let rawKind = buffer.readInteger(as: UInt8.self)!
        let requestID = buffer.readInteger(as: UInt64.self)!
        let length = buffer.readInteger(as: UInt32.self)!
        guard magic == FrameHeader.magic else {
            if magic == 0x1603 {  // a TLS record of the handshake: a client that speaks TLS to a server that does not
                throw GedsError(.protocolViolation, "not a GEDS frame but a TLS handshake: the peer uses TLS and this side "
                                + "does not (--tls-cert, --tls-key, --tls-ca)")
            }
            throw GedsError(.protocolViolation, "not a GEDS frame (bad magic 0x\(String(magic, radix: 16)))")
        }
        guard version == FrameHeader.version else {
            throw GedsError(.protocolViolation, "unsupported protocol version \(version) (this build speaks \(FrameHeader.version))")
        }
        guard let kind = Kind(rawValue: rawKind) else {
            throw GedsError(.protocolViolation, "unknown frame kind \(rawKind)")
        }
        let limit = kind == .data ? WireLimits.maximumDataPayload : WireLimits.maximumMessagePayload
        guard length <= limit else {
            throw GedsError(.frameTooLarge, "frame of \(length) bytes exceeds the limit of \(limit) for \(kind)")
        }
        return FrameHeader(kind: kind, requestID: requestID, length: length)
    }
}

public enum WireLimits {
    /// Requests and replies: large enough for a full listing page of maximal keys.
    public static let maximumMessagePayload: UInt32 = 4 << 20
    /// One chunk of streamed object bytes; big objects are cut into chunks so that small replies on the same
    /// connection never wait behind a whole large object.
    public static let maximumDataPayload: UInt32 = 4 << 20
    /// How many keys one listing page holds at most (as S3).
    public static let maximumListKeys: UInt32 = 1000
    /// Strings inside messages (names, endpoints, paths, metadata values).
    public static let maximumString = 4096
    /// Elements of any list inside a message.
    public static let maximumElements = 100_000
}
