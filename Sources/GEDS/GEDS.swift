import GedsCore
import GedsNode
import GedsTCP
import GedsTier0
import GedsTier1
import GedsWire
import Logging

@_exported import struct GedsCore.GedsError
@_exported import struct GedsCore.ObjectInfo
@_exported import struct GedsCore.ListPage
@_exported import struct GedsCore.ListEntry
@_exported import enum GedsCore.Location
@_exported import struct GedsCore.NodeCopy
@_exported import struct GedsCore.S3ObjectReference
@_exported import struct GedsCore.NodeInfo
@_exported import struct GedsCore.Endpoint
@_exported import enum GedsCore.NodeRole
@_exported import enum GedsCore.Tier
@_exported import enum GedsCore.Persistency
@_exported import struct GedsCore.BucketStorage
@_exported import struct GedsCore.Replicas
@_exported import struct GedsNode.NodeConfiguration
@_exported import class GedsNode.LocalEndpoint
@_exported import class GedsTier0.MappedBytes
@_exported import struct GedsTier1.Tier1Configuration

/// A handle to the store: one namespace of buckets and objects shared by every node. Opening it either
/// attaches to the `gedsd` of this host (attach mode: its tier 0 holds what this process writes, and the
/// objects outlive the process), or starts a node embedded in this process, which holds the objects it
/// writes and serves them to the others (see `NodeConfiguration.attach`).
public final class GEDS: Sendable {
    /// The node embedded in this process; nil when attached to the host's gedsd. Internal: programs use the
    /// handle's API below (and geds-perf the `Benchmarks` SPI).
    let node: Node!
    let attachment: Attachment?

    /// Attaches to this host's gedsd when `configuration.attach` finds one, else starts a node here. The
    /// choice is logged (info).
    /// Without a `configuration.token`, the one `$GEDS_TOKEN_FILE` names is used (when set); without a
    /// `configuration.tls`, the files `$GEDS_TLS_CERT`, `$GEDS_TLS_KEY`, `$GEDS_TLS_CA` name (when set).
    public static func connect(_ configuration: NodeConfiguration,
                               logger: Logger = Logger(label: "geds")) async throws(GedsError) -> GEDS {
        var configuration = configuration
        if configuration.token == nil { configuration.token = try DeploymentToken.resolve(tokenFile: nil) }
        if configuration.tls == nil { configuration.tls = try TransportSecurity.resolve() }
        if let attachment = try Attachment.choose(configuration, logger: logger) { return GEDS(attachment: attachment) }
        return GEDS(node: try await Node.start(configuration, logger: logger))
    }

    /// Attaches to the gedsd listening at `socketPath` (`gedsd --socket`); `mds` ("HOST:PORT"), when given,
    /// must be the one it serves. A gedsd that does not greet within `timeoutMilliseconds` is an error; `token`: the
    /// deployment's, when it has one; `tls`: for subscriptions, which go to the MDS over TCP.
    public static func attach(socketPath: String, mds: String = "", timeoutMilliseconds: Int64 = 10_000,
                              token: DeploymentToken? = nil, tls: TransportSecurity? = nil) throws(GedsError) -> GEDS {
        GEDS(attachment: try Attachment.attach(path: socketPath, mds: mds, timeoutMilliseconds: timeoutMilliseconds, token: token,
                                               tls: tls))
    }

    private init(node: Node) {
        self.node = node
        attachment = nil
    }

    private init(attachment: Attachment) {
        node = nil
        self.attachment = attachment
    }

    /// The gedsd this process is attached to; nil when it runs its own node.
    public var attachedNode: NodeInfo? { attachment?.gedsd }

    /// The node that holds what this handle writes: the embedded node's name, or the attached gedsd's.
    public var nodeName: String { attachment?.gedsd.name ?? node.configuration.name }

    /// The embedded node's configuration (its name, MDS, tier-0 folder, ...); nil when attached to a gedsd.
    public var nodeConfiguration: NodeConfiguration? { node?.configuration }

