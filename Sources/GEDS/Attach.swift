import GedsCarrier
import GedsCore
import GedsNode
import GedsTCP
import GedsTier0
import GedsWire
import Logging
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A process attached to its host's `gedsd` (attach mode): no node of its own; every call goes over the
/// gedsd's local socket (see ARCHITECTURE.md, "The local endpoint"). Calls are blocking round trips of a few
/// microseconds on idle connections kept here (one per concurrent call; a writer keeps one until it seals).
/// After a `fork`, the child opens connections of its own (the parent's are recognised by the process id);
/// after the gedsd restarts, the failing call says so and the next call connects again.
final class Attachment: Sendable {
    let path: String
    /// The MDS the process expects the gedsd to serve ("" for any).
    let mds: String
    /// How long a gedsd may take to greet a new connection, and be silent before a call looks whether it still runs;
    /// the deadline of lookups at the MDS.
    let timeoutMilliseconds: Int64
    /// The deployment's, proved on each new connection (none: an open deployment).
    let token: DeploymentToken?
    /// For the process's own TCP connections to the MDS (subscriptions); under TLS its lookups go through the gedsd
    /// (`DirectCalls` is plain TCP).
    let tls: TransportSecurity?
    /// Lookups straight to the MDS on the caller's thread: half the time of one through the gedsd, which makes
    /// the same MDS round trip after a local one (docs/PERFORMANCE.md, attach mode). Nil when the MDS is unknown.
    private let mdsCalls: DirectCalls?
    private let state: Mutex<State>

    private struct State {
        var pid: Int32
        var idle: [LocalConnection] = []
        var gedsd: NodeInfo
    }

    private init(path: String, mds: String, timeoutMilliseconds: Int64, token: DeploymentToken?, tls: TransportSecurity?,
                 first: LocalConnection,
                 gedsd: NodeInfo) {
        self.path = path
        self.mds = mds
        self.timeoutMilliseconds = timeoutMilliseconds
        self.token = token
        self.tls = tls
        mdsCalls = tls != nil ? nil
            : (try? Endpoint(parsing: mds)).map { DirectCalls(endpoint: $0, timeoutMilliseconds: timeoutMilliseconds, token: token) }
        state = Mutex(State(pid: getpid(), idle: [first], gedsd: gedsd))
    }

    /// Connects to the gedsd at `path` and greets it (within `helloMilliseconds` this once, when given).
    static func attach(path: String, mds: String, timeoutMilliseconds: Int64, helloMilliseconds: Int64? = nil, token: DeploymentToken?,
                       tls: TransportSecurity?) throws(GedsError) -> Attachment {
        let (connection, gedsd) = try LocalConnection.open(path: path, mds: mds, helloMilliseconds: helloMilliseconds ?? timeoutMilliseconds,
                                                           silenceMilliseconds: timeoutMilliseconds, token: token)
        return Attachment(path: path, mds: mds, timeoutMilliseconds: timeoutMilliseconds, token: token, tls: tls, first: connection,
                          gedsd: gedsd)
    }

    /// A gedsd found by looking (not named by the user) that does not greet within this is passed over.
    static let discoveryMilliseconds: Int64 = 500

