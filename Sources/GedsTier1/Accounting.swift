import GedsCore

/// What the store holds and how much of its capacity that takes: every object and every write in progress,
/// counted in whole blocks.
extension Tier1Store {
    public func object(_ blob: BlobID) -> Tier1Object? {
        state.withLock { if case .stored(let object) = $0.objects[blob] { object } else { nil } }
    }

    public var objects: [Tier1Object] {
        state.withLock { $0.objects.values.compactMap { if case .stored(let object) = $0 { object } else { nil } } }
    }

    public var usage: Tier1Usage {
        state.withLock { state in
            var count = 0
            var bytes: UInt64 = 0
            for entry in state.objects.values {
                if case .stored(let object) = entry {
                    count += 1
                    bytes += object.size
                }
            }
            return Tier1Usage(objects: count, bytes: bytes, reserved: state.reserved, capacity: capacity)
        }
    }

    /// What an object of `size` bytes counts against the capacity.
    public func allocation(forSize size: UInt64) -> UInt64 { roundUp(size) }

    func roundUp(_ size: UInt64) -> UInt64 {
        (size + UInt64(blockSize) - 1) / UInt64(blockSize) * UInt64(blockSize)
    }

    func reserve(_ blob: BlobID, size: UInt64) throws(GedsError) -> UInt64 {
        let allocated = roundUp(size)
        let refusal: GedsError? = state.withLock { state in
            if state.stopped { return GedsError(.io, "tier 1 in \(directory) is shut down") }
            if state.objects[blob] != nil {
                return GedsError(.invalidArgument, "blob \(blob.fileName) is already in tier 1")
            }
            guard state.reserved + allocated <= capacity else {
                return GedsError(.outOfSpace,
                                 "tier 1 full: blob \(blob.fileName) needs \(allocated) bytes, \(state.reserved) of \(capacity) are in use in \(directory)")
            }
            state.reserved += allocated
            state.objects[blob] = .writing(allocated: allocated)
            return nil
        }
        if let refusal { throw refusal }
        return allocated
    }

    func release(_ blob: BlobID, allocated: UInt64) {
        state.withLock { state in
            if case .writing = state.objects[blob] { state.objects[blob] = nil }
            state.reserved -= allocated
        }
    }
}
