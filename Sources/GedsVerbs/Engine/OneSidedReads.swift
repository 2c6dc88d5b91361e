import CVerbs

/// One RDMA READ request of a caller, split into chunks. Poll-thread only.
final class ReadOperation {
    let remoteAddress: UInt64
    let rkey: UInt32
    let length: UInt64
    let region: MemoryRegion
    let localOffset: Int
    let chunkSize: UInt64
    let progressTimeout: UInt64
    /// When the operation was submitted; with the link's last progress, it dates the progress deadline.
    let submitted: UInt64
    var posted: UInt64 = 0
    var completed: UInt64 = 0
    var outstanding = 0
    var error: RDMAError?
    let reply: Reply<Void>
    let what: String

    init(remoteAddress: UInt64, rkey: UInt32, length: UInt64, region: MemoryRegion, localOffset: Int,
         chunkSize: UInt64, progressTimeout: UInt64, reply: Reply<Void>, what: String) {
        self.remoteAddress = remoteAddress
        self.rkey = rkey
        self.length = length
        self.region = region
        self.localOffset = localOffset
        self.chunkSize = chunkSize
        self.progressTimeout = progressTimeout
        submitted = Clock.now()
        self.reply = reply
        self.what = what
    }

    var fullyPosted: Bool { posted == length }

    /// Fails when neither this operation nor anything else on its link progressed for `progressTimeout`
    /// (operations queued behind others on a busy link are not penalized for waiting their turn).
    func deadline(lastProgress: UInt64) -> UInt64 {
        let (sum, overflow) = max(submitted, lastProgress).addingReportingOverflow(progressTimeout)
        return overflow ? UInt64.max : sum
    }
}

extension EngineLoop {
    /// Posts READ chunks while the send queue has room, in request order, in chained batches.
    func postReads(_ link: Link) {
        while postReadBatch(link) == sendBatchCapacity {}
    }

    /// Posts up to one batch of READ chunks with one `ibv_post_send`; returns how many.
    private func postReadBatch(_ link: Link) -> Int {
        guard link.state == .established, let qp = link.id.pointee.qp else { return 0 }
        var count = 0
        var ids: [UInt64] = []
        while link.sendFree - count > 0, count < sendBatchCapacity, let operation = link.readQueue.first {
            if operation.error != nil || operation.fullyPosted {
                link.readQueue.removeFirst()
                continue
            }
            let length = min(operation.chunkSize, operation.length - operation.posted)
            let workID = nextWorkID
            nextWorkID += 1
            sgeBatch[count] = ibv_sge(addr: operation.region.localAddress(at: operation.localOffset + Int(operation.posted)),
                                      length: UInt32(length), lkey: operation.region.lkey)
            var request = ibv_send_wr()
            request.wr_id = workID
            request.sg_list = sgeBatch + count
            request.num_sge = 1
            request.opcode = IBV_WR_RDMA_READ
            request.send_flags = IBV_SEND_SIGNALED.rawValue
            request.wr.rdma.remote_addr = operation.remoteAddress + operation.posted
            request.wr.rdma.rkey = operation.rkey
            sendBatch[count] = request
            if count > 0 { sendBatch[count - 1].next = sendBatch + count }
            inflight[workID] = .read(link, operation, UInt32(length))
            ids.append(workID)
            operation.posted += length
            operation.outstanding += 1
            count += 1
            if operation.fullyPosted { link.readQueue.removeFirst() }
        }
        guard count > 0 else { return 0 }
        var bad: UnsafeMutablePointer<ibv_send_wr>?
        let status = ibv_post_send(qp, sendBatch, &bad)
        if status == 0 {
            link.sendFree -= count
            link.outstanding += count
            readChunksInFlight += count
            return count
        }
        // Everything from `bad` on was not posted: take those back, then fail the link.
        let firstBad = bad.map { $0 - sendBatch } ?? 0
        link.sendFree -= firstBad
        link.outstanding += firstBad
        readChunksInFlight += firstBad
        for index in firstBad..<count {
            if case .read(_, let operation, let length) = inflight.removeValue(forKey: ids[index]) {
                operation.outstanding -= 1
                operation.posted -= UInt64(length)
            }
        }
        fail(link, RDMAError.system("ibv_post_send (RDMA READ) to \(link.peer)", errno: status))
        return 0
    }

    func finishIfDone(_ operation: ReadOperation, link: Link) {
        guard operation.outstanding == 0, operation.reply.isPending else { return }
        if let error = operation.error {
            link.activeReads[ObjectIdentifier(operation)] = nil
            operation.reply(.failure(error))
        } else if operation.completed == operation.length {
            link.activeReads[ObjectIdentifier(operation)] = nil
            operation.reply(.success(()))
        }
    }
}