    /// Which gedsd a process with `configuration` attaches to, if any: `.path` must attach; `.auto` attaches to
    /// `GEDS_NODE` (which must answer), else to the first socket in the default folder whose gedsd serves the same
    /// MDS; `.never` does not. Logs the choice.
    static func choose(_ configuration: NodeConfiguration, logger: Logger) throws(GedsError) -> Attachment? {
        let mds = "\(configuration.mds)"
        switch configuration.attach {
        case .never:
            return nil
        case .path(let path):
            return try attach(path: path, mds: mds, timeoutMilliseconds: configuration.timeoutMilliseconds,
                              token: configuration.token, tls: configuration.tls, logger: logger, reason: "as configured")
        case .auto:
            if let variable = getenv("GEDS_NODE"), variable.pointee != 0 {
                return try attach(path: String(cString: variable), mds: mds, timeoutMilliseconds: configuration.timeoutMilliseconds,
                                  token: configuration.token, tls: configuration.tls, logger: logger, reason: "GEDS_NODE")
            }
            // Only a gedsd of the same host id: a process that says it is on another host (GEDS_HOST_ID) is not attached.
            let folder = LocalEndpoint.defaultDirectory
            for socket in socketFiles(in: folder) {
                guard let attachment = try? attach(path: folder + "/" + socket, mds: mds, timeoutMilliseconds: configuration.timeoutMilliseconds,
                                                   helloMilliseconds: discoveryMilliseconds,
                                                   token: configuration.token, tls: configuration.tls) else {
                    continue
                }
                if attachment.gedsd.hostID == configuration.hostID {
                    return attachment.logged(logger, reason: "found in \(folder)")
                }
            }
            logger.info("no gedsd of host \(configuration.hostID) for MDS \(mds) in \(folder) (and GEDS_NODE unset): this process runs its own node")
            return nil
        }
    }

    private static func attach(path: String, mds: String, timeoutMilliseconds: Int64, token: DeploymentToken?,
                               tls: TransportSecurity?, logger: Logger,
                               reason: String) throws(GedsError) -> Attachment {
        try attach(path: path, mds: mds, timeoutMilliseconds: timeoutMilliseconds, token: token, tls: tls).logged(logger, reason: reason)
    }

    private func logged(_ logger: Logger, reason: String) -> Attachment {
        logger.info("attached to gedsd \(gedsd.name) at \(path) (\(reason)): its tier 0 and MDS session serve this process")
        return self
    }

