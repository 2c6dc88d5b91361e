import ArgumentParser
import Foundation
import GEDS
import GedsCommandLine
import GedsCore
import Logging
import SystemPackage

/// `geds [--mds HOST:PORT] [--transport auto|rdma|tcp] COMMAND`: each invocation is a short-lived node that joins, works, and leaves.
struct Geds: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "geds",
        abstract: "Work with a GEDS store: buckets, objects, copies and nodes.",
        discussion: """
            The MDS is --mds HOST:PORT before the command, else $GEDS_MDS, else 127.0.0.1:4381. \
            --transport auto|rdma|tcp (also before the command) chooses the data plane; auto uses RDMA when this machine has a device.
            --token-file FILE (also before the command; default: $GEDS_TOKEN_FILE) proves the deployment's token to every server.
            --tls-cert FILE --tls-key FILE --tls-ca FILE (also before the command; default: $GEDS_TLS_CERT, $GEDS_TLS_KEY, \
            $GEDS_TLS_CA) connect over TLS; the command's own node serves its objects to the others, so it needs all three.
            Shell completion: geds --generate-completion-script bash|zsh|fish.
            """,
        version: "geds \(GedsVersion.release)",
        subcommands: [MakeBucket.self, RemoveBucket.self, List.self, Put.self, Get.self, Cat.self, Stat.self,
                      Remove.self, Move.self, Copy.self, Where.self, Meta.self, Nodes.self, BucketSettings.self, Flush.self,
                      Watch.self, Wait.self, Drain.self])
}

struct Connection: ParsableArguments {
    @Option(help: "The MDS, HOST:PORT (default: $GEDS_MDS, else 127.0.0.1:4381).")
    var mds: String?

    @Option(name: .customLong("timeout-ms"), help: "How long to wait for an answer or for progress.")
    var timeoutMilliseconds: Int64 = 10_000

    @Option(help: ArgumentHelp(NodeConfiguration.Transport.optionHelp))
    var transport: String = "auto"

    @Option(name: .customLong("rdma-address"), help: "Address of this machine's RDMA device to read over (without it: TCP).")
    var rdmaAddress: String?

    @Option(name: .customLong("mds-rdma"), help: "The MDS's RDMA listener, HOST:PORT: MDS calls go over RDMA send/receive.")
    var mdsRDMA: String?

    @Option(help: "Attach to the gedsd listening at this local socket (default: $GEDS_NODE, else a gedsd of the same MDS found in $XDG_RUNTIME_DIR/geds or /run/geds; with none, this command runs a node of its own).")
    var node: String?

    @OptionGroup var security: SecurityOptions

    @Flag(help: "Log which transports are used (to stderr).")
    var verbose = false

    func open() async throws(GedsError) -> GEDS {
        let address = mds ?? ProcessInfo.processInfo.environment["GEDS_MDS"] ?? "127.0.0.1:4381"
        var logger = Logger(label: "geds")
        logger.logLevel = verbose ? .info : .error
        var configuration = NodeConfiguration(
            mds: try Endpoint(parsing: address),
            tier0Directory: "/dev/shm/geds-cli-\(getpid())-\(UInt32.random(in: 0...UInt32.max))",
            removeTier0OnShutdown: true, role: .embedded, timeoutMilliseconds: timeoutMilliseconds,
            publishCachedCopies: false, transport: try NodeConfiguration.Transport(parsing: transport))
        // Without an RDMA address the CLI's node listens on loopback, which has no RDMA device: TCP.
        configuration.rdmaAddress = rdmaAddress
        configuration.attach = node.map { .path($0) } ?? .auto
        configuration.mdsRDMA = try mdsRDMA.map { (text) throws(GedsError) in try Endpoint(parsing: text) }
        configuration.token = try security.token()
        configuration.tls = try security.tls()
        return try await GEDS.connect(configuration, logger: logger)
    }
}

/// Runs `body` with a store handle and closes it however `body` ends.
func withStore<T>(_ connection: Connection, _ body: (GEDS) async throws(GedsError) -> T) async throws(GedsError) -> T {
    let store = try await connection.open()
    do {
        let result = try await body(store)
        await store.close()
        return result
    } catch {
        await store.close()
        throw error
    }
}