    /// Where the embedded node serves its objects to the others (as advertised to the MDS); nil when attached.
    public var endpoint: Endpoint? { node?.endpoint }

    /// The embedded node's tier levels (bytes and objects held, pending uploads), for `/metrics`; nil when attached.
    public var levels: Node.Levels? { node?.levels }

    /// Lets processes of this host attach to the embedded node (what gedsd does): a local socket at `path`, or at
    /// the default path for the node's MDS when nil. Fails when this handle is itself attached.
    public func serveLocalSocket(at path: String?, mode: UInt32, logger: Logger) throws(GedsError) -> LocalEndpoint {
        guard let node else { throw GedsError(.invalidArgument, "an attached process has no node to serve on a local socket") }
        if let path { return try LocalEndpoint.start(node: node, path: path, mode: mode, logger: logger) }
        return try LocalEndpoint.startAtDefaultPath(node: node, mode: mode, logger: logger)
    }

    /// The event loop a blocked caller's read should continue on (as few thread hand-offs as a Swift caller's):
    /// the embedded node's; nil when attached or when its reads are RDMA.
    @_spi(CABI) public var readExecutor: (any TaskExecutor)? { node?.loopExecutor ?? nil }

    /// Stops serving; objects held only by this node are gone for the others once its lease ends. Attached,
    /// only this process's connections close: what it sealed stays in the gedsd.
    public func close() async {
        if attachment != nil { return }
        await node.shutdown()
    }

    // MARK: Buckets

    // Names: every call that takes a bucket or a key takes it validated (`BucketName`, `ObjectKey`, `ObjectPath`), so
    // it is checked once, where it enters; the `String` forms check it and call those.

    public func createBucket(_ name: BucketName) async throws(GedsError) {
        if let attachment { return try attachment.expectOK(.call(.createBucket(name.rawValue))) }
        try await node.mds.expectOK(.createBucket(name.rawValue))
    }

    public func createBucket(_ name: String) async throws(GedsError) {
        try await createBucket(BucketName(name))
    }

    /// Deletes an empty bucket, or with `force` a bucket and all its objects.
    public func deleteBucket(_ name: BucketName, force: Bool = false) async throws(GedsError) {
        if let attachment { return try attachment.expectOK(.call(.deleteBucket(name.rawValue, force: force))) }
        try await node.deleteBucket(name.rawValue, force: force)
    }

    public func deleteBucket(_ name: String, force: Bool = false) async throws(GedsError) {
        try await deleteBucket(BucketName(name), force: force)
    }

    public func listBuckets() async throws(GedsError) -> [String] {
        if let attachment {
            let reply = try attachment.call(.call(.listBuckets))
            guard case .buckets(let names) = reply else { throw Attachment.unexpected(reply) }
            return names
        }
        return try await node.mds.buckets()
    }

    // MARK: Objects

    /// A new object, written at any offset and invisible to others until sealed. If the key exists, the
    /// old object stays readable until this one is sealed and replaces it; `exclusive` (create-if-absent)
    /// instead fails with `.objectExists` here if the key exists, or at the seal if another writer sealed it
    /// first, so of racing exclusive creators exactly one wins. `persistency` overrides the bucket's (see
    /// `setBucketStorage`) for this object; `replicas` the bucket's replication factor (see `setBucketReplicas`):
    /// the seal then publishes the object with that many copies on distinct hosts, or with one and the MDS makes
    /// the others when `waitForAll` is false.
    public func create(_ path: ObjectPath, persistency: Persistency? = nil,
                       exclusive: Bool = false, replicas: Replicas? = nil) async throws(GedsError) -> ObjectWriter {
        let (bucket, key) = (path.bucket.rawValue, path.key.rawValue)
        if let attachment {
            let (connection, blob) = try attachment.create(bucket: bucket, key: key, persistency: persistency, exclusive: exclusive,
                                                           replicas: replicas)
            return ObjectWriter(sealer: .attached(attachment, connection), blob: blob, bucket: bucket, key: key,
                                persistency: persistency, replicas: replicas)
        }
        try await node.checkPersistency(persistency, bucket: bucket)
        return ObjectWriter(sealer: .node(node),
                            blob: try await node.create(bucket: bucket, key: key, exclusive: exclusive, replicas: replicas?.copies),
                            bucket: bucket, key: key, persistency: persistency, replicas: replicas)
    }

