@testable import GEDS
import GedsCore
import GedsWire
import Testing
#if canImport(Glibc)
import Glibc
import GedsTestSupport
#endif

/// Attach mode in one test process: a daemon node with its local endpoint, and handles attached to it.
@Suite(.serialized)
struct AttachTests {
    /// Starts an MDS and a daemon node listening on a local socket, runs `body`, and closes everything.
    func withDaemon(_ body: (Cluster, GEDS, LocalEndpoint) async throws -> Void) async throws {
        // A long lease: attached calls block their thread, here one of the cooperative pool the in-process daemon
        // needs too, so under a full parallel test run its heartbeats may wait longer than the usual 5 s.
        let cluster = try await Cluster.start(leaseMilliseconds: 60_000, folderPrefix: "geds-attach")
        let daemon = try await cluster.handle("daemon", hostID: "h", role: .daemon) { $0.attach = .never }
        let endpoint = try LocalEndpoint.start(node: daemon.node, path: "/tmp/\(cluster.run).sock", mode: 0o600, logger: quiet)
        do {
            try await body(cluster, daemon, endpoint)
        } catch {
            endpoint.close()
            await cluster.close([daemon])
            throw error
        }
        endpoint.close()
        await cluster.close([daemon])
    }

    @Test func attachedWritesLandInTheDaemonsTier0AndViewsMapIt() async throws {
        try await withDaemon { cluster, daemon, endpoint in
            let attached = try GEDS.attach(socketPath: endpoint.path, mds: "\(cluster.mds.localAddress)")
            #expect(attached.node == nil && attached.attachedNode?.name == daemon.nodeName)
            try await attached.createBucket("attach")
            let bytes = randomBytes(3 << 20, seed: 7)
            let writer = try await attached.create(bucket: "attach", key: "k")
            try writer.write(Array(bytes[..<(1 << 20)]), at: 0)
            try writer.write(Array(bytes[(1 << 20)...]), at: 1 << 20)
            try await writer.seal(metadata: ["m": "v"])
            let info = try await daemon.stat(bucket: "attach", key: "k")
            #expect(info.locations.map(\.holder) == [daemon.nodeName] && info.metadata == ["m": "v"])

            let view = try await attached.open(bucket: "attach", key: "k").view()
            #expect(sha256(view) == sha256(bytes))
            #expect(mappedFile(of: view) == daemon.node.tier0.path(of: info.blob), "the view maps the daemon's tier-0 file")
            try await attached.delete(bucket: "attach", key: "k")
            #expect(sha256(view) == sha256(bytes), "a view outlives the delete")

            // Ranged reads into caller memory, and a read of a whole object in one call.
            try await attached.put(bucket: "attach", key: "small", bytes: Array(bytes[..<4096]))
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
            defer { buffer.deallocate() }
            let got = try await attached.read(bucket: "attach", key: "small", into: buffer)
            #expect(got == 4096 && Array(buffer) == Array(bytes[..<4096]))
            #expect(try await attached.open(bucket: "attach", key: "small").read(at: 100, length: 50) == Array(bytes[100..<150]))
            // A small object sits in a slot of a daemon's slab: the attached view is a copy of its own, kept after a delete.
            let smallView = try await attached.open(bucket: "attach", key: "small").view()
            #expect(sha256(smallView) == sha256(Array(bytes[..<4096])))
            try await attached.delete(bucket: "attach", key: "small")
            #expect(sha256(smallView) == sha256(Array(bytes[..<4096])), "a view outlives the delete")
            let missing = await gedsError { _ = try await attached.get(bucket: "attach", key: "none") }
            #expect(missing?.code == .noSuchObject)
        }
    }

    /// A small put is one request (`LocalRequest.put`): the bytes read back are those written, in the daemon's tier 0
    /// (a slab slot) and inline at the MDS; larger ones take create + write + seal; errors are those of that way.
    @Test func attachedPutIsOneRequestWithTheErrorsOfCreateAndSeal() async throws {
        try await withDaemon { cluster, daemon, endpoint in
            let attached = try GEDS.attach(socketPath: endpoint.path, mds: "\(cluster.mds.localAddress)")
            try await attached.createBucket("put")
            for (index, size) in [0, 1, 4096, LocalRequest.maximumPutBytes, LocalRequest.maximumPutBytes + 1, 1 << 20].enumerated() {
                let bytes = randomBytes(size, seed: UInt64(index + 11))
                try await attached.put(bucket: "put", key: "k\(size)", bytes: bytes, metadata: ["size": "\(size)"])
                let info = try await daemon.stat(bucket: "put", key: "k\(size)")
                #expect(info.size == UInt64(size) && info.metadata == ["size": "\(size)"])
                #expect(info.locations.map(\.holder) == [daemon.nodeName], "published by the daemon as its own")
                #expect(sha256(try await attached.get(bucket: "put", key: "k\(size)")) == sha256(bytes), "\(size) bytes")
                #expect(sha256(try await daemon.open(bucket: "put", key: "k\(size)").view()) == sha256(bytes), "\(size) bytes, tier 0")
            }
            // From caller memory, replacing an object.
            let replacement = randomBytes(5000, seed: 99)
            let source = UnsafeMutableRawBufferPointer.allocate(byteCount: replacement.count, alignment: 16)
            defer { source.deallocate() }
            source.copyBytes(from: replacement)
            try await attached.put(try ObjectPath(bucket: BucketName("put"), key: ObjectKey("k4096")), from: UnsafeRawBufferPointer(source))
            #expect(try await attached.get(bucket: "put", key: "k4096") == replacement)

            // The errors of create + seal: exclusive on an existing key, a missing bucket, bad metadata, bad names.
            let exists = await gedsError { try await attached.put(bucket: "put", key: "k1", bytes: [1], exclusive: true) }
            #expect(exists?.code == .objectExists, "\(String(describing: exists))")
            #expect(try await attached.get(bucket: "put", key: "k1") == randomBytes(1, seed: 12), "the older object stays")
            try await attached.put(bucket: "put", key: "new", bytes: [7, 8], exclusive: true)
            #expect(try await attached.get(bucket: "put", key: "new") == [7, 8])
            for bytes in [[UInt8](repeating: 1, count: 10), [UInt8](repeating: 1, count: LocalRequest.maximumPutBytes + 1)] {
                let missing = await gedsError { try await attached.put(bucket: "no-such-bucket", key: "k", bytes: bytes) }
                #expect(missing?.code == .noSuchBucket, "\(String(describing: missing))")
                let badMetadata = await gedsError { try await attached.put(bucket: "put", key: "m", bytes: bytes, metadata: ["": "x"]) }
                #expect(badMetadata?.code == .invalidArgument, "\(String(describing: badMetadata))")
                let badKey = await gedsError { try await attached.put(bucket: "put", key: "", bytes: bytes) }
                #expect(badKey?.code == .invalidName, "\(String(describing: badKey))")
            }
            #expect(await gedsError { _ = try await attached.stat(bucket: "put", key: "m") }?.code == .noSuchObject)
        }
    }