struct MakeBucket: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mb", abstract: "Create a bucket.")
    @OptionGroup var connection: Connection
    @Argument var bucket: String

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in try await store.createBucket(bucket) }
    }
}

struct RemoveBucket: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rb", abstract: "Delete a bucket (it must be empty unless --force).")
    @OptionGroup var connection: Connection
    @Argument var bucket: String
    @Flag(help: "Delete the bucket's objects too.") var force = false

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in try await store.deleteBucket(bucket, force: force) }
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List buckets, or the objects under BUCKET[/PREFIX].")
    @OptionGroup var connection: Connection
    @Argument var target: String?
    @Option(help: "Group keys by this delimiter (common prefixes are shown as PRE).") var delimiter: String = ""
    @Option(name: .customLong("max-keys"), help: "Keys asked for per page (every page is shown).") var maxKeys: Int = 1000
    @Flag(help: "One JSON document: {buckets}, or {bucket, prefix, delimiter, objects: [{key, size, modified}], common_prefixes}.")
    var json = false

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            guard let target else {
                let buckets = try await store.listBuckets()
                if json { return try JSONOutput.print(JSONOutput.Buckets(buckets: buckets)) }
                for bucket in buckets { printLine(bucket) }
                return
            }
            let (bucket, prefix) = splitBucket(target)
            var objects: [JSONOutput.Listing.Object] = []
            var commonPrefixes: [String] = []
            var startAfter = ""
            repeat {
                let page = try await store.list(bucket: bucket, prefix: prefix, delimiter: delimiter, startAfter: startAfter,
                                                maxKeys: maxKeys)
                startAfter = page.nextStartAfter ?? ""
                if json {
                    objects += page.objects.map { .init(key: $0.key, size: $0.size, modified: JSONOutput.timestamp($0.modified)) }
                    commonPrefixes += page.commonPrefixes
                    continue
                }
                var lines: [String] = page.commonPrefixes.map { "\(String(repeating: " ", count: 30))PRE \($0)" }
                lines += page.objects.map { "\(formatDate($0.modified)) \(pad(String($0.size), 10)) \($0.key)" }
                if !lines.isEmpty { printLine(lines.joined(separator: "\n")) }
            } while !startAfter.isEmpty
            if json {
                try JSONOutput.print(JSONOutput.Listing(bucket: bucket, prefix: prefix, delimiter: delimiter, objects: objects,
                                                        commonPrefixes: commonPrefixes))
            }
        }
    }
}

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put",
        abstract: "Store a file (or stdin, '-') as BUCKET/KEY on a gedsd, or a folder with --recursive.")
    @OptionGroup var connection: Connection
    @Argument(help: "FILE, '-' for stdin, or a folder with --recursive.") var source: String
    @Argument(help: "BUCKET/KEY, or BUCKET/PREFIX/ with --recursive.") var destination: String
    @Option(help: "The gedsd that keeps the object (default: the least loaded one).") var to: String?
    @Flag(help: "Store every file under the folder, keyed by PREFIX plus its relative path.") var recursive = false
    @Option(help: "ephemeral, tier1, write-through or write-back (default: the bucket's).") var persistency: String?
    @Option(help: ArgumentHelp("Keep N copies, each on a distinct host (default: the bucket's, see `geds bucket --replicas`); the put returns once all N are published.",
                               valueName: "N"))
    var replicas: Int?
    @Flag(name: .customLong("async"), help: "With replicas: return once the first copy is published; the MDS has the others made.")
    var returnAfterFirstCopy = false
    @Flag(help: "No progress bar (there is none either when stderr is not a terminal).") var quiet = false

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            // Attached, the object is written into the gedsd's tier 0 already: handed off only to another one.
            let target = store.attachedNode != nil && (to == nil || to == store.nodeName) ? nil
                : try await store.relocationTarget(named: to)
            if recursive {
                let (bucket, prefix) = splitBucket(destination)
                let files = try filesUnder(source)
                let sizes = files.map { file in
                    (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? UInt64) ?? 0
                }
                let progress = Progress(label: destination, totalBytes: sizes.reduce(0, +), objects: files.count, quiet: quiet)
                for file in files {
                    let key = prefix + file.dropFirst(source.count).drop { $0 == "/" }
                    let object = try ObjectPath(bucket: BucketName(bucket), key: ObjectKey(String(key)))
                    let size = try await upload(store, path: file, to: object, target: target, progress: progress)
                    progress.objectDone(size: size)
                }
                progress.finish()
            } else {
                let object = try ObjectPath(parsing: destination)
                let progress = Progress(label: destination, totalBytes: try fileSize(source), quiet: quiet)
                let size = try await upload(store, path: source, to: object, target: target, progress: progress)
                progress.objectDone(size: size)
                progress.finish()
            }
        }
    }

    /// The size of a regular file; 0 for stdin or a pipe (the bar then shows bytes and rate only).
    private func fileSize(_ path: String) throws(GedsError) -> UInt64 {
        guard path != "-" else { return 0 }
        var status = stat()
        guard stat(path, &status) == 0 else { throw GedsError.io("cannot open \(path)", errno: errno) }
        return (status.st_mode & S_IFMT) == S_IFREG ? UInt64(status.st_size) : 0
    }

    /// Stores one file; the bytes it stored.
    private func upload(_ store: GEDS, path: String, to object: ObjectPath, target: NodeInfo?,
                        progress: Progress) async throws(GedsError) -> UInt64 {
        let persistency = try persistency.map { (text) throws(GedsError) in try Persistency(parsing: text) }
        let input: FileDescriptor
        if path == "-" {
            input = .standardInput
        } else {
            do {
                input = try FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec)
            } catch {
                throw GedsError.io("cannot open \(path)", error)
            }
        }
        defer { if input != .standardInput { try? input.close() } }
        var replication = try replicas.map { (copies) throws(GedsError) in try Replicas(copies: copies, waitForAll: !returnAfterFirstCopy) }
        if replication == nil, returnAfterFirstCopy {
            replication = try Replicas(copies: try await store.bucketReplicas(object.bucket), waitForAll: false)
        }
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { chunk.deallocate() }
        func read(into buffer: UnsafeMutableRawBufferPointer) throws(GedsError) -> Int {
            do {
                return try input.read(into: buffer)
            } catch {
                throw GedsError.io("cannot read \(path)", error)
            }
        }
        // A small file, stored on the gedsd this process is attached to, is one request to it (`put`); anything
        // longer is written as it comes.
        let small = store.attachedNode != nil && target == nil && replication == nil ? GEDS.oneRequestPutBytes + 1 : 0
        var buffered = 0
        var ended = false
        while buffered < small, !ended {
            let got = try read(into: UnsafeMutableRawBufferPointer(rebasing: chunk[buffered..<small]))
            buffered += got
            ended = got == 0
        }
        if ended {
            try await store.put(object, from: UnsafeRawBufferPointer(rebasing: chunk[..<buffered]), persistency: persistency)
            progress.update(UInt64(buffered))
            return UInt64(buffered)
        }
        let writer = try await store.create(object, persistency: persistency, replicas: replication)
        var got = buffered
        var offset: UInt64 = 0
        repeat {
            if got > 0 {
                try writer.write(UnsafeRawBufferPointer(rebasing: chunk[..<got]), at: offset)
                offset += UInt64(got)
                progress.update(offset)
            }
            got = try read(into: chunk)
        } while got > 0
        try await writer.seal(handingOffTo: target)
        return offset
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get", abstract: "Write BUCKET/KEY to FILE (or stdout, '-'), or a prefix to a folder with --recursive.")
    @OptionGroup var connection: Connection
    @Argument var source: String
    @Argument var destination: String
    @Flag(help: "Fetch every object under BUCKET/PREFIX/ into the folder.") var recursive = false
    @Flag(help: "No progress bar (there is none either when stderr is not a terminal).") var quiet = false

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            if recursive {
                let (bucket, prefix) = splitBucket(source)
                let listing = try await store.listAll(bucket: bucket, prefix: prefix)
                let progress = Progress(label: source, totalBytes: listing.objects.reduce(0) { $0 + $1.size },
                                        objects: listing.objects.count, quiet: quiet)
                for entry in listing.objects {
                    let relative = try safeRelativePath(String(entry.key.dropFirst(prefix.count)), key: entry.key)
                    let file = destination + "/" + relative
                    try makeParent(of: file)
                    let object = try ObjectPath(bucket: BucketName(bucket), key: ObjectKey(entry.key))
                    progress.objectDone(size: try await download(store, object, to: file, partOf: progress))
                }
                progress.finish()
            } else {
                _ = try await download(store, ObjectPath(parsing: source), to: destination, quiet: quiet)
            }
        }
    }
}