    public func create(bucket: String, key: String, persistency: Persistency? = nil,
                       exclusive: Bool = false, replicas: Replicas? = nil) async throws(GedsError) -> ObjectWriter {
        try await create(ObjectPath(bucket: BucketName(bucket), key: ObjectKey(key)), persistency: persistency, exclusive: exclusive,
                         replicas: replicas)
    }

    /// The largest object an attached `put` stores in one request to its gedsd.
    public static let oneRequestPutBytes = LocalRequest.maximumPutBytes

    /// Writes a whole object in one call: `create` (with its options), one write, `seal`. Without replicas of its
    /// own it is one step: attached, an object of up to `LocalRequest.maximumPutBytes` (64 KiB) is one request to the
    /// gedsd, which stores and seals it (one local round trip instead of two); a node of this process stores a small
    /// one straight into a slab slot. Errors are `create`'s and `seal`'s.
    public func put(_ path: ObjectPath, bytes: [UInt8], metadata: [String: String] = [:], persistency: Persistency? = nil,
                    exclusive: Bool = false, replicas: Replicas? = nil) async throws(GedsError) {
        guard replicas == nil, attachment == nil || bytes.count <= LocalRequest.maximumPutBytes else {
            return try await putThroughWriter(path, metadata: metadata, persistency: persistency, exclusive: exclusive,
                                              replicas: replicas) { (writer) throws(GedsError) in try writer.write(bytes, at: 0) }
        }
        let (bucket, key) = (path.bucket.rawValue, path.key.rawValue)
        if let attachment {
            return try attachment.expectOK(.put(bucket: bucket, key: key, bytes: bytes, metadata: metadata, persistency: persistency,
                                                exclusive: exclusive))
        }
        try await node.put(bucket: bucket, key: key, bytes: bytes, metadata: metadata, persistency: persistency, exclusive: exclusive)
    }

    /// As `put(_:bytes:...)`, from caller memory (read until the call returns): copied once when it is small enough for one
    /// step (`LocalRequest.maximumPutBytes`), else written from there.
    public func put(_ path: ObjectPath, from source: UnsafeRawBufferPointer, metadata: [String: String] = [:],
                    persistency: Persistency? = nil, exclusive: Bool = false, replicas: Replicas? = nil) async throws(GedsError) {
        guard replicas == nil, source.count <= LocalRequest.maximumPutBytes else {
            // The caller keeps `source` valid until this returns; only the write reads it.
            nonisolated(unsafe) let source = source
            return try await putThroughWriter(path, metadata: metadata, persistency: persistency, exclusive: exclusive,
                                              replicas: replicas) { (writer) throws(GedsError) in try writer.write(source, at: 0) }
        }
        try await put(path, bytes: Array(source), metadata: metadata, persistency: persistency, exclusive: exclusive)
    }

    public func put(bucket: String, key: String, bytes: [UInt8], metadata: [String: String] = [:], persistency: Persistency? = nil,
                    exclusive: Bool = false, replicas: Replicas? = nil) async throws(GedsError) {
        try await put(ObjectPath(bucket: BucketName(bucket), key: ObjectKey(key)), bytes: bytes, metadata: metadata,
                      persistency: persistency, exclusive: exclusive, replicas: replicas)
    }

    private func putThroughWriter(_ path: ObjectPath, metadata: [String: String], persistency: Persistency?, exclusive: Bool,
                                  replicas: Replicas?, write: (ObjectWriter) throws(GedsError) -> Void) async throws(GedsError) {
        let writer = try await create(path, persistency: persistency, exclusive: exclusive, replicas: replicas)
        try write(writer)
        try await writer.seal(metadata: metadata)
    }