    @Test func unsealedWriterThatGoesAwayLeavesNothing() async throws {
        try await withDaemon { cluster, daemon, endpoint in
            let attached = try GEDS.attach(socketPath: endpoint.path)
            try await attached.createBucket("attach")
            var writer: ObjectWriter? = try await attached.create(bucket: "attach", key: "dropped")
            try writer?.write(randomBytes(1 << 20, seed: 1), at: 0)
            let folder = daemon.node.configuration.tier0Directory
            #expect(try listDirectory(folder).count == 1)
            writer = nil
            #expect(await eventually { (try? listDirectory(folder))?.isEmpty == true }, "the daemon reclaimed the file")
            // The daemon tells the MDS after the file is gone (LocalEndpoint.abandon), so this may take a moment.
            #expect(await eventually {
                await gedsError { _ = try await attached.stat(bucket: "attach", key: "dropped") }?.code == .noSuchObject
            }, "the MDS forgot the blob")
        }
    }

    @Test func daemonRestartFailsOneCallAndTheNextAttachesAgain() async throws {
        let cluster = try await Cluster.start(folderPrefix: "geds-attach")
        let path = "/tmp/\(cluster.run).sock"
        var daemon = try await cluster.handle("daemon", hostID: "h", role: .daemon) { $0.attach = .never }
        var endpoint = try LocalEndpoint.start(node: daemon.node, path: path, mode: 0o600, logger: quiet)
        let attached = try GEDS.attach(socketPath: path)
        try await attached.createBucket("attach")
        endpoint.close()
        await daemon.close()
        daemon = try await cluster.handle("daemon2", hostID: "h", role: .daemon) { $0.attach = .never }
        endpoint = try LocalEndpoint.start(node: daemon.node, path: path, mode: 0o600, logger: quiet)
        let failure = await gedsError { try await attached.put(bucket: "attach", key: "k", bytes: [1, 2, 3]) }
        #expect(failure?.code == .peerUnreachable && failure?.message.contains("went away") == true, "\(String(describing: failure))")
        try await attached.put(bucket: "attach", key: "k", bytes: [1, 2, 3])
        #expect(try await attached.get(bucket: "attach", key: "k") == [1, 2, 3])
        #expect(attached.attachedNode?.name == daemon.nodeName)
        endpoint.close()
        await cluster.close([daemon])
    }

    @Test func forkedChildAttachesAgainAndWrites() async throws {
        try await withDaemon { cluster, daemon, endpoint in
            let attached = try GEDS.attach(socketPath: endpoint.path)
            try await attached.createBucket("attach")
            try await attached.put(bucket: "attach", key: "parent", bytes: randomBytes(10_000, seed: 3))
            let attachment = try #require(attached.attachment)
            let pid = fork()
            if pid == 0 {
                // The child: only this thread exists, so it uses the attachment's blocking calls directly.
                var status: Int32 = 1
                do throws(GedsError) {
                    guard case .object(let info) = try attachment.call(.call(.lookup(bucket: "attach", key: "parent"))) else { _exit(2) }
                    let view = try attachment.view(info)
                    let (connection, writable) = try attachment.create(bucket: "attach", key: "child", persistency: nil)
                    try writable.write(view.bytes, at: 0)
                    try attachment.seal(writable, on: connection, metadata: [:], handingOffTo: nil)
                    status = 0
                } catch {
                    status = 3
                }
                _exit(status)
            }
            var status: Int32 = 0
            #expect(waitpid(pid, &status, 0) == pid)
            #expect(status == 0, "the child's exit status")
            #expect(try await attached.get(bucket: "attach", key: "child") == randomBytes(10_000, seed: 3))
            // The parent's connections were not disturbed by the child's.
            #expect(try await attached.get(bucket: "attach", key: "parent") == randomBytes(10_000, seed: 3))
        }
    }
}

func listDirectory(_ path: String) throws -> [String] {
    guard let directory = opendir(path) else { throw GedsError.io("cannot list \(path)", errno: errno) }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}