/// Copies an object to a file or stdout from a zero-copy view of it; the bytes copied. Its progress shows on the bar
/// of the set it is `partOf`, else on a bar of its own (sized from the view: no extra lookup).
func download(_ store: GEDS, _ object: ObjectPath, to destination: String, quiet: Bool = false,
              partOf set: Progress? = nil) async throws(GedsError) -> UInt64 {
    var reader = try await store.open(object)
    if store.attachedNode == nil, reader.info.locations.allSatisfy({ $0.tier == .s3 }), let target = try? await store.relocationTarget() {
        // Only in S3: a gedsd caches it in its tier 0 (this process's goes with it), then it is read from there.
        if (try? await store.relocate(object, to: target)) != nil {
            reader = try await store.open(object)
        }
    }
    let view = try await reader.view()
    let output: FileDescriptor
    if destination == "-" {
        output = .standardOutput
    } else {
        do {
            output = try FileDescriptor.open(FilePath(destination), .writeOnly, options: [.create, .truncate, .closeOnExec],
                                             permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch {
            throw GedsError.io("cannot create \(destination)", error)
        }
    }
    defer { if output != .standardOutput { try? output.close() } }
    let progress = set ?? Progress(label: "\(object)", totalBytes: UInt64(view.count), quiet: quiet)
    try view.withBytes { (bytes) throws(GedsError) in
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + (8 << 20), bytes.count)
            try writeAll(output, UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
            offset = end
            progress.update(UInt64(offset))
        }
    }
    if set == nil {
        progress.objectDone(size: UInt64(view.count))
        progress.finish()
    }
    return UInt64(view.count)
}

struct Cat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cat", abstract: "Write BUCKET/KEY to stdout.")
    @OptionGroup var connection: Connection
    @Argument var object: String

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            _ = try await download(store, ObjectPath(parsing: object), to: "-")
        }
    }
}