    private static func socketFiles(in folder: String) -> [String] {
        guard let directory = opendir(folder) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasSuffix(".sock") { names.append(name) }
        }
        return names.sorted()
    }

    /// The gedsd this process is attached to (as it said at the last connection).
    var gedsd: NodeInfo { state.withLock { $0.gedsd } }

    /// An idle connection, or a new one. In a child after `fork`, the parent's are left to the parent.
    func lease() throws(GedsError) -> LocalConnection {
        let pid = getpid()
        let idle = state.withLock { state -> LocalConnection? in
            if state.pid != pid {
                state.pid = pid
                // The parent's connections: closing the child's descriptors leaves them open for the parent.
                state.idle.forEach { $0.close() }
                state.idle.removeAll()
            }
            return state.idle.popLast()
        }
        if let idle { return idle }
        do {
            let (connection, gedsd) = try LocalConnection.open(path: path, mds: mds, helloMilliseconds: timeoutMilliseconds,
                                                               silenceMilliseconds: timeoutMilliseconds,
                                                               token: token)
            state.withLock { $0.gedsd = gedsd }
            return connection
        } catch {
            throw GedsError(.peerUnreachable, "attached to the gedsd at \(path), which does not answer: \(error.message)")
        }
    }

    func giveBack(_ connection: LocalConnection) {
        state.withLock { state in
            if state.pid == connection.pid { state.idle.append(connection) }
        }
    }

    /// The connection failed: it and every idle one (the gedsd is probably gone) are closed; the next call
    /// connects again.
    func failed(_ connection: LocalConnection, _ error: GedsError) -> GedsError {
        connection.close()
        let idle = state.withLock { state in
            defer { state.idle.removeAll() }
            return state.idle
        }
        idle.forEach { $0.close() }
        if error.code == .peerUnreachable || error.code == .timedOut { return error }  // a gedsd gone, or found stopped
        return GedsError(.peerUnreachable, "the gedsd at \(path) went away (\(error.message)); this call failed, the next one attaches again")
    }

    /// One request on `connection` (leased by the caller): the reply and the descriptor beside it (-1 for none).
    func roundTrip(_ request: LocalRequest, on connection: LocalConnection) throws(GedsError) -> (Reply, Int32) {
        do {
            return try connection.roundTrip(request)
        } catch {
            throw failed(connection, error)
        }
    }

    /// One request on an idle connection; a failure reply is thrown.
    func call(_ request: LocalRequest) throws(GedsError) -> Reply {
        let connection = try lease()
        let (reply, descriptor) = try roundTrip(request, on: connection)
        if descriptor >= 0 { close(descriptor) }
        giveBack(connection)
        if case .failure(let error) = reply { throw error }
        return reply
    }

    /// An object's record: from the MDS straight when it has the object, else through the gedsd, whose lookup
    /// also finds an object so far only in its bucket's S3 store.
    func lookup(bucket: String, key: String) throws(GedsError) -> ObjectInfo {
        if let info = lookedUpAtMDS(bucket: bucket, key: key) { return info }
        let reply = try call(.call(.lookup(bucket: bucket, key: key)))
        guard case .object(let info) = reply else { throw Attachment.unexpected(reply) }
        return info
    }

    /// The object's record from the MDS straight; nil when it does not have it (or cannot be asked).
    private func lookedUpAtMDS(bucket: String, key: String) -> ObjectInfo? {
        guard let mdsCalls, case .object(let info) = try? mdsCalls.call(.lookup(bucket: bucket, key: key)) else { return nil }
        return info
    }

    /// Reads into caller memory by name. Looked up at the MDS straight when it can be, a small object's bytes
    /// come with the lookup (the MDS keeps them inline) and the gedsd is not asked at all; else the gedsd looks
    /// up and reads in one call.
    func read(bucket: String, key: String, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(GedsError) -> Int {
        guard let info = lookedUpAtMDS(bucket: bucket, key: key) else {
            return try read(nil, bucket: bucket, key: key, at: offset, into: buffer)
        }
        return try read(info, at: offset, into: buffer)
    }

    /// Reads from an object already looked up: from its bytes inline when the lookup brought them, else from a
    /// tier-0 file of this host mapped here, else through the gedsd.
    func read(_ info: ObjectInfo, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(GedsError) -> Int {
        if let copied = info.copyContents(at: offset, into: buffer) { return copied }
        guard offset < info.size else { return 0 }
        let count = Int(min(UInt64(buffer.count), info.size - offset))
        let destination = UnsafeMutableRawBufferPointer(rebasing: buffer[..<count])
        if count > 0, let mapped = mappedOnThisHost(info) { return try mapped.copy(at: offset, into: destination) }
        return try read(info, bucket: info.bucket, key: info.key, at: offset, into: destination)
    }

    func expectOK(_ request: LocalRequest) throws(GedsError) {
        let reply = try call(request)
        guard case .ok = reply else { throw Attachment.unexpected(reply) }
    }

    static func unexpected(_ reply: Reply) -> GedsError {
        GedsError(.protocolViolation, "unexpected answer from gedsd: \(reply)")
    }

    // MARK: Objects

    func create(bucket: String, key: String, persistency: Persistency?, exclusive: Bool = false,
                replicas: Replicas? = nil) throws(GedsError) -> (LocalConnection, WritableBlob) {
        let connection = try lease()
        let request = LocalRequest.create(bucket: bucket, key: key, persistency: persistency, exclusive: exclusive, replicas: replicas)
        let (reply, descriptor) = try roundTrip(request, on: connection)
        switch reply {
        case .created(let blob) where descriptor >= 0:
            return (connection, WritableBlob(handedOver: FileDescriptor(rawValue: descriptor), blob: blob))
        case .failure(let error):
            giveBack(connection)
            throw error
        default:
            if descriptor >= 0 { close(descriptor) }
            throw failed(connection, Attachment.unexpected(reply))
        }
    }

    /// Seals a handed-over file on the connection that created it; the connection is idle again afterwards.
    func seal(_ writable: WritableBlob, on connection: LocalConnection, metadata: [String: String], handingOffTo target: NodeInfo?) throws(GedsError) {
        let size = try writable.seal()
        let (reply, descriptor) = try roundTrip(.seal(blob: writable.blob, size: size, metadata: metadata, handOffTo: target?.name ?? ""),
                                                on: connection)
        if descriptor >= 0 { close(descriptor) }
        giveBack(connection)
        if case .failure(let error) = reply { throw error }
        guard case .ok = reply else { throw Attachment.unexpected(reply) }
    }

    /// Gives up a handed-over file on the connection that created it: the gedsd forgets the blob and its file.
    func abort(_ writable: WritableBlob, on connection: LocalConnection) throws(GedsError) {
        let (reply, descriptor) = try roundTrip(.call(.abortObject(blob: writable.blob)), on: connection)
        if descriptor >= 0 { close(descriptor) }
        giveBack(connection)
        if case .failure(let error) = reply { throw error }
        guard case .ok = reply else { throw Attachment.unexpected(reply) }
    }

    /// The gedsd's tier-0 file of the object, mapped here: no copy, and the mapping outlives a delete. A copy in a
    /// tier-0 file of this host is mapped straight from its path, as a same-host node maps it (no round trip to the
    /// gedsd); the gedsd is asked when there is none, or it cannot be opened (moved meanwhile, another user's).
    func view(_ info: ObjectInfo) throws(GedsError) -> MappedBytes {
        if let mapped = mappedOnThisHost(info) { return mapped }
        let connection = try lease()
        let (reply, descriptor) = try roundTrip(.view(info), on: connection)
        giveBack(connection)
        defer { if descriptor >= 0 { close(descriptor) } }
        switch reply {
        case .count(let size) where descriptor >= 0 && size <= UInt64(Int.max):
            return try MappedBytes(descriptor: FileDescriptor(rawValue: descriptor), size: Int(size), writable: false)
        case .failure(let error):
            throw error
        default:
            throw Attachment.unexpected(reply)
        }
    }

    private func mappedOnThisHost(_ info: ObjectInfo) -> MappedBytes? {
        let hostID = gedsd.hostID
        for location in info.locations {
            guard case .node(let copy) = location, copy.tier == .tier0, copy.hostID == hostID,
                  let mapped = try? Tier0Store.map(copy, of: info.blob, size: info.size), mapped.count == info.size else { continue }
            return mapped
        }
        return nil
    }

    /// Reads into caller memory through the gedsd, in frames of up to `WireLimits.maximumDataPayload`.
    func read(_ info: ObjectInfo?, bucket: String, key: String, at offset: UInt64,
              into buffer: UnsafeMutableRawBufferPointer) throws(GedsError) -> Int {
        var done = 0
        while done < buffer.count {
            let length = UInt32(min(buffer.count - done, Int(WireLimits.maximumDataPayload)))
            let connection = try lease()
            let outcome: Result<Int, GedsError>
            do {
                outcome = try connection.read(.read(info: info, bucket: bucket, key: key, offset: offset + UInt64(done), length: length),
                                              into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + Int(length))]))
            } catch {
                throw failed(connection, error)
            }
            giveBack(connection)
            let got = try outcome.get()
            done += got
            if got < Int(length) { break }
        }
        return done
    }
}

