import Foundation
import GedsTestSupport
import GedsCore
@testable import GedsVerbs
import Testing

/// A tier-0 style object: a file in /dev/shm filled with random bytes, sealed read-only, mapped MAP_SHARED
/// read-only. Removed (the mapping stays valid while referenced) when the test drops it.
final class ShmObject: Sendable {
    let path: String
    let mapping: SharedMapping

    init(size: Int, name: String = "object") throws {
        path = "/dev/shm/geds-verbs-test-\(getpid())-\(name)-\(UInt32.random(in: 0...UInt32.max))"
        let descriptor = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw RDMAError.system("create \(path)", errno: errno) }
        defer { close(descriptor) }
        guard ftruncate(descriptor, off_t(size)) == 0 else { throw RDMAError.system("ftruncate", errno: errno) }
        try fillRandom(descriptor: descriptor, size: size)
        // Sealed as a tier-0 object is, but mapped from the writer's descriptor: kernels before 6.2 cannot
        // register a read-only shared file mapping.
        fchmod(descriptor, 0o444)
        mapping = try SharedMapping(descriptor: descriptor, writable: true, name: path)
    }

    deinit { unlink(path) }

    var bytes: UnsafeRawBufferPointer { mapping.bytes }
}

/// Random bytes from the kernel, written through the file (as a tier-0 writer's pwrite would).
func fillRandom(descriptor: Int32, size: Int) throws {
    let random = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
    guard random >= 0 else { throw RDMAError.system("open /dev/urandom", errno: errno) }
    defer { close(random) }
    let block = 1 << 20
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: block, alignment: 4096)
    defer { buffer.deallocate() }
    var offset = 0
    while offset < size {
        let want = min(block, size - offset)
        var got = 0
        while got < want {
            let count = read(random, buffer + got, want - got)
            guard count > 0 else { throw RDMAError.system("read /dev/urandom", errno: errno) }
            got += count
        }
        guard pwrite(descriptor, buffer, want, off_t(offset)) == want else { throw RDMAError.system("pwrite", errno: errno) }
        offset += want
    }
}

/// A reader engine and an owner engine (two PDs, two completion queues, two poll threads: like two
/// processes), the owner's responder listening on an ephemeral port.
struct Pair {
    let owner: RDMAEngine
    let responder: RDMAResponder
    let readerEngine: RDMAEngine
    let reader: RDMAReader

    static func make(reader readerAddress: String, owner ownerAddress: String,
                     options: RDMAReader.Options = RDMAReader.Options()) async throws -> Pair {
        let owner = try RDMAEngine(localAddress: ownerAddress)
        let responder = try await RDMAResponder.listen(engine: owner, on: Endpoint(host: ownerAddress, port: 0))
        let readerEngine = try RDMAEngine(localAddress: readerAddress)
        return Pair(owner: owner, responder: responder, readerEngine: readerEngine,
                    reader: RDMAReader(engine: readerEngine, options: options))
    }
}

func equalBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    a.count == b.count && (a.count == 0 || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0)
}

/// Test sizes: 1 B, one byte short of a page, just over 1 MiB (one chunk + 1), 64 MiB + 3 (many chunks in
/// flight, an odd tail).
let readSizes = [1, 4095, (1 << 20) + 1, (64 << 20) + 3]