struct Drain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain",
        abstract: "Move every object a gedsd holds (tier 0 and tier 1) to the other gedsd nodes, then have it leave and exit.",
        discussion: "Exits 0 once NODE left the MDS; 1 with the reason when the drain cannot finish (NODE then keeps serving).")
    @OptionGroup var connection: Connection
    @Argument(help: "The gedsd's name (see `geds nodes`).") var node: String
    @Option(help: "Give up waiting after this many seconds (0: no limit); the drain itself goes on.") var timeout: Double = 0
    @Flag(help: "No progress bar (there is none either when stderr is not a terminal).") var quiet = false

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            guard let start = try await store.nodes().first(where: { $0.name == node && $0.alive }) else {
                throw GedsError(.noSuchNode, "no live node named '\(node)'")
            }
            try await store.drain(node: node)
            let progress = Progress(label: "drain \(node)", totalBytes: start.bytes, objects: Int(start.blobs), quiet: quiet)
            let deadline = timeout > 0 ? Date().addingTimeInterval(timeout) : Date.distantFuture
            while true {
                guard let now = try await store.nodes().first(where: { $0.name == node && $0.alive }) else { break }
                if let failure = now.drainFailure {
                    progress.finish()
                    throw GedsError(.outOfSpace, "drain of \(node) cannot finish: \(failure); it keeps serving \(now.blobs) object(s)")
                }
                guard Date() < deadline else {
                    progress.finish()
                    throw GedsError(.timedOut, "\(node) is still draining after \(timeout) s (\(now.blobs) object(s) left); see `geds nodes`")
                }
                // Counts come with the node's heartbeats, so they trail the moves a little.
                progress.finishedObjects = Int(start.blobs - min(now.blobs, start.blobs))
                progress.update(start.bytes - min(now.bytes, start.bytes))
                try? await Task.sleep(for: .milliseconds(200))
            }
            progress.finishedObjects = Int(start.blobs)
            progress.update(start.bytes)
            progress.finish()
            printLine("drained \(node): its \(start.blobs) object(s) (\(formatBytes(start.bytes))) are on other nodes; it left")
        }
    }
}

