import Crypto
@testable import GEDS
import GedsCore
import GedsMDS
import Logging
import Testing
#if canImport(Glibc)
import Glibc
import GedsTestSupport
#endif

let quiet = Logger(label: "geds-test", factory: { _ in SwiftLogNoOpLogHandler() })

/// One MDS on a loopback port and GEDS handles, each with its own tier-0 folder under /dev/shm; `close`
/// shuts everything down and removes the folders.
final class Cluster: Sendable {
    let mds: MetadataServer
    let run: String

    private init(mds: MetadataServer, folderPrefix: String) {
        self.mds = mds
        run = "\(folderPrefix)-\(UInt64.random(in: 0...UInt64.max))"
    }

    /// `inlineLimit` 0 keeps small objects' bytes off the MDS, so that their reads take the data plane.
    static func start(leaseMilliseconds: UInt64 = 5000, rdmaListen: Endpoint? = nil, inlineLimit: UInt32 = InlineContents.defaultLimit,
                      folderPrefix: String = "geds-unit") async throws -> Cluster {
        Cluster(mds: try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), rdmaListen: rdmaListen,
                                                    leaseMilliseconds: leaseMilliseconds, inlineLimit: inlineLimit, logger: quiet),
                folderPrefix: folderPrefix)
    }

    func directory(_ name: String) -> String { "/dev/shm/\(run)-\(name)" }

    func handle(_ name: String, hostID: String, role: NodeRole = .embedded,
                configure: (inout NodeConfiguration) -> Void = { _ in }) async throws -> GEDS {
        var configuration = NodeConfiguration(mds: mds.localAddress, tier0Directory: directory(name),
                                              removeTier0OnShutdown: true, name: "\(run)-\(name)",
                                              hostID: hostID, role: role)
        configure(&configuration)
        return try await GEDS.connect(configuration, logger: quiet)
    }

    func close(_ handles: [GEDS]) async {
        for handle in handles { await handle.close() }
        await mds.close()
        for handle in handles {
            removeTree(handle.node.configuration.tier0Directory)
            if let tier1 = handle.node.configuration.tier1 { removeTree(tier1.directory) }
        }
    }
}

/// Starts an MDS and a handle per (name, host id), runs `body`, and closes everything whatever happens.
func withCluster(_ nodes: [(name: String, hostID: String, role: NodeRole)], leaseMilliseconds: UInt64 = 5000,
                 inlineLimit: UInt32 = InlineContents.defaultLimit, folderPrefix: String = "geds-unit",
                 _ body: (Cluster, [GEDS]) async throws -> Void) async throws {
    let cluster = try await Cluster.start(leaseMilliseconds: leaseMilliseconds, inlineLimit: inlineLimit, folderPrefix: folderPrefix)
    var handles: [GEDS] = []
    do {
        for node in nodes { handles.append(try await cluster.handle(node.name, hostID: node.hostID, role: node.role)) }
        try await body(cluster, handles)
    } catch {
        await cluster.close(handles)
        throw error
    }
    await cluster.close(handles)
}


/// Deterministic pseudo-random bytes (SplitMix64), fast enough for 64 MiB in a debug build.
func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    var state = seed
    bytes.withUnsafeMutableBytes { raw in
        let words = count / 8
        let base = raw.baseAddress!
        for index in 0..<words {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            base.storeBytes(of: z ^ (z >> 31), toByteOffset: index * 8, as: UInt64.self)
        }
        for index in (words * 8)..<count { raw[index] = UInt8(truncatingIfNeeded: index &* 31 &+ Int(seed)) }
    }
    return bytes
}


func sha256(_ bytes: UnsafeRawBufferPointer) -> SHA256Digest {
    var hasher = SHA256()
    hasher.update(bufferPointer: bytes)
    return hasher.finalize()
}

func sha256(_ bytes: [UInt8]) -> SHA256Digest { bytes.withUnsafeBytes { sha256($0) } }

/// `mapping` is an argument, so it stays mapped for the whole call.
func sha256(_ mapping: MappedBytes) -> SHA256Digest { sha256(mapping.bytes) }

func contents(_ mapping: MappedBytes) -> [UInt8] { Array(mapping.bytes) }


/// Where a view's bytes live: the file mapped at its first and last byte (nil for an empty view).
func mappedFile(of view: MappedBytes) -> String? {
    guard let base = view.base, view.count > 0 else { return nil }
    guard let first = mappingOf(base), let last = mappingOf(base + (view.count - 1)), first.path == last.path else {
        return nil
    }
    return first.path
}

func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

/// Polls `condition` until it holds or `seconds` pass.
func eventually(seconds: Double = 10, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

/// Removes /dev/shm folders whose name starts with `prefix` (left behind by a child process that crashed).
func removeFolders(prefix: String) {
    guard let dir = opendir("/dev/shm") else { return }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name.hasPrefix(prefix) { names.append(name) }
    }
    closedir(dir)
    for name in names { removeTree("/dev/shm/" + name) }
}
