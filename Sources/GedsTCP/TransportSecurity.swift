import GedsCarrier
import GedsCore
import NIOCore
import NIOSSL
import NIOTLS
#if canImport(Glibc)
import Glibc
#endif

/// TLS on the deployment's TCP connections (`--tls-cert FILE --tls-key FILE --tls-ca FILE`, else `GEDS_TLS_CERT`,
/// `GEDS_TLS_KEY`, `GEDS_TLS_CA`), TLS 1.3 through swift-nio-ssl. Servers (the MDS, a node's data port) present the
/// certificate and key and speak nothing but TLS; with a CA they also demand a client certificate it signed (mutual
/// TLS). Clients need the CA: a server's certificate must chain to it and name the address the client dialled (an IP
/// SAN for a peer addressed by IP, a DNS SAN for a host name); clients with a certificate and key present them.
/// The deployment token's handshake, when there is one, runs inside TLS. Without any of the three files nothing
/// changes. The host-local socket and RDMA are not TLS (docs/ARCHITECTURE.md, Security).
public final class TransportSecurity: Sendable {
    public let files: Files
    private let serverContext: NIOSSLContext?
    private let clientContext: NIOSSLContext?

    public struct Files: Sendable, Equatable {
        public var certificate: String?
        public var key: String?
        public var authority: String?

        public init(certificate: String? = nil, key: String? = nil, authority: String? = nil) {
            self.certificate = certificate
            self.key = key
            self.authority = authority
        }

        /// Each file not given as an option from its environment variable (an empty one counts as unset).
        public func withEnvironmentDefaults() -> Files {
            func variable(_ name: String) -> String? {
                guard let value = getenv(name), value.pointee != 0 else { return nil }
                return String(cString: value)
            }
            return Files(certificate: certificate ?? variable(TransportSecurity.certificateVariable),
                         key: key ?? variable(TransportSecurity.keyVariable),
                         authority: authority ?? variable(TransportSecurity.authorityVariable))
        }

        public var isEmpty: Bool { certificate == nil && key == nil && authority == nil }
    }

    public static let certificateVariable = "GEDS_TLS_CERT"
    public static let keyVariable = "GEDS_TLS_KEY"
    public static let authorityVariable = "GEDS_TLS_CA"

    /// The options' help, the same in every tool that takes them.
    public static let certificateHelp = "TLS certificate (PEM) this process presents (default: $GEDS_TLS_CERT); servers need it and --tls-key."
    public static let keyHelp = "Private key (PEM) of --tls-cert (default: $GEDS_TLS_KEY)."
    public static let authorityHelp = "CA certificate (PEM) that peers' certificates must chain to (default: $GEDS_TLS_CA); "
        + "clients need it, servers with it demand client certificates."

    /// The TLS the options (`files`) and, for each one not given, its environment variable ask for; nil: none. A
    /// file that cannot be loaded, or a key without its certificate, is an error now rather than at the first connection.
    public static func resolve(_ files: Files = Files()) throws(GedsError) -> TransportSecurity? {
        let files = files.withEnvironmentDefaults()
        guard !files.isEmpty else { return nil }
        return try TransportSecurity(files)
    }

    public init(_ files: Files) throws(GedsError) {
        guard (files.certificate == nil) == (files.key == nil) else {
            throw GedsError(.invalidArgument, files.certificate == nil
                ? "--tls-key (\(TransportSecurity.keyVariable)) needs --tls-cert (\(TransportSecurity.certificateVariable))"
                : "--tls-cert (\(TransportSecurity.certificateVariable)) needs --tls-key (\(TransportSecurity.keyVariable))")
        }
        self.files = files
        var identity: (chain: [NIOSSLCertificateSource], key: NIOSSLPrivateKeySource)?
        if let certificate = files.certificate, let key = files.key {
            let chain = try TransportSecurity.load("the TLS certificate", certificate) { try NIOSSLCertificate.fromPEMFile($0) }
            let privateKey = try TransportSecurity.load("the TLS key", key) { try NIOSSLPrivateKey(file: $0, format: .pem) }
            identity = (chain.map { .certificate($0) }, .privateKey(privateKey))
        }
        let authority = try files.authority.map { (path) throws(GedsError) in
            try TransportSecurity.load("the TLS CA", path) { try NIOSSLCertificate.fromPEMFile($0) }
        }
        do {
            if let identity {
                var server = TLSConfiguration.makeServerConfiguration(certificateChain: identity.chain, privateKey: identity.key)
                server.minimumTLSVersion = .tlsv13
                if let authority {
                    server.trustRoots = .certificates(authority)
                    server.certificateVerification = .noHostnameVerification  // clients have no address to check
                }
                serverContext = try NIOSSLContext(configuration: server)
            } else {
                serverContext = nil
            }
            if let authority {
                var client = TLSConfiguration.makeClientConfiguration()
                client.minimumTLSVersion = .tlsv13
                client.trustRoots = .certificates(authority)
                client.certificateVerification = .fullVerification
                if let identity {
                    client.certificateChain = identity.chain
                    client.privateKey = identity.key
                }
                clientContext = try NIOSSLContext(configuration: client)
            } else {
                clientContext = nil
            }
        } catch {
            throw GedsError(.invalidArgument, "cannot set up TLS with \(files.description): \(error)")
        }
    }