/// One greeted connection to the gedsd, used by one caller at a time; closed when the last reference goes.
final class LocalConnection: Sendable {
    let socket: BlockingFrameSocket
    /// The process that opened it: after a fork, only that process may use it.
    let pid: Int32
    private let open = Mutex(true)

    private init(socket: BlockingFrameSocket) {
        self.socket = socket
        pid = getpid()
    }

    deinit { close() }

    /// Connects, proves the token (if any) and greets. A gedsd silent for `helloMilliseconds` is an error when it is
    /// stopped or gone; one that runs (busy, or slowed by a loaded machine) is waited for up to `silenceMilliseconds`,
    /// so a slow gedsd is not passed over for a node of the process's own. Afterwards a call fails once the gedsd,
    /// silent for `silenceMilliseconds`, turns out stopped or gone.
    static func open(path: String, mds: String, helloMilliseconds: Int64, silenceMilliseconds: Int64,
                     token: DeploymentToken?) throws(GedsError) -> (LocalConnection, NodeInfo) {
        var socket = try BlockingFrameSocket.connect(to: path)
        socket.waitWhileThePeerRuns("the gedsd at \(path)", checkingEvery: helloMilliseconds,
                                    limitMilliseconds: max(helloMilliseconds, silenceMilliseconds))
        let (reply, descriptor): (Reply, Int32)
        do {
            if let token {
                try ClientHandshake.run(token: token, peer: "gedsd at \(path)") { (step) throws(GedsError) -> Reply in
                    let (reply, descriptor) = try roundTrip(.call(step), on: socket)
                    if descriptor >= 0 { Glibc.close(descriptor) }
                    return reply
                }
            }
            (reply, descriptor) = try roundTrip(.hello(pid: getpid(), mds: mds), on: socket)
        } catch {
            socket.close()
            guard error.code == .timedOut else { throw error }
            throw GedsError(.timedOut, "the gedsd at \(path) did not greet: \(error.message)")
        }
        if descriptor >= 0 { Glibc.close(descriptor) }
        socket.waitWhileThePeerRuns("the gedsd at \(path)", checkingEvery: silenceMilliseconds)
        let connection = LocalConnection(socket: socket)
        switch reply {
        case .nodes(let nodes) where nodes.count == 1:
            return (connection, nodes[0])
        case .failure(let error):
            throw error
        default:
            throw Attachment.unexpected(reply)
        }
    }