    public func open(_ path: ObjectPath) async throws(GedsError) -> ObjectReader {
        ObjectReader(node: node, attachment: attachment, info: try await lookup(path))
    }

    public func open(bucket: String, key: String) async throws(GedsError) -> ObjectReader {
        try await open(ObjectPath(bucket: BucketName(bucket), key: ObjectKey(key)))
    }

    /// `open` for callers on threads of their own (the C ABI, Python), which block until it is done anyway: the
    /// lookup runs on this thread over a blocking connection to the MDS, without hand-offs to the event loop and
    /// back; a reader of an object whose bytes came with the lookup then reads without any. An attached
    /// process's calls all run on the caller's thread. Nil when this path does not apply (the MDS over RDMA or TLS,
    /// an object only in S3 so far): use `open`.
    public func openOnCallerThread(_ path: ObjectPath) throws(GedsError) -> ObjectReader? {
        let (bucket, key) = (path.bucket.rawValue, path.key.rawValue)
        if let attachment { return ObjectReader(node: nil, attachment: attachment, info: try attachment.lookup(bucket: bucket, key: key)) }
        guard let info = try node.lookupOnCallerThread(bucket: bucket, key: key) else { return nil }
        return ObjectReader(node: node, attachment: nil, info: info)
    }

    public func openOnCallerThread(bucket: String, key: String) throws(GedsError) -> ObjectReader? {
        try openOnCallerThread(ObjectPath(bucket: BucketName(bucket), key: ObjectKey(key)))
    }

    /// Looks an object up and reads from it into caller memory in one call, on the node's event loop so that
    /// both round trips (MDS, then owner) cost no thread hand-offs: the fastest way to fetch small objects.
    /// Returns how many bytes were read (up to `buffer.count`, from `offset`).
    public func read(_ path: ObjectPath, at offset: UInt64 = 0,
                     into buffer: UnsafeMutableRawBufferPointer) async throws(GedsError) -> Int {
        let (bucket, key) = (path.bucket.rawValue, path.key.rawValue)
        let population = PagePopulation.start(buffer)
        defer { population?.finish() }
        if let attachment { return try attachment.read(bucket: bucket, key: key, at: offset, into: buffer) }
        // The caller's buffer outlives this awaited call; only the read writes it meanwhile.
        nonisolated(unsafe) let destination = buffer
        let node: Node = self.node
        return try await node.onLoop { () throws(GedsError) -> Int in
            let info = try await node.lookup(bucket: bucket, key: key)
            return try await node.read(info, at: offset, into: destination)
        }
    }

    public func read(bucket: String, key: String, at offset: UInt64 = 0,
                     into buffer: UnsafeMutableRawBufferPointer) async throws(GedsError) -> Int {
        try await read(ObjectPath(bucket: BucketName(bucket), key: ObjectKey(key)), at: offset, into: buffer)
    }

    /// The whole object's bytes in a new array, read straight into it (`open(...).view()` gives them without a copy,
    /// and keeps a remote object's copy in this node's tier 0 for later reads; a get does not).
    public func get(_ path: ObjectPath) async throws(GedsError) -> [UInt8] {
        let reader = try await open(path)
        if let contents = reader.info.contents, contents.count == Int(reader.size) { return contents }
        return try await reader.read(at: 0, length: Int(reader.size))
    }

    public func get(bucket: String, key: String) async throws(GedsError) -> [UInt8] {
        try await get(ObjectPath(bucket: BucketName(bucket), key: ObjectKey(key)))
    }

    public func stat(_ path: ObjectPath) async throws(GedsError) -> ObjectInfo {
        try await lookup(path)
    }

    /// Checks the bucket's name only: a key no object can have is simply not found.
    public func stat(bucket: String, key: String) async throws(GedsError) -> ObjectInfo {
        _ = try BucketName(bucket)
        return try await lookup(bucket: bucket, key: key)
    }