    private static func load<Loaded>(_ what: String, _ path: String,
                                     _ body: (String) throws -> Loaded) throws(GedsError) -> Loaded {
        guard access(path, R_OK) == 0 else { throw GedsError.io("cannot read \(what) \(path)", errno: errno) }
        do {
            return try body(path)
        } catch {
            throw GedsError(.invalidArgument, "\(what) \(path) is not valid PEM: \(error)")
        }
    }

    /// What a server says at start ("TLS (certificate ..., client certificates signed by ...)").
    public var serverDescription: String {
        "TLS (certificate \(files.certificate ?? "?")"
            + (files.authority.map { ", client certificates signed by \($0) required" } ?? ", no client certificates") + ")"
    }

    /// For a server: the handler that goes first in each accepted connection's pipeline.
    func serverHandler() throws(GedsError) -> NIOSSLServerHandler {
        guard let serverContext else {
            throw GedsError(.invalidArgument, "serving over TLS needs --tls-cert and --tls-key "
                            + "(\(TransportSecurity.certificateVariable), \(TransportSecurity.keyVariable)): the MDS, "
                            + "gedsd and every process with a node of its own (the geds CLI unless attached) serve")
        }
        return NIOSSLServerHandler(context: serverContext)
    }

    /// Checked before a server starts, so that a missing certificate is said at once.
    public func checkServes() throws(GedsError) { _ = try serverHandler() }

    func checkClient() throws(GedsError) {
        guard clientContext == nil else { return }
        throw GedsError(.invalidArgument, "a TLS client needs --tls-ca (\(TransportSecurity.authorityVariable)) "
                        + "to verify the servers' certificates")
    }

    /// For a client of `peer`: the handler that goes first in the pipeline. A host name is sent as SNI and checked
    /// against the certificate's DNS names; an IP address is checked against its IP addresses.
    func clientHandler(for peer: Endpoint) throws(GedsError) -> NIOSSLClientHandler {
        try checkClient()
        let isAddress = (try? SocketAddress(ipAddress: peer.host, port: 0)) != nil
        do {
            return try NIOSSLClientHandler(context: clientContext!, serverHostname: isAddress ? nil : peer.host)
        } catch {
            throw GedsError(.invalidArgument, "TLS to \(peer): \(error)")
        }
    }
}

extension TransportSecurity.Files: CustomStringConvertible {
    public var description: String {
        [certificate.map { "certificate \($0)" }, key.map { "key \($0)" }, authority.map { "CA \($0)" }]
            .compactMap { $0 }.joined(separator: ", ")
    }
}

/// The TLS handshake of a client channel being made (`Connection`, `PushConnection`): its handlers go first in the
/// pipeline, and `connected` waits for the handshake's end, so that a peer without TLS, or with a certificate the
/// CA did not sign, is one error of `connect` (never a hang, never a failure of the first request). Nil without TLS.
struct PendingTLS: PendingHandshake, Sendable {
    private let security: TransportSecurity
    let promise: EventLoopPromise<Void>
    private let peer: Endpoint
    private let peerName: String
    private let timeout: TimeAmount

    /// Throws for a client without a CA, before anything connects.
    init?(_ security: TransportSecurity?, peer: Endpoint, peerName: String, loop: any EventLoop,
          timeout: TimeAmount) throws(GedsError) {
        guard let security else { return nil }
        try security.checkClient()
        self.security = security
        promise = loop.makePromise(of: Void.self)
        self.peer = peer
        self.peerName = peerName
        self.timeout = timeout
    }

    func addHandlers(to channel: any Channel) throws {
        try channel.pipeline.syncOperations.addHandlers(
            [try security.clientHandler(for: peer), TLSHandshakeWatcher(done: promise, peer: "\(peerName) \(peer)",
                                                                         unreachable: unreachableCode, timeout: timeout)],
            position: .first)
    }

    private var unreachableCode: GedsError.Code { peerName == "MDS" ? .mdsUnreachable : .peerUnreachable }

}

