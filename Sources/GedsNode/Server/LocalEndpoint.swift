import CLinux
import Dispatch
import GedsCarrier
import GedsCore
import GedsTier0
import GedsWire
import Logging
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A `gedsd`'s local endpoint: the Unix domain socket through which the processes of its host attach to it
/// and use its tier 0 and MDS session instead of starting nodes of their own (see ARCHITECTURE.md, "The
/// local endpoint"). One thread accepts; each connection has a thread of its own that reads a request, runs
/// it on the node (waiting for it) and answers, so a connection's requests are answered in order.
public final class LocalEndpoint: Sendable {
    public let path: String
    public let mode: UInt32
    private let listener: Int32
    private let node: Node
    private let logger: Logger
    /// The open connections' descriptors, shut down by `close` so that no client talks to a stopped node.
    private let connections = Mutex<Set<Int32>>([])
    /// Connections beyond this are refused with a clear error (each costs a thread and a descriptor).
    public static let maximumConnections = 4096

    /// Where a `gedsd` named `name` listens by default, and where clients look for one:
    /// `$XDG_RUNTIME_DIR/geds/NAME.sock`, else `/run/geds/NAME.sock`.
    public static var defaultDirectory: String {
        if let runtime = getenv("XDG_RUNTIME_DIR"), runtime.pointee != 0 { return String(cString: runtime) + "/geds" }
        return "/run/geds"
    }

    public static func defaultPath(nodeName: String) -> String { defaultDirectory + "/" + nodeName + ".sock" }

    /// Listens at `defaultPath(nodeName:)`, or, when a live gedsd of the same name (of another MDS) holds it,
    /// at NAME-PID.sock beside it: clients pick among the sockets there by MDS and host id.
    public static func startAtDefaultPath(node: Node, mode: UInt32, logger: Logger) throws(GedsError) -> LocalEndpoint {
        let name = node.configuration.name
        removeStaleSockets(in: defaultDirectory)
        var path = defaultPath(nodeName: name)
        if let probe = try? BlockingFrameSocket.connect(to: path) {
            probe.close()
            path = defaultPath(nodeName: "\(name)-\(getpid())")
        }
        return try start(node: node, path: path, mode: mode, logger: logger)
    }