struct Stat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stat", abstract: "Show an object's size, state, copies and metadata.")
    @OptionGroup var connection: Connection
    @Argument var object: String
    @Flag(help: "One JSON document: bucket, key, size, sealed, modified, blob, crc32c, copies, metadata, wanted_copies, present_copies.")
    var json = false

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            let path = try ObjectPath(parsing: object)
            let info = try await store.stat(path)
            if json { return try JSONOutput.print(JSONOutput.Stat(info)) }
            var lines = ["object: \(info.bucket)/\(info.key)", "size: \(info.size)", "sealed: \(info.sealed)",
                         "modified: \(formatDate(info.modified))", "blob: \(info.blob.fileName)", "copies: \(info.locations.count)",
                         "replicas: \(info.wantedCopies) wanted, \(info.presentCopies) present"]
            lines += info.locations.map { location in
                switch location {
                case .node(let copy): "  \(copy.tier) on \(copy.node) (host \(copy.hostID), tcp \(copy.tcp))"
                case .s3(let object): "  s3 on \(object.url)"
                }
            }
            // Known once the bytes were written to tier 1; the same for every copy.
            if let checksum = info.locations.lazy.compactMap(\.checksum).first { lines.append("crc32c: \(hex32(checksum))") }
            lines += info.metadata.sorted { $0.key < $1.key }.map { "meta: \($0.key)=\($0.value)" }
            printLine(lines.joined(separator: "\n"))
        }
    }
}

struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete BUCKET/KEY, or every key under a prefix with --prefix.")
    @OptionGroup var connection: Connection
    @Argument var target: String
    @Flag(help: "Treat the argument as BUCKET/PREFIX and delete every key under it.") var prefix = false

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            if prefix {
                let (bucket, keyPrefix) = splitBucket(target)
                let count = try await store.delete(bucket: bucket, prefix: keyPrefix)
                printLine("deleted \(count) objects")
            } else {
                let path = try ObjectPath(parsing: target)
                try await store.delete(path)
            }
        }
    }
}

/// `SRC DST`, both `BUCKET/KEY`, as `mv` and `cp` take them.
struct SourceAndDestination: ParsableArguments {
    @Argument(help: "BUCKET/KEY") var source: String
    @Argument(help: "BUCKET/KEY") var destination: String

    func parsed() throws(GedsError) -> (from: ObjectPath, to: ObjectPath) {
        (try ObjectPath(parsing: source), try ObjectPath(parsing: destination))
    }
}

struct Move: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mv", abstract: "Rename SRC to DST (BUCKET/KEY each); no bytes move.")
    @OptionGroup var connection: Connection
    @OptionGroup var paths: SourceAndDestination

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            let (from, to) = try paths.parsed()
            try await store.rename(from, to: to)
        }
    }
}

struct Copy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cp", abstract: "Copy SRC to DST (BUCKET/KEY each), sharing the sealed bytes.")
    @OptionGroup var connection: Connection
    @OptionGroup var paths: SourceAndDestination

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            let (from, to) = try paths.parsed()
            try await store.copy(from, to: to)
        }
    }
}

