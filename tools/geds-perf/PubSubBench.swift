import Foundation
#if canImport(Glibc)
import Glibc
#endif
@_spi(Benchmarks) import GEDS
import GedsCore
import GedsMDS
import GedsNode
import GedsTCP
import GedsWire
import NIOCore
import Synchronization

/// The pubsub workload: seal-to-event latency beside Redis PUBLISH-to-subscriber latency (through the library, and of
/// the MDS alone driven from one thread on blocking sockets as the reference is), the same for a seal on
/// another node (host) after an idle pause, `wait` wake-up after such a seal, events delivered per second to 100 subscribers while 16 writers seal 4 KiB objects,
/// and MDS lookups per second with those subscriptions open versus without.
extension Bench {
    func pubsub(clients: Int) async throws -> [Measurement] {
        var results: [Measurement] = []
        let redis = References.redisPubSubLatency(samples: 5000)
        let reference = Reference("redis PUBLISH to a subscribed client p50", redis)

        // Seal-to-event: one subscriber, objects of 4 KiB sealed by this node, the event awaited on its own connection.
        progress("pubsub: seal-to-event latency, 2000 seals after 200 warm-up")
        let payload = [UInt8](repeating: 0x5A, count: 4096)
        let subscription = try await geds.subscribe(.prefix("ps-lat/", in: bucket))
        var sample = 0
        let sealToEvent = try await Bench.timedFrom(warmups: 200, samples: 2000) { () async throws -> (UInt64, UInt64) in
            sample += 1
            let key = "ps-lat/\(sample)"
            let writer = try await geds.create(bucket: bucket, key: key)
            try writer.write(payload, at: 0)
            let start = DispatchTime.now().uptimeNanoseconds
            async let sealed: Void = writer.seal()
            guard let event = try await subscription.next(timeout: .seconds(10)), event.key == key else {
                throw GedsError(.internal, "no event for \(key)")
            }
            let end = DispatchTime.now().uptimeNanoseconds
            try await sealed
            return (start, end)
        }
        subscription.cancel()
        results.append(.latency(.pubsub, transport: .tcp, size: 4096, microseconds: sealToEvent.map { $0 * 1e6 }, reference: reference,
                                note: "seal (4 KiB object) to its event at a subscriber of the prefix, one subscriber"))
        results.append(.latency(.pubsub, transport: .tcp, size: 4096, microseconds: try await sealToBlockedReader(payload: payload),
                                reference: reference,
                                note: "the same, the event taken by a thread blocked in nextBlocking (as C's geds_next_event and Python)"))
        if try DeploymentToken.resolve(tokenFile: nil) == nil {
            progress("pubsub: seal-to-event latency from one thread on two blocking sockets, 5000 seals after 500 warm-up")
            let seconds = try Bench.sealToEventOnOneThread(mds: geds.nodeConfiguration!.mds, node: geds.nodeIndex, bucket: bucket,
                                                           payload: payload, warmups: 500, samples: 5000)
            results.append(.latency(.pubsub, transport: .tcp, size: 4096, microseconds: seconds.map { $0 * 1e6 }, reference: reference,
                                    note: "the MDS alone, driven as redis's reference: one thread, a subscribed socket and a sealing "
                                        + "one (sealNewObject with the 4 KiB inline), seal sent to event frame read"))
        }

        // wait() on this node, seal by a second node of another host.
        progress("pubsub: wait wake-up after a seal on another node, 300 samples")
        let writerNode = try await GEDS.connect(NodeConfiguration(
            mds: geds.nodeConfiguration!.mds, tier0Directory: geds.nodeConfiguration!.tier0Directory + "-pubsub-writer",
            name: "perf-pubsub-writer-\(getpid())", hostID: "perf-pubsub-writer-host", publishCachedCopies: false, transport: .tcp))
        var wakeUps: [Double] = []
        var crossNode: [Double] = []
        do {
            // The event of a seal on the other node after the same idle pause, awaited in a task.
            let events = try await geds.subscribe(.prefix("ps-cross/", in: bucket))
            defer { events.cancel() }
            for index in 0..<330 {
                let waiter = Task { () async throws -> UInt64 in
                    _ = try await events.next(timeout: .seconds(10))
                    return DispatchTime.now().uptimeNanoseconds
                }
                let writer = try await writerNode.create(bucket: bucket, key: "ps-cross/\(index)")
                try writer.write(payload, at: 0)
                try await Task.sleep(for: .milliseconds(15))  // as below: every thread idle when the seal starts
                let start = DispatchTime.now().uptimeNanoseconds
                try await writer.seal()
                let woke = try await waiter.value
                if index >= 30 { crossNode.append(Double(woke - start) / 1e3) }
            }
            for index in 0..<330 {
                let key = "ps-wait/\(index)"
                let bucket = self.bucket
                let geds = self.geds
                let waiter = Task { () async throws -> UInt64 in
                    _ = try await geds.wait(bucket: bucket, key: key, timeout: .seconds(10))
                    return DispatchTime.now().uptimeNanoseconds
                }
                let writer = try await writerNode.create(bucket: bucket, key: key)
                try writer.write(payload, at: 0)
                try await Task.sleep(for: .milliseconds(15))  // the waiter has subscribed and looked by now
                let start = DispatchTime.now().uptimeNanoseconds
                try await writer.seal()
                let woke = try await waiter.value
                if index >= 30 { wakeUps.append(Double(woke - start) / 1e3) }
            }
        } catch {
            await writerNode.close()
            throw error
        }
        await writerNode.close()
        results.append(.latency(.pubsub, transport: .tcp, size: 4096, microseconds: crossNode, reference: reference,
                                note: "seal on another node (host) to its event at a subscriber here, threads idle before"))
        results.append(.latency(.pubsub, transport: .tcp, size: 4096, microseconds: wakeUps, reference: reference,
                                note: "wait() wake-up: seal on another node (host) to wait returning here (a call held at the MDS, answered by the seal)"))

        results += try await pubsubThroughput(clients: clients)
        _ = try await geds.delete(bucket: bucket, prefix: "ps-")
        return results
    }

