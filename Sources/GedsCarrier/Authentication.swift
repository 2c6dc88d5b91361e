import Crypto
import GedsCore
import GedsWire
import Logging
import Metrics
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The deployment's shared secret (`--token-file FILE`, else `GEDS_TOKEN_FILE`): every connection proves that both
/// ends know it (`ClientHandshake`, `AuthenticationGate`) and it never crosses the wire. Without one a deployment
/// is open, as before tokens existed.
public struct DeploymentToken: Sendable {
    private let secret: [UInt8]

    public static let environmentVariable = "GEDS_TOKEN_FILE"
    /// Shorter secrets are refused: a token is meant to be generated (`head -c 32 /dev/urandom | base64`).
    public static let minimumLength = 16

    /// The file's contents without trailing white space (so that an editor's final newline does not matter).
    public init(secret: [UInt8], source: String) throws(GedsError) {
        var bytes = secret
        while let last = bytes.last, last == 0x20 || last == 0x09 || last == 0x0A || last == 0x0D { bytes.removeLast() }
        guard bytes.count >= DeploymentToken.minimumLength else {
            throw GedsError(.invalidArgument, "the token in \(source) has \(bytes.count) bytes; at least "
                            + "\(DeploymentToken.minimumLength) are needed (head -c 32 /dev/urandom | base64 > FILE)")
        }
        self.secret = bytes
    }

    /// Reads the token file at `path`.
    public static func load(path: String) throws(GedsError) -> DeploymentToken {
        let contents = try readSmallFile(path, limit: 1 << 16, cannotOpen: "cannot read the token file \(path)",
                                         cannotRead: "cannot read the token file \(path)")
        guard contents.count <= 1 << 16 else {
            throw GedsError(.invalidArgument, "the token file \(path) is larger than 64 KiB: is it the right file?")
        }
        return try DeploymentToken(secret: contents, source: path)
    }

    /// The token of `tokenFile` (an option's value) if given, else of `$GEDS_TOKEN_FILE` if set, else none.
    public static func resolve(tokenFile: String?) throws(GedsError) -> DeploymentToken? {
        if let tokenFile { return try load(path: tokenFile) }
        guard let variable = getenv(environmentVariable), variable.pointee != 0 else { return nil }
        return try load(path: String(cString: variable))
    }

    /// What `gedsd` and `geds-mds` say once at start without a token.
    public static let openDeploymentNotice = "no token (--token-file, \(environmentVariable)): the deployment is open; "
        + "anyone who reaches its ports may read, write and delete every object"

    /// The option's help, the same in every tool that takes it.
    public static let optionHelp = "File holding the deployment's secret token (default: $GEDS_TOKEN_FILE); every connection "
        + "proves it knows it. Without one the deployment is open."

    /// Whose proof: the two sides' proofs differ, so that one side's answer is never a valid answer of the other.
    enum Role: String {
        case client = "geds-auth-client"
        case server = "geds-auth-server"
    }

    func proof(_ role: Role, clientNonce: [UInt8], serverNonce: [UInt8]) -> [UInt8] {
        var mac = HMAC<SHA256>(key: SymmetricKey(data: secret))
        mac.update(data: Array(role.rawValue.utf8))
        mac.update(data: clientNonce)
        mac.update(data: serverNonce)
        return Array(mac.finalize())
    }

    /// Compared in constant time.
    func accepts(_ proof: [UInt8], of role: Role, clientNonce: [UInt8], serverNonce: [UInt8]) -> Bool {
        var message = Array(role.rawValue.utf8)
        message += clientNonce
        message += serverNonce
        return HMAC<SHA256>.isValidAuthenticationCode(proof, authenticating: message, using: SymmetricKey(data: secret))
    }

    static func freshNonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()  // getrandom(2)
        return (0..<HandshakeSizes.nonce).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }
}