struct Where: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "where",
                                                    abstract: "Show where an object's copies are, in the order a reader on this host tries them.")
    @OptionGroup var connection: Connection
    @Argument var object: String
    @Flag(help: "One JSON document: {object, copies: [{node, tier, host, region, transports}]}.") var json = false

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            let path = try ObjectPath(parsing: object)
            let locations = try await store.locations(path)
            if json { return try JSONOutput.print(JSONOutput.Copies(object: "\(path)", copies: locations.map(JSONOutput.Copy.init))) }
            printLine(locations.map { location in
                switch location {
                case .node(let copy):
                    "\(copy.node) \(copy.tier) host=\(copy.hostID) transports=\(copy.transportURLs.joined(separator: ","))"
                case .s3(let object): "\(object.url) s3 region=\(object.region)"
                }
            }.joined(separator: "\n"))
        }
    }
}

struct Meta: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meta", abstract: "Show an object's metadata, or set NAME=VALUE pairs (an empty value removes NAME).")
    @OptionGroup var connection: Connection
    @Argument var object: String
    @Argument var pairs: [String] = []

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            let path = try ObjectPath(parsing: object)
            var metadata = try await store.metadata(path)
            if pairs.isEmpty {
                let lines = metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                if !lines.isEmpty { printLine(lines.joined(separator: "\n")) }
                return
            }
            for pair in pairs {
                guard let equals = pair.firstIndex(of: "=") else {
                    throw GedsError(.invalidArgument, "expected NAME=VALUE, got '\(pair)'")
                }
                let value = String(pair[pair.index(after: equals)...])
                metadata[String(pair[..<equals])] = value.isEmpty ? nil : value
            }
            try await store.setMetadata(path, metadata)
        }
    }
}

struct Nodes: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "nodes", abstract: "List the nodes the MDS knows.")
    @OptionGroup var connection: Connection
    @Flag(help: "One JSON document: {nodes: [{name, alive, role, host, tcp, rdma, objects, bytes, draining, drain_failure}]}.")
    var json = false

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            let nodes = try await store.nodes().filter { $0.name != store.nodeConfiguration?.name }
            if json {
                return try JSONOutput.print(JSONOutput.Nodes(nodes: nodes.map { node in
                    .init(name: node.name, alive: node.alive, role: node.role == .daemon ? "gedsd" : "embedded", host: node.hostID,
                          tcp: "\(node.tcp)", rdma: .init(node.rdma.map { "\($0)" }), objects: node.blobs, bytes: node.bytes,
                          draining: node.draining, drainFailure: .init(node.drainFailure))
                }))
            }
            let lines = nodes.map { node in
                "\(node.name) \(node.alive ? "alive" : "dead") \(node.role == .daemon ? "gedsd" : "embedded") tcp=\(node.tcp)\(node.rdma.map { " rdma=\($0)" } ?? "") host=\(node.hostID) objects=\(node.blobs) bytes=\(node.bytes)"
                    + (node.draining ? " draining" : "") + (node.drainFailure.map { " drain-failed: \($0)" } ?? "")
            }
            if !lines.isEmpty { printLine(lines.joined(separator: "\n")) }
        }
    }
}