    /// Seal-to-event latencies (µs) with the subscriber a thread of its own blocked in `nextBlocking`: it notes when
    /// each event woke it and hands the time to the sealing task, which seals the next object only after that.
    private func sealToBlockedReader(payload: [UInt8], warmups: Int = 200, samples: Int = 2000) async throws -> [Double] {
        progress("pubsub: seal-to-event latency, reader blocked on a thread, \(samples) seals after \(warmups) warm-up")
        let subscription = try await geds.subscribe(.prefix("ps-blocked/", in: bucket))
        defer { subscription.cancel() }
        let wakeUps = WakeUpTimes()
        let thread = Thread {
            while true {
                do {
                    let event = try subscription.nextBlocking(timeout: .seconds(10))
                    wakeUps.post(event == nil ? .failure(GedsError(.timedOut, "no event within 10 s")) : .success(DispatchTime.now().uptimeNanoseconds))
                    if event == nil { return }
                } catch {
                    wakeUps.post(.failure(error))
                    return
                }
            }
        }
        thread.start()
        var latencies: [Double] = []
        for sample in 0..<(warmups + samples) {
            let writer = try await geds.create(bucket: bucket, key: "ps-blocked/\(sample)")
            try writer.write(payload, at: 0)
            let start = DispatchTime.now().uptimeNanoseconds
            async let sealed: Void = writer.seal()
            let end = try await wakeUps.next()
            try await sealed
            if sample >= warmups { latencies.append(Double(end - start) / 1e3) }
        }
        return latencies
    }