    /// Where the object's copies are (each one's node, host, tier and transports; S3 last), in the order this
    /// handle's reads try them (attached: the gedsd's), so a scheduler can place a task where its data is.
    /// `objectLost` when none is left.
    public func locations(_ path: ObjectPath) async throws(GedsError) -> [Location] {
        let info = try await lookup(path)
        guard !info.locations.isEmpty else { throw GedsError(.objectLost, "object \(path) has no copy left") }
        if let node { return node.ordered(info.locations) }
        let gedsd = attachment!.gedsd
        return Location.readingOrder(info.locations, node: gedsd.name, hostID: gedsd.hostID, overRDMA: gedsd.rdma != nil)
    }

    public func locations(bucket: String, key: String) async throws(GedsError) -> [Location] {
        try await locations(ObjectPath(bucket: BucketName(bucket), key: ObjectKey(key)))
    }

    private func lookup(_ path: ObjectPath) async throws(GedsError) -> ObjectInfo {
        try await lookup(bucket: path.bucket.rawValue, key: path.key.rawValue)
    }

    private func lookup(bucket: String, key: String) async throws(GedsError) -> ObjectInfo {
        if let attachment { return try attachment.lookup(bucket: bucket, key: key) }
        return try await node.lookup(bucket: bucket, key: key)
    }

    /// One page of keys under `prefix` (up to 1000), with common prefixes when `delimiter` is set.
    public func list(_ bucketName: BucketName, prefix: String = "", delimiter: String = "", startAfter: String = "",
                     maxKeys: Int = 1000) async throws(GedsError) -> ListPage {
        let bucket = bucketName.rawValue
        if let attachment {
            let reply = try attachment.call(.call(.list(bucket: bucket, prefix: prefix, delimiter: delimiter, startAfter: startAfter,
                                                  maxKeys: UInt32(clamping: maxKeys))))
            guard case .page(let page) = reply else { throw Attachment.unexpected(reply) }
            return page
        }
        return try await node.list(bucket: bucket, prefix: prefix, delimiter: delimiter, startAfter: startAfter,
                                   maxKeys: UInt32(clamping: maxKeys))
    }

    public func list(bucket: String, prefix: String = "", delimiter: String = "", startAfter: String = "",
                     maxKeys: Int = 1000) async throws(GedsError) -> ListPage {
        try await list(BucketName(bucket), prefix: prefix, delimiter: delimiter, startAfter: startAfter, maxKeys: maxKeys)
    }

    /// Every page of a listing, concatenated.
    public func listAll(_ bucket: BucketName, prefix: String = "", delimiter: String = "") async throws(GedsError) -> ListPage {
        var result = ListPage(objects: [], commonPrefixes: [], nextStartAfter: nil)
        var startAfter = ""
        while true {
            let page = try await list(bucket, prefix: prefix, delimiter: delimiter, startAfter: startAfter)
            result.objects += page.objects
            result.commonPrefixes += page.commonPrefixes
            guard let next = page.nextStartAfter else { return result }
            startAfter = next
        }
    }

    public func listAll(bucket: String, prefix: String = "", delimiter: String = "") async throws(GedsError) -> ListPage {
        try await listAll(BucketName(bucket), prefix: prefix, delimiter: delimiter)
    }

    public func delete(_ path: ObjectPath) async throws(GedsError) {
        let (bucket, key) = (path.bucket.rawValue, path.key.rawValue)
        if let attachment { return try attachment.expectOK(.call(.deleteObject(bucket: bucket, key: key))) }
        try await node.delete(bucket: bucket, key: key)
    }

    public func delete(bucket: String, key: String) async throws(GedsError) {
        try await delete(ObjectPath(bucket: BucketName(bucket), key: ObjectKey(key)))
    }

    /// Deletes every object whose key starts with `prefix`; returns how many.
    @discardableResult
    public func delete(_ bucketName: BucketName, prefix: String) async throws(GedsError) -> UInt64 {
        let bucket = bucketName.rawValue
        if let attachment {
            let reply = try attachment.call(.call(.deletePrefix(bucket: bucket, prefix: prefix)))
            guard case .count(let count) = reply else { throw Attachment.unexpected(reply) }
            return count
        }
        return try await node.delete(bucket: bucket, prefix: prefix)
    }