struct BucketSettings: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bucket",
        abstract: "Show a bucket's S3 store and replication factor, or set them with --s3 (creating the bucket when needed) and --replicas.",
        discussion: """
            Only the address, prefix, region and persistency are kept by the MDS. Each node signs S3 requests with \
            its own credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, else ~/.aws/credentials \
            (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE).
            """)
    @OptionGroup var connection: Connection
    @Argument var bucket: String
    @Option(help: "The S3 bucket: http(s)://HOST[:PORT]/BUCKET[/PREFIX].") var s3: String?
    @Option(help: "ephemeral, tier1, write-through or write-back (default: write-back).") var persistency: String?
    @Option(help: "Prefix of the bucket's keys in S3 (default: the address's).") var prefix: String?
    @Option(help: "The S3 region.") var region: String = "us-east-1"
    @Flag(name: .customLong("no-s3"), help: "Take the bucket's S3 store away (its objects stay in S3).") var noS3 = false
    @Option(help: ArgumentHelp("Keep N copies of each object of the bucket, each on a distinct host: of those sealed from now on and those already in it (not those put with their own --replicas); missing copies are made, extra ones dropped.", valueName: "N"))
    var replicas: Int?

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            if noS3 {
                try await store.setBucketStorage(bucket, nil)
            } else if let s3 {
                let persistency = try Persistency(parsing: persistency ?? "write-back")
                try await store.setBucketStorage(bucket, try BucketStorage(address: s3, prefix: prefix, region: region,
                                                                           persistency: persistency))
                // Set all the same (the nodes sign with their own keys), but say so when it cannot be reached from here.
                do throws(GedsError) {
                    _ = try await store.list(bucket: bucket, maxKeys: 1)
                } catch {
                    printError("geds: warning: the S3 store of bucket \(bucket) cannot be listed from here: \(error.message)")
                }
            } else if persistency != nil || prefix != nil {
                guard var storage = try await store.bucketStorage(bucket) else {
                    throw GedsError(.invalidArgument, "bucket \(bucket) has no S3 store; give one with --s3 ENDPOINT/BUCKET")
                }
                if let persistency { storage.persistency = try Persistency(parsing: persistency) }
                if let prefix { storage.prefix = prefix }
                try await store.setBucketStorage(bucket, storage)
            }
            if let replicas { try await store.setBucketReplicas(bucket, replicas) }
            // Shown when set (1, the default, is not).
            let replication = try await store.bucketReplicas(bucket)
            let replicationLine = replication == 1 ? "" : "\nreplicas: \(replication)"
            guard let storage = try await store.bucketStorage(bucket) else {
                printLine("bucket: \(bucket)\ns3: none\npersistency: ephemeral" + replicationLine)
                return
            }
            printLine("""
                bucket: \(bucket)
                s3: \(storage.endpoint)/\(storage.bucket)
                prefix: \(storage.prefix)
                region: \(storage.region)
                persistency: \(storage.persistency)
                """ + replicationLine)
        }
    }
}

struct Flush: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flush", abstract: "Wait until every write-back upload of every live node is in S3.")
    @OptionGroup var connection: Connection
    @Option(help: "Give up after this many seconds.") var timeout: UInt64 = 300

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            try await store.flush(timeoutMilliseconds: timeout * 1000)
        }
    }
}

// MARK: Helpers

/// `BUCKET[/PREFIX]` → (bucket, prefix).
func splitBucket(_ text: String) -> (String, String) {
    guard let slash = text.firstIndex(of: "/") else { return (text, "") }
    return (String(text[..<slash]), String(text[text.index(after: slash)...]))
}

/// The part of a key below the fetched prefix as a path inside the destination folder; keys that would
/// climb out of it ("..", absolute) are refused rather than written elsewhere.
func safeRelativePath(_ relative: String, key: String) throws(GedsError) -> String {
    let parts = relative.split(separator: "/", omittingEmptySubsequences: true)
    guard !parts.isEmpty, !parts.contains(where: { $0 == ".." || $0 == "." }) else {
        throw GedsError(.invalidName, "refusing to write key '\(key)': its path would leave the destination folder")
    }
    return parts.joined(separator: "/")
}

func pad(_ text: String, _ width: Int) -> String {
    String(repeating: " ", count: max(0, width - text.count)) + text
}

func formatDate(_ milliseconds: UInt64) -> String {
    let formatter = DateFormatter()
    formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
    formatter.timeZone = TimeZone(identifier: "UTC")
    return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))
}

func filesUnder(_ folder: String) throws(GedsError) -> [String] {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw GedsError(.invalidArgument, "not a folder: \(folder)")
    }
    guard let enumerator = FileManager.default.enumerator(atPath: folder) else { return [] }
    var files: [String] = []
    while let relative = enumerator.nextObject() as? String {
        let path = folder + "/" + relative
        var directory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &directory), !directory.boolValue {
            files.append(path)
        }
    }
    return files.sorted()
}

func makeParent(of file: String) throws(GedsError) {
    let parent = (file as NSString).deletingLastPathComponent
    guard !parent.isEmpty else { return }
    do {
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
    } catch {
        throw GedsError(.io, "cannot create folder \(parent): \(error.localizedDescription)")
    }
}