    /// Listens at `path` with the socket file's permissions `mode` (0600: this user only). A stale socket
    /// file (no one answering) is replaced; a live one is an error.
    public static func start(node: Node, path: String, mode: UInt32, logger: Logger) throws(GedsError) -> LocalEndpoint {
        var address = try BlockingFrameSocket.socketAddress(path)
        if let probe = try? BlockingFrameSocket.connect(to: path) {
            probe.close()
            throw GedsError(.invalidArgument, "another gedsd listens on \(path) already (gedsd --socket PATH)")
        }
        unlink(path)
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            try Tier0Store.makeDirectories(String(path[..<slash]), what: "socket folder")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw GedsError.io("cannot make a Unix socket", errno: errno) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, chmod(path, mode_t(mode)) == 0, listen(fd, 512) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw GedsError.io("cannot listen on \(path)", errno: code)
        }
        let endpoint = LocalEndpoint(path: path, mode: mode, listener: fd, node: node, logger: logger)
        do {
            try startDetachedThread { endpoint.acceptLoop() }
        } catch {
            endpoint.close()
            Glibc.close(fd)
            throw GedsError.io("starting the thread of the local endpoint \(path)", errno: error.rawValue)
        }
        return endpoint
    }

    /// Removes the socket files of gedsds that died without removing theirs (nobody answers there), so
    /// that looking for a gedsd does not try them again and again. Files younger than a minute are left: a
    /// gedsd may be between `bind` and `listen`.
    static func removeStaleSockets(in folder: String) {
        guard let directory = opendir(folder) else { return }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasSuffix(".sock") { names.append(name) }
        }
        closedir(directory)
        for name in names {
            let path = folder + "/" + name
            var status = stat()
            guard lstat(path, &status) == 0, (status.st_mode & S_IFMT) == S_IFSOCK, status.st_uid == getuid(),
                  time(nil) - status.st_mtim.tv_sec > 60 else { continue }
            if BlockingFrameSocket.isAbandoned(path) { unlink(path) }
        }
    }

    private init(path: String, mode: UInt32, listener: Int32, node: Node, logger: Logger) {
        self.path = path
        self.mode = mode
        self.listener = listener
        self.node = node
        self.logger = logger
    }

    /// Stops accepting, removes the socket file and ends every connection (their clients' calls fail).
    public func close() {
        shutdown(listener, Int32(SHUT_RDWR))
        unlink(path)
        // Under the lock: a connection's thread takes its descriptor out before closing it, so none is reused here.
        connections.withLock { open in
            for descriptor in open { shutdown(descriptor, Int32(SHUT_RDWR)) }
        }
    }

    private func acceptLoop() {
        while true {
            let fd = retryingOnInterrupt { accept(listener, nil, nil) }
            if fd >= 0 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            if fd < 0 {
                if errno == ECONNABORTED || errno == EMFILE || errno == ENFILE { continue }
                Glibc.close(listener)
                return
            }
            do {
                try startDetachedThread { self.serve(BlockingFrameSocket(descriptor: fd)) }
            } catch {
                logger.error("refused a local connection: no thread to serve it (\(error))")
                Glibc.close(fd)
            }
        }
    }

    // MARK: One connection

    private func serve(_ socket: BlockingFrameSocket) {
        let admitted = connections.withLock { open -> Bool in
            guard open.count < LocalEndpoint.maximumConnections else { return false }
            open.insert(socket.descriptor)
            return true
        }
        var session: LocalSession?
        defer {
            if admitted { connections.withLock { _ = $0.remove(socket.descriptor) } }
            socket.close()
            if let abandoned = session?.abandonAll(), abandoned > 0 {
                logger.info("local client went away: \(abandoned) unsealed objects reclaimed")
            }
        }
        do throws(GedsError) {
            // The first frame (after the token's handshake) must be a hello, answered only once the peer is let in.
            guard let first = try firstRequestAfterHandshake(socket) else { return }
            guard case .hello(let pid, let mds) = first.request else {
                throw GedsError(.protocolViolation, "a local connection must begin with hello")
            }
            var peerPID: Int32 = 0
            var uid: UInt32 = 0
            var gid: UInt32 = 0
            guard clinux_peer_credentials(socket.descriptor, &peerPID, &uid, &gid) == 0 else {
                throw GedsError.io("cannot read the credentials of local client \(pid)", errno: errno)
            }
            if let refusal = refusal(uid: uid, gid: gid, admitted: admitted, mds: mds) {
                logger.notice("local endpoint refused pid \(pid): \(refusal.message)")
                try socket.send(LocalFrame.bytes(.failure(refusal), id: first.id))
                return
            }
            let current = LocalSession(node: node, trusted: uid == getuid() || uid == 0)
            session = current
            try socket.send(LocalFrame.bytes(.nodes([node.ownInfo]), id: first.id))
            while let frame = try socket.receiveFrame() {
                if frame.descriptor >= 0 { Glibc.close(frame.descriptor) }
                guard frame.header.kind == .request else {
                    throw GedsError(.protocolViolation, "expected a request frame, got a \(frame.header.kind) frame")
                }
                let request = try LocalFrame.request(from: frame.payload)
                try answer(request, id: frame.header.requestID, session: current, on: socket)
            }
        } catch {
            logger.debug("local connection ended: \(error.message)")
        }
    }

    /// Runs the token's handshake (its steps come as `call`s, before the hello) and returns the first request after
    /// it; nil when the peer went away or was refused (told why, logged and counted).
    private func firstRequestAfterHandshake(_ socket: BlockingFrameSocket) throws(GedsError) -> (id: UInt64, request: LocalRequest)? {
        var gate = AuthenticationGate(node.configuration.serverAuthentication(logger), address: path)
        while let frame = try socket.receiveFrame() {
            if frame.descriptor >= 0 { Glibc.close(frame.descriptor) }
            guard frame.header.kind == .request else {
                throw GedsError(.protocolViolation, "expected a request frame, got a \(frame.header.kind) frame")
            }
            let request = try LocalFrame.request(from: frame.payload)
            let verdict = if case .call(let step) = request {
                gate.admit(step, from: LocalEndpoint.describePeer(socket))
            } else {
                gate.admitOther(from: LocalEndpoint.describePeer(socket))
            }
            switch verdict {
            case .serve:
                return (frame.header.requestID, request)
            case .answer(let reply):
                try socket.send(LocalFrame.bytes(reply, id: frame.header.requestID))
            case .refuse(let error):
                try socket.send(LocalFrame.bytes(.failure(error), id: frame.header.requestID))
                return nil
            }
        }
        return nil
    }

    /// "pid P uid U", from the kernel (SO_PEERCRED), for log lines.
    private static func describePeer(_ socket: BlockingFrameSocket) -> String {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        guard clinux_peer_credentials(socket.descriptor, &pid, &uid, &gid) == 0 else { return "a local process" }
        return "pid \(pid) uid \(uid)"
    }

    /// Why a peer may not attach, nil when it may: its user (SO_PEERCRED) against the socket's mode, the
    /// connection limit, and the MDS it expects.
    private func refusal(uid: UInt32, gid: UInt32, admitted: Bool, mds: String) -> GedsError? {
        let allowed = uid == getuid() || uid == 0 || mode & 0o007 != 0 || (mode & 0o070 != 0 && gid == getgid())
        guard allowed else {
            return GedsError(.invalidArgument, "gedsd \(node.configuration.name) refuses user \(uid): its socket \(path) "
                             + "is for user \(getuid())\(mode & 0o070 != 0 ? " and group \(getgid())" : "") only "
                             + "(mode \(String(mode, radix: 8)); gedsd --socket-mode widens it)")
        }
        guard admitted else {
            return GedsError(.outOfSpace, "gedsd \(node.configuration.name) has \(LocalEndpoint.maximumConnections) local connections already")
        }
        guard mds.isEmpty || mds == "\(node.configuration.mds)" else {
            return GedsError(.invalidArgument, "gedsd \(node.configuration.name) at \(path) serves the MDS at \(node.configuration.mds), not \(mds)")
        }
        return nil
    }

    private func answer(_ request: LocalRequest, id: UInt64, session: LocalSession, on socket: BlockingFrameSocket) throws(GedsError) {
        switch request {
        case .view(let info):
            // The node's view keeps the file mapped (and so present) until the descriptor is on its way.
            let outcome = wait { () throws(GedsError) -> (MappedBytes, FileDescriptor) in
                let object = try await session.checked(info)
                let view = try await self.node.view(of: object)
                return (view, try self.node.readPath.descriptor(ofViewed: object, view))
            }
            switch outcome {
            case .success(let (view, descriptor)):
                defer { try? descriptor.close() }
                try withExtendedLifetime(view) { () throws(GedsError) in
                    try socket.send(LocalFrame.bytes(.count(UInt64(view.count)), id: id), passing: descriptor.rawValue)
                }
            case .failure(let error):
                try socket.send(LocalFrame.bytes(.failure(error), id: id))
            }
        case .read(let info, let bucket, let key, let offset, let length):
            let count = Int(min(length, WireLimits.maximumDataPayload))
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 16)
            defer { buffer.deallocate() }
            // Only this thread and the awaited read touch the buffer, one after the other.
            nonisolated(unsafe) let destination = UnsafeMutableRawBufferPointer(rebasing: buffer[..<count])
            let outcome = wait { () throws(GedsError) -> Int in
                let object = if let info { try await session.checked(info) } else { try await self.node.lookup(bucket: bucket, key: key) }
                return try await self.node.read(object, at: offset, into: destination)
            }
            switch outcome {
            case .success(let got):
                try socket.send(LocalFrame.bytes(.stream(length: UInt64(got)), id: id,
                                                 data: UnsafeRawBufferPointer(rebasing: buffer[..<got])))
            case .failure(let error):
                try socket.send(LocalFrame.bytes(.failure(error), id: id))
            }
        case .create(let bucket, let key, let persistency, let exclusive, let replicas):
            switch wait({ () throws(GedsError) in
                try await session.create(bucket: bucket, key: key, persistency: persistency, exclusive: exclusive, replicas: replicas)
            }) {
            case .success(let writable):
                let sent: Result<Void, GedsError> = writable.withDescriptor { descriptor in
                    Result { () throws(GedsError) in
                        try socket.send(LocalFrame.bytes(.created(blob: writable.blob), id: id), passing: descriptor?.rawValue ?? -1)
                    }
                }
                try sent.get()
            case .failure(let error):
                try socket.send(LocalFrame.bytes(.failure(error), id: id))
            }
        default:
            let reply: Reply
            switch wait({ () throws(GedsError) in try await session.handle(request) }) {
            case .success(let value): reply = value
            case .failure(let error): reply = .failure(error)
            }
            try socket.send(LocalFrame.bytes(reply, id: id))
        }
    }

    /// Runs `body` and waits for it on this (connection) thread. It starts on this thread (`Task.immediate`: a body
    /// that never suspends, such as a create under a reserved id, costs no hand-off) and what follows a suspension
    /// runs on the event loop of the node's connections (as `Node.onLoop`): its MDS round trips then cost no further
    /// hand-offs.
    private func wait<Value: Sendable>(_ body: @escaping @Sendable () async throws(GedsError) -> Value) -> Result<Value, GedsError> {
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<Result<Value, GedsError>?>(nil)
        Task.immediate(executorPreference: node.loopExecutor) {
            let outcome = await MDSClient.$blockingThread.withValue(pthread_self()) { () async -> Result<Value, GedsError> in
                do throws(GedsError) { return .success(try await body()) } catch { return .failure(error) }
            }
            result.withLock { $0 = outcome }
            done.signal()
        }
        done.wait()
        return result.withLock { $0! }
    }
}

