/// Where the bytes of a read go: memory that stays valid and is written by nobody else until the read
/// returns. Offsets on the wire are relative to the start of the read.
public protocol ReadSink: Sendable {
    var destination: UnsafeMutableRawBufferPointer { get }
}