/// One progress bar on stderr for a transfer of one object or a whole set (objects, bytes, rate, ETA); drawn
/// only when stderr is a terminal, the transfer is large enough to be worth it and `--quiet` is not given.
final class Progress {
    private let label: String
    private let totalBytes: UInt64
    private let totalObjects: Int
    private let enabled: Bool
    private let start = Date()
    private var lastDraw = Date.distantPast
    private var finishedBytes: UInt64 = 0
    /// Objects done so far (set directly when the count comes from elsewhere, as a drain's does).
    var finishedObjects = 0

    init(label: String, totalBytes: UInt64, objects: Int = 1, quiet: Bool) {
        self.label = label
        self.totalBytes = totalBytes
        totalObjects = objects
        enabled = !quiet && isatty(2) == 1 && (totalBytes >= 8 << 20 || objects > 1)
    }

    /// `done` bytes of the object in flight.
    func update(_ done: UInt64) {
        let now = Date()
        guard enabled, now.timeIntervalSince(lastDraw) > 0.1 else { return }
        lastDraw = now
        draw(bytes: finishedBytes + done, elapsed: now.timeIntervalSince(start))
    }

    /// The object in flight is complete with `size` bytes.
    func objectDone(size: UInt64) {
        finishedBytes += size
        finishedObjects += 1
        update(0)
    }

    func finish() {
        guard enabled else { return }
        draw(bytes: finishedBytes, elapsed: Date().timeIntervalSince(start))
        printError("")
    }

    private func draw(bytes: UInt64, elapsed: TimeInterval) {
        let fraction = min(Double(bytes) / Double(max(totalBytes, 1)), 1)
        let filled = Int(fraction * 30)
        let rate = Double(bytes) / max(elapsed, 1e-6)
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled)
        var line = "\r\(label) [\(bar)] \(Int(fraction * 100))%"
        if totalObjects > 1 { line += " \(finishedObjects)/\(totalObjects) objects" }
        line += " \(formatBytes(bytes))/\(formatBytes(totalBytes)) \(formatBytes(UInt64(rate)))/s"
        if rate > 0, bytes < totalBytes { line += " ETA \(formatDuration(Double(totalBytes - bytes) / rate))" }
        line += "\u{1B}[K"  // clears what a longer earlier line left
        line.withUTF8 { try? writeAll(.standardError, UnsafeRawBufferPointer($0)) }
    }
}

func formatBytes(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}

func formatDuration(_ seconds: Double) -> String {
    let whole = Int(seconds.rounded(.up))
    return whole >= 3600 ? String(format: "%d:%02d:%02d", whole / 3600, whole / 60 % 60, whole % 60)
        : String(format: "%d:%02d", whole / 60, whole % 60)
}

// `geds --mds HOST:PORT COMMAND …`: the global options may come before the command; they are handed to it.
@main
enum Main {
    static let globalOptions = ["--mds", "--node", "--timeout-ms", "--transport", "--rdma-address", "--mds-rdma", "--token-file",
                                "--tls-cert", "--tls-key", "--tls-ca", "--verbose"]
    static let globalFlags: Set = ["--verbose"]

    static func main() async {
        // Log lines (--verbose) go to stderr: stdout carries objects' bytes (`cat`, `get … -`).
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        var arguments = Array(CommandLine.arguments.dropFirst())
        var global: [String] = []
        while let first = arguments.first, globalOptions.contains(where: { first.hasPrefix($0) }) {
            if first.contains("=") || globalFlags.contains(first) {
                global.append(arguments.removeFirst())
            } else if arguments.count >= 2 {
                global += arguments.prefix(2)
                arguments.removeFirst(2)
            } else {
                break
            }
        }
        if !global.isEmpty, !arguments.isEmpty { arguments.insert(contentsOf: global, at: 1) }
        do {
            var command = try Geds.parseAsRoot(arguments)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as GedsError {
            printError("geds: \(error.message)")
            exit(1)
        } catch {
            Geds.exit(withError: error)
        }
    }
}