/// The objects one local connection created and has not sealed yet: when the connection ends (its process
/// exited or was killed), they are abandoned, so nothing half-written is published or keeps tier-0 space.
final class LocalSession: Sendable {
    private let node: Node
    /// The client runs as the gedsd's user or as root: it could open the tier-0 files itself anyway.
    private let trusted: Bool
    private let unsealed = Mutex<[BlobID: (writable: WritableBlob, persistency: Persistency?, waitForReplicas: Bool)]>([:])

    init(node: Node, trusted: Bool) {
        self.node = node
        self.trusted = trusted
    }

    /// The object record a client sent back (its paths are opened here), taken as it is from a trusted
    /// client; for another user's, the MDS's record of the same blob, so that no path of the client's
    /// choosing is opened with the gedsd's rights.
    func checked(_ info: ObjectInfo) async throws(GedsError) -> ObjectInfo {
        if trusted { return info }
        let current = try await node.lookup(bucket: info.bucket, key: info.key)
        guard current.blob == info.blob else {
            throw GedsError(.noSuchBlob, "\(info.bucket)/\(info.key) was replaced or deleted since it was opened; open it again")
        }
        return current
    }

    func create(bucket: String, key: String, persistency: Persistency?, exclusive: Bool,
                replicas: Replicas?) async throws(GedsError) -> WritableBlob {
        try await node.checkPersistency(persistency, bucket: bucket)
        let writable = try await node.create(bucket: bucket, key: key, exclusive: exclusive, replicas: replicas?.copies)
        unsealed.withLock { $0[writable.blob] = (writable, persistency, replicas?.waitForAll ?? true) }
        return writable
    }