    @discardableResult
    public func delete(bucket: String, prefix: String) async throws(GedsError) -> UInt64 {
        try await delete(BucketName(bucket), prefix: prefix)
    }

    /// Renames at the MDS in one step; no bytes move. An object at the destination is replaced.
    public func rename(_ source: ObjectPath, to destination: ObjectPath) async throws(GedsError) {
        try await bindName(of: source, to: destination, keepingSource: false)
    }

    public func rename(bucket: String, key: String, toBucket: String, toKey: String) async throws(GedsError) {
        try await rename(ObjectPath(bucket: BucketName(bucket), key: ObjectKey(key)),
                         to: ObjectPath(bucket: BucketName(toBucket), key: ObjectKey(toKey)))
    }

    /// Copies an object; the copy shares the sealed (immutable) bytes, so nothing is duplicated (into a bucket with
    /// an S3 store, an object already in S3 is copied there server-side instead, so S3 has both names).
    public func copy(_ source: ObjectPath, to destination: ObjectPath) async throws(GedsError) {
        try await bindName(of: source, to: destination, keepingSource: true)
    }

    public func copy(bucket: String, key: String, toBucket: String, toKey: String) async throws(GedsError) {
        try await copy(ObjectPath(bucket: BucketName(bucket), key: ObjectKey(key)),
                       to: ObjectPath(bucket: BucketName(toBucket), key: ObjectKey(toKey)))
    }

    /// Binds `destination` to the object at `source`: a copy keeps `source`, a rename drops it.
    private func bindName(of source: ObjectPath, to destination: ObjectPath, keepingSource: Bool) async throws(GedsError) {
        let (bucket, key) = (source.bucket.rawValue, source.key.rawValue)
        let (toBucket, toKey) = (destination.bucket.rawValue, destination.key.rawValue)
        if let attachment {
            return try attachment.expectOK(.call(keepingSource ? .copy(fromBucket: bucket, fromKey: key, toBucket: toBucket, toKey: toKey)
                                                               : .rename(fromBucket: bucket, fromKey: key, toBucket: toBucket, toKey: toKey)))
        }
        if keepingSource {
            try await node.copy(bucket: bucket, key: key, toBucket: toBucket, toKey: toKey)
        } else {
            try await node.rename(bucket: bucket, key: key, toBucket: toBucket, toKey: toKey)
        }
    }

    public func metadata(_ path: ObjectPath) async throws(GedsError) -> [String: String] {
        try await stat(path).metadata
    }

    public func metadata(bucket: String, key: String) async throws(GedsError) -> [String: String] {
        try await stat(bucket: bucket, key: key).metadata
    }

    /// Replaces the object's user metadata.
    public func setMetadata(_ path: ObjectPath, _ metadata: [String: String]) async throws(GedsError) {
        try UserMetadata.validate(metadata)
        let (bucket, key) = (path.bucket.rawValue, path.key.rawValue)
        if let attachment { return try attachment.expectOK(.call(.setMetadata(bucket: bucket, key: key, metadata: metadata))) }
        try await node.setMetadata(bucket: bucket, key: key, metadata)
    }

    public func setMetadata(bucket: String, key: String, _ metadata: [String: String]) async throws(GedsError) {
        try await setMetadata(ObjectPath(bucket: BucketName(bucket), key: ObjectKey(key)), metadata)
    }

    // MARK: Nodes and placement

    public func nodes() async throws(GedsError) -> [NodeInfo] {
        if let attachment {
            let reply = try attachment.call(.call(.listNodes))
            guard case .nodes(let nodes) = reply else { throw Attachment.unexpected(reply) }
            return nodes
        }
        return try await node.mds.nodes()
    }

