import GedsCore
import GedsTier1
import NIOCore

/// The bytes of the state directory's files (see "The MDS's journal" in docs/ARCHITECTURE.md). A journal file
/// and a snapshot are a header and then records; integers are big-endian.
///
/// Header, 36 bytes: magic (`GEDSJRNL` or `GEDSSNAP`), format version (u32), the epoch of the MDS run that wrote
/// it (u32), a generation (u64: a journal's own; a snapshot's is the first journal it does not include), the
/// revision (u64: a snapshot's; 0 in a journal), CRC-32C of the 32 bytes before it (u32).
/// Record: payload length (u32), CRC-32C of the payload (u32), payload: the namespace revision after the change
/// (u64), then the change (`NamespaceChange`: a kind byte and its fields).
enum JournalFormat {
    static let version: UInt32 = 1
    static let headerSize = 36
    static let recordHeaderSize = 8
    /// Far above any record (a change carries names and metadata, each within the wire limits).
    static let maximumPayload = 1 << 20

    enum FileKind: CaseIterable {
        case journal, snapshot

        var magic: [UInt8] { Array((self == .journal ? "GEDSJRNL" : "GEDSSNAP").utf8) }
    }

    struct Header: Equatable {
        var kind: FileKind
        var epoch: UInt32
        var generation: UInt64
        var revision: UInt64
    }

    struct Record: Equatable {
        var revision: UInt64
        var change: NamespaceChange
    }

    static func write(_ header: Header, into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        buffer.writeBytes(header.kind.magic)
        buffer.writeInteger(version)
        buffer.writeInteger(header.epoch)
        buffer.writeInteger(header.generation)
        buffer.writeInteger(header.revision)
        buffer.writeInteger(checksum(of: buffer, from: start))
    }

    /// The header at the start of `bytes`; nil when they are too short for one (a file torn as it was created).
    static func header(of bytes: ByteBuffer) throws(GedsError) -> Header? {
        guard bytes.readableBytes >= headerSize else { return nil }
        var buffer = bytes.getSlice(at: bytes.readerIndex, length: headerSize)!
        let magic = buffer.readBytes(length: 8)!
        guard let kind = FileKind.allCases.first(where: { $0.magic == magic }) else {
            throw GedsError(.protocolViolation, "not a GEDS journal or snapshot (its first bytes are \(magic))")
        }
        let fileVersion: UInt32 = buffer.readInteger()!
        guard fileVersion == version else {
            throw GedsError(.protocolViolation, "format version \(fileVersion) is not one this geds-mds reads (it reads \(version))")
        }
        let header = Header(kind: kind, epoch: buffer.readInteger()!, generation: buffer.readInteger()!, revision: buffer.readInteger()!)
        guard buffer.readInteger(as: UInt32.self)! == checksum(of: bytes, from: bytes.readerIndex, length: headerSize - 4) else {
            throw GedsError(.checksumMismatch, "the header fails its checksum")
        }
        return header
    }

    /// Appends a record; returns its length in bytes.
    @discardableResult
    static func append(_ record: Record, to buffer: inout ByteBuffer) -> Int {
        let start = buffer.writerIndex
        buffer.writeInteger(UInt64(0))  // length and checksum, set below
        buffer.writeInteger(record.revision)
        record.change.encode(into: &buffer)
        let length = buffer.writerIndex - start - recordHeaderSize
        buffer.setInteger(UInt32(length), at: start)
        buffer.setInteger(checksum(of: buffer, from: start + recordHeaderSize), at: start + 4)
        return buffer.writerIndex - start
    }

    /// Calls `visit` with each record after the header, in order, up to the first that is torn (cut short by a crash
    /// mid-write) or fails its checksum; returns where the valid records end (the rest is what was dropped).
    static func forEachRecord<Failure: Error>(in bytes: ByteBuffer, _ visit: (Record) throws(Failure) -> Void) throws(Failure) -> Int {
        var buffer = bytes
        buffer.moveReaderIndex(forwardBy: min(headerSize, buffer.readableBytes))
        while buffer.readableBytes >= recordHeaderSize {
            let start = buffer.readerIndex
            let length = Int(buffer.getInteger(at: start, as: UInt32.self)!)
            let expected = buffer.getInteger(at: start + 4, as: UInt32.self)!
            guard length >= 9, length <= maximumPayload, buffer.readableBytes - recordHeaderSize >= length,
                  checksum(of: buffer, from: start + recordHeaderSize, length: length) == expected else { break }
            var payload = buffer.getSlice(at: start + recordHeaderSize, length: length)!
            let revision: UInt64 = payload.readInteger()!
            guard let change = try? NamespaceChange.decode(from: &payload) else { break }
            try visit(Record(revision: revision, change: change))
            buffer.moveReaderIndex(forwardBy: recordHeaderSize + length)
        }
        return buffer.readerIndex - bytes.readerIndex
    }

    /// The bytes a crash tore after the valid records (`valid`, from `forEachRecord`): up to the last non-zero byte,
    /// as a journal file is preallocated with zeros.
    static func tornBytes(in bytes: ByteBuffer, after valid: Int) -> Int {
        bytes.withUnsafeReadableBytes { bytes in
            var end = bytes.count
            while end > valid, bytes[end - 1] == 0 { end -= 1 }
            return end - valid
        }
    }

    private static func checksum(of buffer: ByteBuffer, from start: Int, length: Int? = nil) -> UInt32 {
        buffer.withUnsafeReadableBytes { bytes in
            let offset = start - buffer.readerIndex
            let count = length ?? (bytes.count - offset)
            return CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)]))
        }
    }
}