/// Sits behind the TLS handler of a client channel: reports the handshake's end or why it failed, and explains
/// the TLS handler's later failures to the handlers behind.
final class TLSHandshakeWatcher: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let done: EventLoopPromise<Void>
    private let peer: String
    private let unreachable: GedsError.Code
    private let timeout: TimeAmount
    private var finished = false
    private var deadline: Scheduled<Void>?

    init(done: EventLoopPromise<Void>, peer: String, unreachable: GedsError.Code, timeout: TimeAmount) {
        self.done = done
        self.peer = peer
        self.unreachable = unreachable
        self.timeout = timeout
    }

    /// A peer that never answers the handshake (one without TLS waiting for more of a frame) fails it in time.
    func channelActive(context: ChannelHandlerContext) {
        deadline = context.deadline(of: self, in: timeout) { watcher, context in
            watcher.fail(GedsError(.timedOut, "TLS handshake with \(watcher.peer) got no answer within "
                                   + "\(watcher.timeout.nanoseconds / 1_000_000) ms (does it run without TLS?)"))
            context.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event { finish(nil) }
        context.fireUserInboundEventTriggered(event)
    }

    /// Stays after the handshake: under TLS 1.3 a server refuses a client's certificate after the client's side of
    /// the handshake ended, and the handlers behind get that explained too.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let explained = TLSHandshakeWatcher.explain(error, peer: peer, unreachable: unreachable)
        finish(explained)
        context.fireErrorCaught(explained)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(GedsError(unreachable, "\(peer) closed the connection during the TLS handshake "
                       + "(does it run without TLS? or does it demand a client certificate: --tls-cert, --tls-key?)"))
        context.fireChannelInactive()
    }

    private func fail(_ error: GedsError) { finish(error) }

    private func finish(_ error: GedsError?) {
        guard !finished else { return }
        finished = true
        deadline?.cancel()
        if let error { done.fail(error) } else { done.succeed() }
    }

    /// One line naming the likely cause: a peer without TLS, a certificate the CA did not sign or that does not
    /// name the peer's address, or this process's certificate refused by the peer.
    static func explain(_ error: any Error, peer: String, unreachable: GedsError.Code) -> GedsError {
        if let error = error as? GedsError { return error }
        if let error = error as? NIOSSLExtraError, error == .failedToValidateHostname {
            return GedsError(.authenticationFailed, "TLS handshake with \(peer) failed: its certificate does not name "
                             + "the address dialled (give each host a certificate whose subjectAltName has its address)")
        }
        let reason = boringSSLReason(error)
        switch reason {
        case "WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "UNEXPECTED_RECORD", "RECORD_TOO_LARGE", "HTTP_REQUEST":
            return GedsError(unreachable, "TLS handshake with \(peer) failed: it does not speak TLS "
                             + "(start it with --tls-cert and --tls-key, or connect without TLS)")
        case "CERTIFICATE_VERIFY_FAILED":
            return GedsError(.authenticationFailed, "TLS handshake with \(peer) failed: its certificate is not signed "
                             + "by the --tls-ca CA (\(reason!))")
        case let alert? where alert.hasPrefix("TLSV1_ALERT_") || alert.hasPrefix("SSLV3_ALERT_"):
            return GedsError(.authenticationFailed, "TLS: \(peer) refused this process's certificate (it demands one "
                             + "signed by its CA: --tls-cert, --tls-key) (\(alert))")
        default:
            return GedsError(unreachable, "TLS with \(peer) failed: \(reason ?? "\(error)")")
        }
    }
}

/// BoringSSL's name for what went wrong ("CERTIFICATE_VERIFY_FAILED"), from a swift-nio-ssl error.
func boringSSLReason(_ error: any Error) -> String? {
    let text = "\(error)"
    guard let marker = text.range(of: "OPENSSL_internal:") else { return nil }
    let reason = text[marker.upperBound...].prefix { $0.isUppercase || $0.isNumber || $0 == "_" }
    return reason.isEmpty ? nil : String(reason)
}

/// The first bytes of a TLS record: its content type and the major version (3 in every TLS version).
enum TLSRecord {
    static let handshake: UInt8 = 0x16
    static let alert: UInt8 = 0x15
    static let majorVersion: UInt8 = 3
}

extension GedsError {
    /// A plain client's connection closed by a peer that answered with a TLS record.
    static func peerRequiresTLS(_ peer: String, code: Code) -> GedsError {
        GedsError(code, "\(peer) requires TLS: it answered with a TLS alert and closed the connection "
                  + "(connect with --tls-ca, and --tls-cert --tls-key where client certificates are demanded)")
    }
}

/// What a client channel sets up in front of its own handler: TLS first, then the token's handshake inside it.
struct ClientChannelSecurity: Sendable {
    private let tls: PendingTLS?
    private let authentication: PendingAuthentication?

    init(tls: TransportSecurity?, token: DeploymentToken?, peer: Endpoint, peerName: String, loop: any EventLoop,
         timeout: TimeAmount) throws(GedsError) {
        self.tls = try PendingTLS(tls, peer: peer, peerName: peerName, loop: loop, timeout: timeout)
        authentication = PendingAuthentication(token: token, peer: "\(peerName) \(peer)", loop: loop, timeout: timeout)
    }

    func addHandlers(to channel: any Channel) throws {
        try authentication?.addHandler(to: channel)
        try tls?.addHandlers(to: channel)  // in front of the authentication's handler
    }

    /// The channel is connected: waits for the TLS handshake, then for the token's.
    func connected(_ channel: any Channel) async throws(GedsError) {
        try await tls?.connected(channel)
        try await authentication?.connected(channel)
    }

    /// The channel never connected.
    func abandon(_ error: GedsError) {
        tls?.abandon(error)
        authentication?.abandon(error)
    }
}