    /// Seal-to-event times (s) measured as redis's reference is: this one thread, two plain blocking sockets to the
    /// MDS (an open deployment's), one subscribed to a prefix, the other sealing a new object there per sample
    /// (`sealNewObject` under ids reserved once, as a node seals a small object), from the seal sent to its event's
    /// frame read on the subscribed socket; then the seal's own reply is read, as the reference reads PUBLISH's.
    static func sealToEventOnOneThread(mds: Endpoint, node: UInt32, bucket: String, payload: [UInt8], warmups: Int,
                                       samples: Int) throws -> [Double] {
        precondition(warmups + samples <= Int(MetadataStore.maximumReservation), "one reservation names every object sealed")
        var subscriber = BlockingReplies(try BlockingTCP.connect(to: mds, peerName: "MDS", timeoutMilliseconds: 10_000))
        defer { close(subscriber.socket) }
        var sealer = BlockingReplies(try BlockingTCP.connect(to: mds, peerName: "MDS", timeoutMilliseconds: 10_000))
        defer { close(sealer.socket) }
        let prefix = "ps-raw/"
        try subscriber.send(.subscribe(scope: .prefix(prefix, in: bucket), after: nil))
        guard case .subscribed = try subscriber.next() else { throw GedsError(.protocolViolation, "the subscription was not opened") }
        try sealer.send(.reserveBlobs(node: node, count: MetadataStore.maximumReservation))
        guard case .created(let first) = try sealer.next() else { throw GedsError(.protocolViolation, "no blob ids were reserved") }
        var seconds: [Double] = []
        seconds.reserveCapacity(samples)
        for index in 0..<(warmups + samples) {
            let key = "\(prefix)\(index)"
            let seal = Request.sealNewObject(blob: BlobID(first.rawValue + UInt64(index)), bucket: bucket, key: key,
                                             size: UInt64(payload.count), metadata: [:],
                                             placement: BlobPlacement(node: node, tier: .tier0), contents: payload)
            let start = DispatchTime.now().uptimeNanoseconds
            try sealer.send(seal)
            var delivered = false
            while !delivered {
                switch try subscriber.next() {
                case .events(let events): delivered = events.contains { $0.key == key }
                case .progress: continue
                case let other: throw GedsError(.protocolViolation, "the subscription sent \(other)")
                }
            }
            let end = DispatchTime.now().uptimeNanoseconds
            guard case .ok = try sealer.next() else { throw GedsError(.protocolViolation, "\(key) was not sealed") }
            if index >= warmups { seconds.append(Double(end - start) / 1e9) }
        }
        return seconds
    }