    /// The node a relocation goes to: the named live node, else the least loaded live daemon.
    public func relocationTarget(named nodeName: String? = nil) async throws(GedsError) -> NodeInfo {
        let candidates = try await nodes().copyTargets(besides: self.nodeName)
        if let nodeName {
            guard let named = candidates.first(where: { $0.name == nodeName }) else {
                throw GedsError(.noSuchNode, "no live node named '\(nodeName)'")
            }
            return named
        }
        guard let daemon = candidates.first(where: { $0.role == .daemon }) else {
            throw GedsError(.noSuchNode, "no live gedsd to hold the object; start one with: gedsd --mds \(attachment?.mds ?? "\(node.configuration.mds)") ...")
        }
        return daemon
    }

    /// Sets the bucket's replication factor (1 to `Replicas.maximum`): of the objects sealed in it from now on and of
    /// those already in it without a factor of their own; the MDS has missing copies made and extra ones dropped.
    public func setBucketReplicas(_ bucket: String, _ replicas: Int) async throws(GedsError) {
        try await setBucketReplicas(BucketName(bucket), replicas)
    }

    public func setBucketReplicas(_ bucket: BucketName, _ replicas: Int) async throws(GedsError) {
        try Replicas.check(replicas)
        let request = Request.setBucketReplicas(bucket: bucket.rawValue, replicas: UInt8(replicas))
        if let attachment { return try attachment.expectOK(.call(request)) }
        try await node.mds.expectOK(request)
    }

    /// The bucket's replication factor (1 unless set).
    public func bucketReplicas(_ bucket: String) async throws(GedsError) -> Int {
        try await bucketReplicas(BucketName(bucket))
    }

    public func bucketReplicas(_ bucket: BucketName) async throws(GedsError) -> Int {
        let request = Request.bucketReplicas(bucket: bucket.rawValue)
        if let attachment {
            let reply = try attachment.call(.call(request))
            guard case .count(let replicas) = reply else { throw Attachment.unexpected(reply) }
            return Int(replicas)
        }
        return Int(try await node.mds.count(request))
    }

    /// Asks the gedsd `name` to move every copy it holds to other gedsd nodes and then leave (`geds drain`); returns
    /// at once. Its `NodeInfo` shows the drain: `draining` until it left (no longer alive), or `drainFailure`.
    public func drain(node name: String) async throws(GedsError) {
        if let attachment { return try attachment.expectOK(.call(.drainNode(name: name))) }
        try await node.mds.expectOK(.drainNode(name: name))
    }

    /// Returns once this process's node has been drained (a gedsd then exits); an attached process has no node
    /// to drain, so for it this never returns.
    public func waitUntilDrained() async {
        if let node {
            await node.waitUntilDrained()
        } else {
            while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
        }
    }

    /// Moves a sealed object to another node, which becomes its owner; this is how objects outlive the
    /// task that wrote them.
    public func relocate(_ path: ObjectPath, to target: NodeInfo) async throws(GedsError) {
        if let attachment {
            return try attachment.expectOK(.relocate(bucket: path.bucket.rawValue, key: path.key.rawValue, toNode: target.name))
        }
        try await node.relocate(try await stat(path), to: target)
    }

    public func relocate(bucket: String, key: String, to target: NodeInfo) async throws(GedsError) {
        try await relocate(ObjectPath(bucket: BucketName(bucket), key: ObjectKey(key)), to: target)
    }
}

/// An object being written. Nothing is visible to others until `seal`.
public final class ObjectWriter: Sendable {
    public let bucket: String
    public let key: String
    /// Overrides the bucket's persistency at seal (nil: the bucket's).
    public let persistency: Persistency?
    /// Overrides the bucket's replication factor (nil: the bucket's, and the seal waits for every copy).
    public let replicas: Replicas?
    let sealer: Sealer
    let blob: WritableBlob

    /// Who publishes the object: the embedded node, or the gedsd whose file this is, through the connection
    /// that created it (closing it unsealed gives the file back).
    enum Sealer: Sendable {
        case node(Node)
        case attached(Attachment, LocalConnection)
    }

