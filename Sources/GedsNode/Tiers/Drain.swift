import GedsCore
import GedsWire
import Synchronization

/// Where a node's drain stands (`geds drain NODE`, learnt from the MDS with a heartbeat).
final class DrainState: Sendable {
    private struct State {
        var running = false
        var finished = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    /// True for the one caller that should start the drain.
    func begin() -> Bool {
        state.withLock { state in
            guard !state.running, !state.finished else { return false }
            state.running = true
            return true
        }
    }

    /// The drain stopped short: a later request may start it again.
    func gaveUp() {
        state.withLock { $0.running = false }
    }

    func finish() {
        state.withLock { $0.finished = true }
        wakeWaiters()
    }

    private func wakeWaiters() {
        for waiter in state.withLock({ state in defer { state.waiters = [] }; return state.waiters }) { waiter.resume() }
    }

    /// Returns when the drain finished, or early when the waiting task is cancelled.
    func wait() async {
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
}

extension Node {
    /// Starts moving every copy this node holds (tier 0 and tier 1) to other live gedsd nodes; once none is left
    /// `waitUntilDrained` returns (the gedsd then leaves the MDS and exits). A drain that cannot finish tells the
    /// MDS why and the node keeps serving what it still holds.
    func startDrain() {
        guard drainState.begin() else { return }
        Task { [self] in
            do throws(GedsError) {
                let moved = try await drainCopies()
                logger.notice("drained: moved \(moved) object(s) to other nodes")
                drainState.finish()
            } catch {
                logger.warning("drain stopped: \(error.message); serving on")
                drainState.gaveUp()
                try? await mds.expectOK(.drainFailed(node: index, reason: error.message))
            }
        }
    }

    /// Returns once a drain moved everything away (or the waiting task is cancelled).
    public func waitUntilDrained() async {
        await drainState.wait()
    }

    /// Moves copies until none is left (objects sealed here meanwhile included); the number moved.
    private func drainCopies() async throws(GedsError) -> Int {
        var moved = 0
        while true {
            var held = tier0.inventory
            for object in tier1?.objects ?? [] where held[object.blob] == nil { held[object.blob] = object.size }
            if held.isEmpty { return moved }
            var targets = try await drainTargets()
            var stuck: [(blob: BlobID, size: UInt64, error: GedsError)] = []
            // Largest first, each to the target holding the fewest bytes, so the copies spread evenly.
            for (blob, size) in held.sorted(by: { $0.value > $1.value }) {
                do throws(GedsError) {
                    let target = try await moveAway(blob, size: size, targets: targets)
                    if let slot = targets.firstIndex(where: { $0.name == target.name }) { targets[slot].bytes += size }
                    targets.sort { $0.bytes < $1.bytes }
                    moved += 1
                } catch {
                    stuck.append((blob, size, error))
                }
            }
            if let last = stuck.last {
                let bytes = stuck.reduce(UInt64(0)) { $0 + $1.size }
                throw GedsError(last.error.code, "\(stuck.count) object(s) (\(bytes) bytes) could not be moved: \(last.error.message)")
            }
        }
    }

    /// Live gedsd nodes other than this one that are not draining, fewest bytes first.
    private func drainTargets() async throws(GedsError) -> [NodeInfo] {
        let targets = try await mds.nodes()
            .filter { $0.alive && $0.role == .daemon && !$0.draining && $0.name != configuration.name }
            .sorted { $0.bytes < $1.bytes }
        guard !targets.isEmpty else {
            throw GedsError(.noSuchNode, "no other live gedsd can take the objects of \(configuration.name)")
        }
        return targets
    }

    /// Has the first target that can take the blob pull it, then withdraws and deletes this node's copies.
    private func moveAway(_ blob: BlobID, size: UInt64, targets: [NodeInfo]) async throws(GedsError) -> NodeInfo {
        if holdsInTier1(blob) { try await promote(blob) }  // the target takes it from our tier 0
        pin(blob)  // not spilled while a target reads it
        defer { unpin(blob) }
        var last: GedsError?
        for target in targets {
            do throws(GedsError) {
                try await askToPull(blob, size: size, from: ownLocation(of: blob), to: target)
                try? await mds.expectOK(.removeLocation(blob: blob, node: index))
                await dropLocalCopies(of: blob)
                return target
            } catch where error.code == .noSuchBlob {
                await dropLocalCopies(of: blob)  // deleted meanwhile: nothing to keep
                return target
            } catch {
                last = error
            }
        }
        throw last ?? GedsError(.noSuchNode, "no target for blob \(blob.fileName)")
    }
}