/// The client's side of the handshake, for a carrier to drive: send `hello`; answer its reply with
/// `proof(answering:)`; check the reply to that with `finish`. `peer` names the server in errors ("MDS 10.0.0.1:4381").
///
///     client -> authenticate(Nc)          server -> challenge(Ns, HMAC(token, server | Nc | Ns))
///     client -> prove(HMAC(token, client | Nc | Ns))                         server -> ok | failure, close
public struct ClientHandshake: Sendable {
    private let token: DeploymentToken
    private let peer: String
    private let clientNonce = DeploymentToken.freshNonce()
    private var serverProof: (nonce: [UInt8], proof: [UInt8])?

    public init(token: DeploymentToken, peer: String) {
        self.token = token
        self.peer = peer
    }

    public var hello: Request { .authenticate(clientNonce: clientNonce) }

    /// The proof answering the server's challenge. The client proves itself even before it checks the server's
    /// proof, so that a server with another token hears of it (and counts it) too.
    public mutating func proof(answering reply: Reply) throws(GedsError) -> Request {
        switch reply {
        case .challenge(let serverNonce, let proof):
            serverProof = (serverNonce, proof)
            return .prove(proof: token.proof(.client, clientNonce: clientNonce, serverNonce: serverNonce))
        case .failure(let error) where error.code == .authenticationFailed:
            throw error
        case .failure(let error) where error.code == .protocolViolation:
            throw GedsError(.authenticationFailed, "authentication failed: \(peer) does not take tokens (\(error.message))")
        default:
            throw GedsError(.authenticationFailed, "authentication failed: \(peer) answered the handshake with \(reply)")
        }
    }

    /// Accepts the server's answer to the proof, and then its own proof.
    public func finish(_ reply: Reply) throws(GedsError) {
        switch reply {
        case .ok:
            guard let (serverNonce, proof) = serverProof,
                  token.accepts(proof, of: .server, clientNonce: clientNonce, serverNonce: serverNonce) else {
                throw GedsError(.authenticationFailed, "authentication failed: \(peer) could not prove that it knows the token")
            }
        case .failure(let error) where error.code == .authenticationFailed:
            throw GedsError(.authenticationFailed, "authentication failed: \(peer) rejected the token")
        case .failure(let error):
            throw error
        default:
            throw GedsError(.authenticationFailed, "authentication failed: \(peer) answered the proof with \(reply)")
        }
    }

    /// The whole handshake over a blocking exchange (sends one request, returns its reply).
    public static func run(token: DeploymentToken, peer: String,
                           exchange: (Request) throws(GedsError) -> Reply) throws(GedsError) {
        var handshake = ClientHandshake(token: token, peer: peer)
        let proof = try handshake.proof(answering: try exchange(handshake.hello))
        try handshake.finish(try exchange(proof))
    }

    /// The whole handshake over an asynchronous exchange.
    public static func run(token: DeploymentToken, peer: String,
                           exchange: (Request) async throws(GedsError) -> Reply) async throws(GedsError) {
        var handshake = ClientHandshake(token: token, peer: peer)
        let proof = try handshake.proof(answering: try await exchange(handshake.hello))
        try handshake.finish(try await exchange(proof))
    }
}

/// What a server needs to check its connections: the token (none: an open deployment), what the server is called
/// in messages ("MDS", "gedsd NAME"; its address is added per connection) and where refusals are logged.
public struct ServerAuthentication: Sendable {
    public let token: DeploymentToken?
    public let role: String
    public let logger: Logger

    public init(token: DeploymentToken?, role: String, logger: Logger) {
        self.token = token
        self.role = role
        self.logger = logger
    }
}

/// One connection's admission on the server's side: with a token, nothing but the handshake is served until the
/// peer proved it knows the token; a server without one serves everything as before and refuses the handshake.
/// Each connection has a gate of its own (its nonce is fresh), so a recorded exchange never opens another one.
public struct AuthenticationGate {
    public enum Verdict {
        /// Hand the request to the service.
        case serve
        /// A step of the handshake: send this reply, keep the connection.
        case answer(Reply)
        /// Send this failure, then close the connection (logged and counted already).
        case refuse(GedsError)
    }