    /// 16 writers seal 4 KiB objects for `seconds`, first without subscribers, then with 100 on overlapping prefixes;
    /// `clients` lookup clients run in both phases.
    private func pubsubThroughput(clients: Int, seconds: Double = 4) async throws -> [Measurement] {
        let writers = 16
        let subscribers = 100
        let payload = [UInt8](repeating: 0xA5, count: 4096)
        let bucket = self.bucket
        let geds = self.geds
        let lookupKey = "ps-lookup"
        try await geds.put(bucket: bucket, key: lookupKey, bytes: [1])

        /// Lookups per second and objects written while the writers write for `seconds`.
        func phase(_ name: String) async throws -> (lookups: Double, written: Int) {
            progress("pubsub: \(writers) writers sealing 4 KiB objects and \(clients) lookup clients for \(Int(seconds)) s, \(name)")
            let stop = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
            let mdsEndpoint = geds.nodeConfiguration!.mds
            return try await withThrowingTaskGroup(of: (Int, Int).self) { group in
                for writer in 0..<writers {
                    group.addTask {
                        var count = 0
                        while DispatchTime.now().uptimeNanoseconds < stop {
                            try await geds.put(bucket: bucket, key: "ps-tp/\(name)/w\(writer)/\(count)", bytes: payload)
                            count += 1
                        }
                        return (0, count)
                    }
                }
                for _ in 0..<clients {
                    group.addTask {
                        let mds = Bench.ownMDSClient(mdsEndpoint)
                        defer { mds.pool.closeAll() }
                        var count = 0
                        while DispatchTime.now().uptimeNanoseconds < stop {
                            _ = try await mds.lookup(bucket: bucket, key: lookupKey)
                            count += 1
                        }
                        return (count, 0)
                    }
                }
                var lookups = 0
                var written = 0
                for try await (looked, wrote) in group {
                    lookups += looked
                    written += wrote
                }
                return (Double(lookups) / seconds, written)
            }
        }

        let without = try await phase("without-subscribers")
        // Overlapping scopes: the whole phase, one writer's folder ("wN/"), a bare prefix ("wN"), the whole bucket;
        // each seal reaches 50 or 56–57 of them.
        let scopes: [EventScope] = (0..<subscribers).map { index in
            switch index % 4 {
            case 0: .prefix("ps-tp/with-subscribers/", in: bucket)
            case 1: .prefix("ps-tp/with-subscribers/w\(index % writers)/", in: bucket)
            case 2: .prefix("ps-tp/with-subscribers/w\(index % writers)", in: bucket)
            default: .bucket(bucket)
            }
        }
        var subscriptions: [EventSubscription] = []
        for scope in scopes { subscriptions.append(try await geds.subscribe(scope)) }
        let start = DispatchTime.now().uptimeNanoseconds
        let counting = subscriptions.map { subscription in
            Task { () -> Int in
                var count = 0
                while let event = try? await subscription.next(), event.key != "ps-tp/end" { count += 1 }
                return count
            }
        }
        let with = try await phase("with-subscribers")
        try await geds.put(bucket: bucket, key: "ps-tp/end", bytes: [0])  // only the bucket-wide ones see it: end them all
        for (subscription, scope) in zip(subscriptions, scopes) where scope.kind != .bucket { subscription.cancel() }
        var delivered = 0
        for task in counting { delivered += await task.value }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        for subscription in subscriptions { subscription.cancel() }

        var events = Measurement(workload: Workload.pubsub.rawValue, transport: Transport.tcp.rawValue, size_bytes: 4096,
                                 ops_per_s: Double(delivered) / elapsed,
                                 note: "events delivered per second to \(subscribers) subscribers on overlapping prefixes while "
                                     + "\(writers) writers sealed \(with.written) objects of 4 KiB in \(Int(seconds)) s (\(delivered) events; no reference)")
        events.samples = delivered
        var lookups = Measurement(workload: Workload.pubsub.rawValue, transport: Transport.tcp.rawValue, size_bytes: 0,
                                  ops_per_s: with.lookups,
                                  note: "MDS lookups/s, \(clients) clients, with \(subscribers) subscriptions open and \(writers) writers sealing; "
                                      + "reference: the same without subscriptions (goal: ratio ≥ 0.8)")
        lookups.compare(with: Reference("MDS lookups/s without subscriptions", .success(without.lookups)), higherIsBetter: true,
                        value: with.lookups)
        return [events, lookups]
    }

    /// Like `timed`, but the body returns its own start and end (monotonic nanoseconds): the part it times.
    static func timedFrom(warmups: Int, samples: Int, _ body: () async throws -> (UInt64, UInt64)) async throws -> [Double] {
        for _ in 0..<warmups { _ = try await body() }
        var seconds: [Double] = []
        for _ in 0..<samples {
            let (start, end) = try await body()
            seconds.append(Double(end - start) / 1e9)
        }
        return seconds
    }
}