    func close() {
        let wasOpen = open.withLock { isOpen in
            defer { isOpen = false }
            return isOpen
        }
        if wasOpen { socket.close() }
    }

    func roundTrip(_ request: LocalRequest) throws(GedsError) -> (Reply, Int32) {
        guard getpid() == pid else {
            throw GedsError(.invalidArgument, "an object writer made by process \(pid) before a fork cannot be used in process \(getpid())")
        }
        return try LocalConnection.roundTrip(request, on: socket)
    }

    private static func roundTrip(_ request: LocalRequest, on socket: BlockingFrameSocket) throws(GedsError) -> (Reply, Int32) {
        try socket.send(LocalFrame.bytes(request, id: 1))
        guard let frame = try socket.receiveFrame() else {
            throw GedsError(.peerUnreachable, "the gedsd closed the connection")
        }
        guard frame.header.kind == .reply, frame.header.requestID == 1 else {
            if frame.descriptor >= 0 { Glibc.close(frame.descriptor) }
            throw GedsError(.protocolViolation, "expected a reply frame, got a \(frame.header.kind) frame")
        }
        do {
            return (try LocalFrame.reply(from: frame.payload), frame.descriptor)
        } catch {
            if frame.descriptor >= 0 { Glibc.close(frame.descriptor) }
            throw error
        }
    }

    /// A `read` request: the bytes land in `buffer` straight from the socket. Thrown: the connection failed;
    /// returned as a failure: the gedsd's answer.
    func read(_ request: LocalRequest, into buffer: UnsafeMutableRawBufferPointer) throws(GedsError) -> Result<Int, GedsError> {
        let (reply, descriptor) = try roundTrip(request)
        if descriptor >= 0 { Glibc.close(descriptor) }
        switch reply {
        case .stream(let length) where length <= UInt64(buffer.count):
            var head = [UInt8](repeating: 0, count: FrameHeader.size)
            var ignored: Int32 = -1
            guard try socket.receive(into: &head, descriptor: &ignored) else {
                throw GedsError(.peerUnreachable, "the gedsd closed the connection")
            }
            let header = try LocalFrame.header(head)
            guard header.kind == .data, UInt64(header.length) == length else {
                throw GedsError(.protocolViolation, "expected \(length) bytes of data, got a \(header.kind) frame of \(header.length)")
            }
            if length > 0 {
                _ = try socket.receive(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<Int(length)]), descriptor: &ignored)
            }
            if ignored >= 0 { Glibc.close(ignored) }
            return .success(Int(length))
        case .failure(let error):
            return .failure(error)
        default:
            throw Attachment.unexpected(reply)
        }
    }
}