    func abandonAll() -> Int {
        let abandoned = unsealed.withLock { objects in
            defer { objects.removeAll() }
            return Array(objects.values)
        }
        for object in abandoned { node.abandon(object.writable) }
        return abandoned.count
    }

    func handle(_ request: LocalRequest) async throws(GedsError) -> Reply {
        switch request {
        case .seal(let blob, let size, let metadata, let handOffTo):
            guard let object = unsealed.withLock({ $0.removeValue(forKey: blob) }) else {
                throw GedsError(.objectSealed, "object \(blob.fileName) is not being written on this connection")
            }
            do throws(GedsError) {
                // The client wrote through its own descriptor: the file's size is the one it reports.
                try object.writable.truncate(to: size)
            } catch {
                node.abandon(object.writable)
                throw error
            }
            let target = handOffTo.isEmpty ? nil : try await node.liveNode(named: handOffTo)
            try await node.seal(object.writable, metadata: metadata, handingOffTo: target, persistency: object.persistency,
                                waitForReplicas: object.waitForReplicas)
            return .ok
        case .put(let bucket, let key, let bytes, let metadata, let persistency, let exclusive):
            try await node.put(bucket: bucket, key: key, bytes: bytes, metadata: metadata, persistency: persistency, exclusive: exclusive)
            return .ok
        case .relocate(let bucket, let key, let toNode):
            let info = try await node.lookup(bucket: bucket, key: key)
            try await node.relocate(info, to: try await node.liveNode(named: toNode))
            return .ok
        case .call(.abortObject(let blob)):
            // Only an object this connection is writing can be given up through it.
            guard let object = unsealed.withLock({ $0.removeValue(forKey: blob) }) else {
                throw GedsError(.objectSealed, "object \(blob.fileName) is not being written on this connection")
            }
            // Answered once the MDS forgot the blob, as an embedded writer's abort is; the file goes with `object`.
            try await node.abort(object.writable)
            return .ok
        case .call(let call):
            return try await answer(call)
        case .hello, .create, .view, .read:
            throw GedsError(.protocolViolation, "unexpected local request \(request)")
        }
    }