extension References {
    /// The p50 in µs from a PUBLISH sent on one connection to the message read on another, subscribed, connection
    /// of a redis-server started here on loopback; one message in flight at a time, as the GEDS figure.
    static func redisPubSubLatency(samples: Int) -> Result<Double, Missing> {
        Result {
            let (process, port) = try startRedisServer()
            progress("reference: redis PUBLISH to a subscribed client, \(samples) messages")
            defer { process.terminate() }
            usleep(300_000)
            let subscriber = try RESPConnection(port: port)
            let publisher = try RESPConnection(port: port)
            try subscriber.send("SUBSCRIBE geds-perf\r\n")
            try subscriber.receive(exactly: "*3\r\n$9\r\nsubscribe\r\n$9\r\ngeds-perf\r\n:1\r\n".utf8.count)
            let message = "*3\r\n$7\r\nmessage\r\n$9\r\ngeds-perf\r\n$4\r\nseal\r\n".utf8.count
            var latencies: [Double] = []
            for index in 0..<(samples + 500) {
                let start = DispatchTime.now().uptimeNanoseconds
                try publisher.send("PUBLISH geds-perf seal\r\n")
                try subscriber.receive(exactly: message)
                let end = DispatchTime.now().uptimeNanoseconds
                try publisher.receive(exactly: ":1\r\n".utf8.count)
                if index >= 500 { latencies.append(Double(end - start) / 1e3) }
            }
            return Statistics.percentile(latencies.sorted(), 0.5)
        }.mapError { $0 as? Missing ?? Missing(reason: "\($0)") }
    }
}

/// A blocking TCP connection to a local redis-server speaking just enough RESP for the pub/sub and memory references.
final class RESPConnection {
    private let descriptor: Int32

    init(port: Int) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var one: Int32 = 1
        setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        guard connected == 0 else {
            close(descriptor)
            throw GedsError.io("cannot connect to redis-server on port \(port)", errno: errno)
        }
    }

    deinit { close(descriptor) }

    /// A connection to a redis-server just started, retried for up to 10 s while it comes up.
    static func waitingForServer(port: Int) throws -> RESPConnection {
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            do {
                return try RESPConnection(port: port)
            } catch where ContinuousClock.now < deadline {
                usleep(50_000)
            }
        }
    }

    func send(_ command: String) throws {
        var text = command
        let sent = text.withUTF8 { Glibc.send(descriptor, $0.baseAddress, $0.count, 0) }
        guard sent == command.utf8.count else { throw GedsError.io("send to redis-server", errno: errno) }
    }

    /// Reads exactly `count` bytes (a reply of known length).
    @discardableResult
    func receive(exactly count: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let received = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress! + got, count - got, 0) }
            guard received > 0 else { throw GedsError.io("receive from redis-server", errno: errno) }
            got += received
        }
        return buffer
    }

    /// Reads a bulk-string reply: `$LENGTH`, CRLF, the bytes, CRLF.
    func receiveBulkString() throws -> String {
        var header: [UInt8] = []
        while header.suffix(2) != [13, 10] { header += try receive(exactly: 1) }
        guard header.first == UInt8(ascii: "$"), let length = Int(String(decoding: header.dropFirst().dropLast(2), as: UTF8.self)),
              length >= 0 else {
            throw GedsError(.protocolViolation, "redis-server: expected a bulk string, got \(String(decoding: header, as: UTF8.self))")
        }
        return String(decoding: try receive(exactly: length + 2).dropLast(2), as: UTF8.self)
    }
}

/// Times a thread posts, taken in order by one task.
final class WakeUpTimes: Sendable {
    private struct State {
        var posted: [Result<UInt64, any Error>] = []
        var waiter: CheckedContinuation<UInt64, any Error>?
    }

    private let state = Mutex(State())

    func post(_ time: Result<UInt64, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<UInt64, any Error>? in
            guard let waiter = state.waiter else {
                state.posted.append(time)
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume(with: time)
    }

    func next() async throws -> UInt64 {
        try await withCheckedThrowingContinuation { continuation in
            let posted = state.withLock { state -> Result<UInt64, any Error>? in
                if !state.posted.isEmpty { return state.posted.removeFirst() }
                state.waiter = continuation
                return nil
            }
            if let posted { continuation.resume(with: posted) }
        }
    }
}