    private enum State {
        case awaitingHello(DeploymentToken)
        case awaitingProof(DeploymentToken, clientNonce: [UInt8], serverNonce: [UInt8])
        case admitted
    }

    private let authentication: ServerAuthentication?
    /// The server as its clients know it: role and the address they reached ("MDS 10.0.0.1:4381").
    private let server: String
    private var state: State

    public init(_ authentication: ServerAuthentication?, address: String) {
        self.authentication = authentication
        server = "\(authentication?.role ?? "server") \(address)"
        state = authentication?.token.map { .awaitingHello($0) } ?? .admitted
    }

    /// Whether requests are served (a server without a token admits every connection at once).
    public var isAdmitted: Bool {
        if case .admitted = state { return true }
        return false
    }

    /// What to do with the next request from `peer` (its address, for the log).
    public mutating func admit(_ request: Request, from peer: @autoclosure () -> String) -> Verdict {
        switch request {
        case .authenticate(let clientNonce):
            guard case .awaitingHello(let token) = state else { return refuseHandshake(peer()) }
            let serverNonce = DeploymentToken.freshNonce()
            state = .awaitingProof(token, clientNonce: clientNonce, serverNonce: serverNonce)
            return .answer(.challenge(serverNonce: serverNonce,
                                      proof: token.proof(.server, clientNonce: clientNonce, serverNonce: serverNonce)))
        case .prove(let proof):
            guard case .awaitingProof(let token, let clientNonce, let serverNonce) = state else { return refuseHandshake(peer()) }
            guard token.accepts(proof, of: .client, clientNonce: clientNonce, serverNonce: serverNonce) else {
                return refuse("authentication failed: \(server) rejected the token", peer())
            }
            state = .admitted
            return .answer(.ok)
        default:
            return admitOther(from: peer())
        }
    }

    /// What to do with a request outside the handshake's vocabulary (the local socket's own requests).
    public func admitOther(from peer: @autoclosure () -> String) -> Verdict {
        switch state {
        case .admitted:
            return .serve
        case .awaitingHello:
            return refuse("authentication failed: \(server) requires a token (--token-file FILE or \(DeploymentToken.environmentVariable))",
                          peer())
        case .awaitingProof:
            return refuse("authentication failed: \(server) expected the proof of the token", peer())
        }
    }

    /// A handshake step out of turn: on an open server, or once admitted, or a proof before the challenge.
    private func refuseHandshake(_ peer: String) -> Verdict {
        switch state {
        case .admitted where authentication?.token == nil:
            return refuse("authentication failed: \(server) has no token (an open deployment); start it with "
                          + "--token-file or give the client none", peer)
        case .admitted:
            return refuse("authentication failed: \(server): this connection is authenticated already", peer)
        case .awaitingHello, .awaitingProof:
            return refuse("authentication failed: \(server) expected the handshake's next step", peer)
        }
    }

    private func refuse(_ message: String, _ peer: String) -> Verdict {
        let count = AuthenticationFailures.count()
        authentication?.logger.warning("\(message) (peer \(peer); authentication failures so far: \(count))")
        return .refuse(GedsError(.authenticationFailed, message))
    }
}

/// Refused handshakes of this process (`geds_authentication_failures_total`), also said in each refusal's log line.
public enum AuthenticationFailures {
    private static let total = Atomic<Int>(0)

    /// Makes the counter, so that `/metrics` shows it at 0 before the first failure. Call after the metrics backend
    /// is in place (a server with a token does at start).
    public static func register() { _ = counter }

    private static let counter = Counter(label: "geds_authentication_failures_total")

    static func count() -> Int {
        counter.increment()
        return total.add(1, ordering: .relaxed).newValue
    }
}
