import GedsCore
import GedsWire
import Logging
import Synchronization

/// The drain of this node (`geds drain NODE`, learnt from the MDS with a heartbeat): every copy it holds, in tier 0
/// and tier 1, handed to the other live gedsd nodes; once none is left `waitUntilDone` returns (the gedsd then
/// leaves the MDS and exits). A drain that cannot finish tells the MDS why, and the node keeps serving what it holds.
final class Drain: Sendable {
    private struct State {
        var running = false
        var finished = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let tiers: TierManager
    private let writePath: WritePath
    private let mds: MDSClient
    private let session: MDSSession
    private let nodeName: String
    private let logger: Logger
    private let state = Mutex(State())

    init(tiers: TierManager, writePath: WritePath, mds: MDSClient, session: MDSSession, nodeName: String, logger: Logger) {
        self.tiers = tiers
        self.writePath = writePath
        self.mds = mds
        self.session = session
        self.nodeName = nodeName
        self.logger = logger
    }

    /// Starts the drain unless it runs or finished already (the MDS asks again with every heartbeat).
    func start() {
        let begins = state.withLock { state in
            guard !state.running, !state.finished else { return false }
            state.running = true
            return true
        }
        guard begins else { return }
        Task { [self] in
            do throws(GedsError) {
                let moved = try await moveEverything()
                logger.notice("drained: moved \(moved) object(s) to other nodes")
                state.withLock { $0.finished = true }
                wakeWaiters()
            } catch {
                logger.warning("drain stopped: \(error.message); serving on")
                state.withLock { $0.running = false }
                try? await mds.expectOK(.drainFailed(node: session.index, reason: error.message))
            }
        }
    }

    /// Returns when the drain finished, or early when the waiting task is cancelled.
    func waitUntilDone() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let done = state.withLock { state in
                    if !state.finished, !Task.isCancelled { state.waiters.append(continuation) }
                    return state.finished || Task.isCancelled
                }
                if done { continuation.resume() }
            }
        } onCancel: {
            wakeWaiters()
        }
    }

    private func wakeWaiters() {
        for waiter in state.withLock({ state in defer { state.waiters = [] }; return state.waiters }) { waiter.resume() }
    }

    /// Moves copies until none is left (objects sealed here meanwhile included); the number moved.
    private func moveEverything() async throws(GedsError) -> Int {
        var moved = 0
        while true {
            var held = tiers.tier0.inventory
            for object in tiers.tier1?.objects ?? [] where held[object.blob] == nil { held[object.blob] = object.size }
            if held.isEmpty { return moved }
            var targets = try await liveTargets()
            var stuck: [(size: UInt64, error: GedsError)] = []
            // Largest first, each to the target holding the fewest bytes, so the copies spread evenly.
            for (blob, size) in held.sorted(by: { $0.value > $1.value }) {
                do throws(GedsError) {
                    let taker = try await handOff(blob, size: size, to: targets)
                    targets[taker].bytes += size
                    targets.sort { $0.bytes < $1.bytes }
                    moved += 1
                } catch {
                    stuck.append((size, error))
                }
            }
            if let last = stuck.last {
                let bytes = stuck.reduce(UInt64(0)) { $0 + $1.size }
                throw GedsError(last.error.code, "\(stuck.count) object(s) (\(bytes) bytes) could not be moved: \(last.error.message)")
            }
        }
    }

    /// Live gedsd nodes other than this one that are not draining, fewest bytes first.
    private func liveTargets() async throws(GedsError) -> [NodeInfo] {
        let targets = try await mds.nodes().copyTargets(besides: nodeName).filter { $0.role == .daemon }
        guard !targets.isEmpty else { throw GedsError(.noSuchNode, "no other live gedsd can take the objects of \(nodeName)") }
        return targets
    }

    /// Has the first target that can take the blob pull it (tier 1 promoted first), then withdraws and deletes our
    /// copies; the index of the target that took it.
    private func handOff(_ blob: BlobID, size: UInt64, to targets: [NodeInfo]) async throws(GedsError) -> Int {
        if tiers.holdsInTier1(blob) { try await tiers.promote(blob) }
        tiers.pin(blob)  // not spilled while a target reads it
        defer { tiers.unpin(blob) }
        var last = GedsError(.noSuchNode, "no target for blob \(blob.fileName)")
        for (index, target) in targets.enumerated() {
            do throws(GedsError) {
                try await writePath.askToPull(blob, size: size, from: tiers.ownLocation(of: blob), to: target)
                try? await mds.expectOK(.removeLocation(blob: blob, node: session.index))
                await tiers.dropLocalCopies(of: blob)
                return index
            } catch where error.code == .noSuchBlob {
                await tiers.dropLocalCopies(of: blob)  // deleted meanwhile: nothing to keep
                return index
            } catch {
                last = error
            }
        }
        throw last
    }
}
