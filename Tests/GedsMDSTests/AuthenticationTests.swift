import GedsCarrier
import GedsCore
import GedsMDS
import GedsTCP
import GedsTestSupport
import GedsWire
import Logging
import NIOPosix
import Testing

/// The deployment token's handshake: the gate on its own (right, wrong, missing, replayed), then an MDS over TCP.
@Suite struct AuthenticationTests {
    static let token = try! DeploymentToken(secret: Array("a token of the deployment, long enough\n".utf8), source: "test")
    static let other = try! DeploymentToken(secret: Array("another deployment's token entirely".utf8), source: "test")
    static let quiet = Logger(label: "auth-test", factory: { _ in SwiftLogNoOpLogHandler() })

    static func gate(_ token: DeploymentToken?) -> AuthenticationGate {
        AuthenticationGate(ServerAuthentication(token: token, role: "MDS", logger: quiet), address: "10.0.0.1:4381")
    }

    /// The handshake against `gate`, recording what the client sent; the last verdict is returned.
    static func handshake(_ gate: inout AuthenticationGate, with token: DeploymentToken, sent: inout [Request])
        throws -> AuthenticationGate.Verdict {
        var client = ClientHandshake(token: token, peer: "MDS 10.0.0.1:4381")
        sent.append(client.hello)
        guard case .answer(let challenge) = gate.admit(client.hello, from: "test") else {
            Issue.record("no challenge")
            return .serve
        }
        let proof = try client.proof(answering: challenge)
        sent.append(proof)
        let verdict = gate.admit(proof, from: "test")
        if case .answer(let reply) = verdict { try client.finish(reply) }
        return verdict
    }

    @Test func theRightTokenAdmitsAndARecordedExchangeDoesNotOpenAnotherConnection() throws {
        var gate = Self.gate(Self.token)
        var sent: [Request] = []
        guard case .answer(.ok) = try Self.handshake(&gate, with: Self.token, sent: &sent) else {
            Issue.record("the right token was not admitted")
            return
        }
        #expect(gate.isAdmitted)
        guard case .serve = gate.admit(.listBuckets, from: "test") else { Issue.record("not served"); return }

        var replayed = Self.gate(Self.token)
        guard case .answer(.challenge(let nonce, _)) = replayed.admit(sent[0], from: "replay") else {
            Issue.record("no challenge")
            return
        }
        guard case .refuse(let error) = replayed.admit(sent[1], from: "replay") else {
            Issue.record("a replayed proof was admitted")
            return
        }
        #expect(error.code == .authenticationFailed)
        #expect(error.message == "authentication failed: MDS 10.0.0.1:4381 rejected the token")
        #expect(nonce.count == HandshakeSizes.nonce)
        #expect(!replayed.isAdmitted)
    }

    @Test func aWrongTokenIsRefusedAndTheClientSaysWhoRefused() throws {
        var gate = Self.gate(Self.token)
        var client = ClientHandshake(token: Self.other, peer: "MDS 10.0.0.1:4381")
        guard case .answer(let challenge) = gate.admit(client.hello, from: "test") else { Issue.record("no challenge"); return }
        guard case .refuse(let refusal) = gate.admit(try client.proof(answering: challenge), from: "test") else {
            Issue.record("a wrong token was admitted")
            return
        }
        do {
            try client.finish(.failure(refusal))
            Issue.record("the client accepted a refusal")
        } catch {
            #expect(error.message == "authentication failed: MDS 10.0.0.1:4381 rejected the token")
        }
    }

    @Test func requestsBeforeTheProofAreRefused() {
        var gate = Self.gate(Self.token)
        guard case .refuse(let error) = gate.admit(.listBuckets, from: "test") else { Issue.record("served"); return }
        #expect(error.message.contains("requires a token"))
        var halfway = Self.gate(Self.token)
        _ = halfway.admit(.authenticate(clientNonce: [UInt8](repeating: 1, count: 32)), from: "test")
        guard case .refuse = halfway.admit(.listBuckets, from: "test") else { Issue.record("served before the proof"); return }
    }

    @Test func anOpenServerServesAllButRefusesAHandshake() {
        var gate = Self.gate(nil)
        #expect(gate.isAdmitted)
        guard case .serve = gate.admit(.listBuckets, from: "test") else { Issue.record("not served"); return }
        guard case .refuse(let error) = gate.admit(.authenticate(clientNonce: [UInt8](repeating: 0, count: 32)), from: "test") else {
            Issue.record("an open server took a handshake")
            return
        }
        #expect(error.message.contains("has no token"))
    }

    @Test func aServerThatCannotProveTheTokenIsNotTrusted() throws {
        var client = ClientHandshake(token: Self.token, peer: "MDS 10.0.0.1:4381")
        _ = try client.proof(answering: .challenge(serverNonce: [UInt8](repeating: 7, count: 32),
                                                   proof: [UInt8](repeating: 0, count: 32)))
        #expect(throws: GedsError.self) { try client.finish(.ok) }
    }

    @Test func overTCP() async throws {
        let server = try await MetadataServer.start(listen: Endpoint(host: "127.0.0.1", port: 0), token: Self.token,
                                                    logger: Self.quiet)
        let group = MultiThreadedEventLoopGroup.singleton
        let peer = "MDS \(server.localAddress)"

        let admitted = try await Connection.connect(to: server.localAddress, peerName: "MDS", group: group, token: Self.token)
        #expect(try await admitted.call(.createBucket("secured"), timeout: .seconds(5)) == .ok)
        #expect(try await admitted.call(.listBuckets, timeout: .seconds(5)) == .buckets(["secured"]))
        admitted.close()

        do {
            _ = try await Connection.connect(to: server.localAddress, peerName: "MDS", group: group, token: Self.other)
            Issue.record("a wrong token connected")
        } catch {
            #expect(error.code == .authenticationFailed)
            #expect(error.message == "authentication failed: \(peer) rejected the token")
        }

        let anonymous = try await Connection.connect(to: server.localAddress, peerName: "MDS", group: group)
        guard case .failure(let refusal) = try await anonymous.call(.listBuckets, timeout: .seconds(5)) else {
            Issue.record("served without a token")
            return
        }
        #expect(refusal.code == .authenticationFailed)
        #expect(refusal.message.contains("requires a token"))
        anonymous.close()
        await server.close()
    }
}