    /// A metadata call of the API, run as the node's own (the `GEDS` methods of an embedded node do the same).
    private func answer(_ call: Request) async throws(GedsError) -> Reply {
        switch call {
        case .createBucket(let bucket):
            try await node.mds.expectOK(.createBucket(bucket))
        case .deleteBucket(let bucket, let force):
            try await node.deleteBucket(bucket, force: force)
        case .listBuckets:
            return .buckets(try await node.mds.buckets())
        case .setBucketStorage(let bucket, let storage):
            try await node.mds.expectOK(.setBucketStorage(bucket: bucket, storage: storage))
        case .bucketStorage(let bucket):
            return .storage(try await node.bucketStorage(bucket))
        case .lookup(let bucket, let key):
            return .object(try await node.lookup(bucket: bucket, key: key))
        case .list(let bucket, let prefix, let delimiter, let startAfter, let maxKeys):
            return .page(try await node.list(bucket: bucket, prefix: prefix, delimiter: delimiter, startAfter: startAfter,
                                             maxKeys: maxKeys))
        case .deleteObject(let bucket, let key):
            try await node.delete(bucket: bucket, key: key)
        case .deletePrefix(let bucket, let prefix):
            return .count(try await node.delete(bucket: bucket, prefix: prefix))
        case .rename(let fromBucket, let fromKey, let toBucket, let toKey):
            try await node.rename(bucket: fromBucket, key: fromKey, toBucket: toBucket, toKey: toKey)
        case .copy(let fromBucket, let fromKey, let toBucket, let toKey):
            try await node.copy(bucket: fromBucket, key: fromKey, toBucket: toBucket, toKey: toKey)
        case .setMetadata(let bucket, let key, let metadata):
            try UserMetadata.validate(metadata)
            try await node.setMetadata(bucket: bucket, key: key, metadata)
        case .listNodes:
            return .nodes(try await node.mds.nodes())
        case .drainNode(let name):
            try await node.mds.expectOK(.drainNode(name: name))
        case .setBucketReplicas(let bucket, let replicas):
            try await node.mds.expectOK(.setBucketReplicas(bucket: bucket, replicas: replicas))
        case .bucketReplicas(let bucket):
            return .count(try await node.mds.count(.bucketReplicas(bucket: bucket)))
        case .flush(let timeout):
            try await node.flushEverywhere(timeoutMilliseconds: timeout)
        default:
            throw GedsError(.protocolViolation, "\(call) is not a call of the local endpoint")
        }
        return .ok
    }
}