    init(sealer: Sealer, blob: WritableBlob, bucket: String, key: String, persistency: Persistency? = nil,
         replicas: Replicas? = nil) {
        self.sealer = sealer
        self.replicas = replicas
        self.blob = blob
        self.bucket = bucket
        self.key = key
        self.persistency = persistency
    }

    public var size: UInt64 { blob.size }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(GedsError) {
        try blob.write(bytes, at: offset)
    }

    public func write(_ bytes: [UInt8], at offset: UInt64) throws(GedsError) {
        let failure = bytes.withUnsafeBytes { raw -> GedsError? in
            do throws(GedsError) { try blob.write(raw, at: offset) } catch { return error }
            return nil
        }
        if let failure { throw failure }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(GedsError) -> Int {
        try blob.read(into: buffer, at: offset)
    }

    public func truncate(to size: UInt64) throws(GedsError) {
        try blob.truncate(to: size)
    }

    /// Gives the object up unsealed: nothing is published, an older object under the key stays as it was, and the
    /// bytes written go when this writer does.
    public func abort() async throws(GedsError) {
        switch sealer {
        case .node(let node):
            try await node.abort(blob)
        case .attached(let attachment, let connection):
            try attachment.abort(blob, on: connection)
        }
    }

    /// Makes the object immutable and visible everywhere, replacing any older object under its key. With
    /// `handingOffTo`, that node takes the bytes before the object is published and becomes its owner (so
    /// the object outlives this process); if the hand-off fails, nothing is published. Then the object is made
    /// durable as its persistency says: for write-through the call returns once it is in S3, and if S3 fails
    /// it throws, while the object stays published (readable from tier 0) and queued for upload.
    public func seal(metadata: [String: String] = [:], handingOffTo target: NodeInfo? = nil) async throws(GedsError) {
        switch sealer {
        case .node(let node):
            try await node.seal(blob, metadata: metadata, handingOffTo: target, persistency: persistency,
                                waitForReplicas: replicas?.waitForAll ?? true)
        case .attached(let attachment, let connection):
            try attachment.seal(blob, on: connection, metadata: metadata, handingOffTo: target)
        }
    }
}

/// A sealed object opened for reading.
public final class ObjectReader: Sendable {
    public let info: ObjectInfo
    let node: Node?
    let attachment: Attachment?

    init(node: Node?, attachment: Attachment?, info: ObjectInfo) {
        self.node = node
        self.attachment = attachment
        self.info = info
    }

    public var size: UInt64 { info.size }

    /// The whole object without copies: a view of its tier-0 mapping, fetched into this node's tier 0 first
    /// when it lives on another host. The view stays valid even if the object is deleted meanwhile.
    public func view() async throws(GedsError) -> MappedBytes {
        if let attachment { return try attachment.view(info) }
        return try await node!.view(of: info)
    }

    /// Reads up to `buffer.count` bytes at `offset` into caller memory; returns how many were read.
    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) async throws(GedsError) -> Int {
        let population = PagePopulation.start(buffer)
        defer { population?.finish() }
        if let attachment { return try attachment.read(info, at: offset, into: buffer) }
        return try await node!.read(info, at: offset, into: buffer)
    }

    public func read(at offset: UInt64, length: Int) async throws(GedsError) -> [UInt8] {
        guard length >= 0 else { throw GedsError(.invalidArgument, "negative read length \(length)") }
        guard offset < info.size else { return [] }
        let count = Int(min(UInt64(length), info.size - offset))
        // The bytes land straight in the array's storage, whose pages are new (see `PagePopulation`). Array has no
        // async `withUnsafeMutableBytes`; the storage of this array, uniquely referenced and untouched until the
        // read returns, stays where it is across the read's suspension.
        var bytes = [UInt8](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
        nonisolated(unsafe) let destination = bytes.withUnsafeMutableBytes { $0 }
        let got = try await read(at: offset, into: destination)
        bytes.removeLast(count - got)
        return bytes
    }
}
