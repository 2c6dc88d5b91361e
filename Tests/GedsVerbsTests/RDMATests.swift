import Foundation
import GedsCore
import GedsTestSupport
@testable import GedsVerbs
import Testing

/// Tests on a real RDMA device (soft-RoCE in tools/rxe-vm). Outside such an environment each reports itself
/// skipped with the reason. Serialized: under emulation the device is slow, and parallel bulk reads would
/// only make each other's deadlines harder to judge.
@Suite(.serialized, .timeLimit(.minutes(10))) struct RDMATests {
    static let timeout: Duration = .seconds(60)

    // MARK: READs

    @Suite(.serialized, .enabled(if: TestRDMA.single != nil, Comment(rawValue: TestRDMA.singleReason)))
    struct ReadsOnOneDevice {
        @Test(arguments: readSizes)
        func readRegisteredShmObject(size: Int) async throws {
            let address = try #require(TestRDMA.single)
            try await readAndCompare(size: size, reader: address, owner: address)
        }

        @Test func rangedReadsIntoATier0StyleDestinationReuseTheRegistration() async throws {
            let address = try #require(TestRDMA.single)
            let pair = try await Pair.make(reader: address, owner: address, options: .init(chunkSize: 64 << 10, readsInFlight: 8))
            let object = try ShmObject(size: (3 << 20) + 17)
            let remote = try pair.responder.register(object.mapping)
            // The destination is itself a writable /dev/shm mapping (a tier-0 copy being received).
            let copy = try ShmObject(size: object.mapping.count, name: "copy")
            chmod(copy.path, 0o600)
            let destination = try SharedMapping(path: copy.path, writable: true)
            let ranges = [(0, 4096), (4095, 70_000), (1 << 20, (1 << 20) + 5), ((3 << 20), 17), (0, object.mapping.count)]
            for (offset, length) in ranges {
                let target = UnsafeMutableRawBufferPointer(rebasing: destination.registrableBytes[offset..<(offset + length)])
                try await pair.reader.read(from: pair.responder.endpoint, remote, offset: UInt64(offset), into: target,
                                           owner: destination, timeout: RDMATests.timeout)
                #expect(equalBytes(UnsafeRawBufferPointer(target),
                                   UnsafeRawBufferPointer(rebasing: object.bytes[offset..<(offset + length)])),
                        "range \(offset)+\(length)")
            }
            let statistics = pair.reader.registrations.statistics
            #expect(statistics.entries == 1 && statistics.misses == 1 && statistics.hits == ranges.count - 1)
            #expect(await pair.reader.connectedPeers() == [pair.responder.endpoint], "one cached connection")
            // The registration pins the file's pages: a later write to the file is what the next READ sees.
            let patch = [UInt8](repeating: 0xAB, count: 4096)
            chmod(object.path, 0o600)
            let descriptor = open(object.path, O_WRONLY)
            #expect(pwrite(descriptor, patch, patch.count, 8192) == patch.count)
            close(descriptor)
            let target = UnsafeMutableRawBufferPointer(rebasing: destination.registrableBytes[0..<(16 << 10)])
            try await pair.reader.read(from: pair.responder.endpoint, remote, into: target, owner: destination)
            #expect(target[8192] == 0xAB && target[8192 + 4095] == 0xAB && target[8191] == object.bytes[8191])
            #expect(throws: RDMAError.self) {
                _ = try pair.reader.registrations.region(for: UnsafeMutableRawBufferPointer(start: nil, count: 0), owner: destination)
            }
        }

        @Test func aReadOnlyMappingRegistersOrSaysWhyNot() async throws {
            let address = try #require(TestRDMA.single)
            let engine = try RDMAEngine(localAddress: address)
            let object = try ShmObject(size: 8192)
            let readOnly = try SharedMapping(path: object.path, writable: false)
            do {
                let region = try MemoryRegion(engine.protectionDomain, memory: readOnly, access: [.remoteRead])
                print("read-only shared mapping: registered (rkey \(region.rkey))")
            } catch {
                print("read-only shared mapping: \(error)")
                #expect(error.errno == EFAULT && error.message.contains("map the file writable"))
            }
        }

        @Test func aStaleRkeyFailsClearlyAndNeverYieldsBytes() async throws {
            let address = try #require(TestRDMA.single)
            let pair = try await Pair.make(reader: address, owner: address)
            let endpoint = pair.responder.endpoint
            let first = try ShmObject(size: 256 << 10, name: "first")
            let stale = try pair.responder.register(first.mapping)
            let destination = AlignedBuffer(count: 256 << 10)
            try await pair.reader.read(from: endpoint, stale, into: destination.bytes, owner: destination)
            #expect(equalBytes(UnsafeRawBufferPointer(destination.bytes), first.bytes))

            #expect(pair.responder.deregister(stale))
            #expect(!pair.responder.deregister(stale), "deregistering twice says so")
            // The same memory registered again, and another object: neither may answer the stale location.
            let again = try pair.responder.register(first.mapping)
            let second = try ShmObject(size: 256 << 10, name: "second")
            let other = try pair.responder.register(second.mapping)
            #expect(again.address != stale.address && other.address != stale.address)

            destination.bytes.initializeMemory(as: UInt8.self, repeating: 0xEE)
            let started = ContinuousClock.now
            await #expect {
                try await pair.reader.read(from: endpoint, stale, into: destination.bytes, owner: destination,
                                           timeout: RDMATests.timeout)
            } throws: { error in
                guard let error = error as? RDMAError else { return false }
                print("stale rkey: \(error)")
                return error.isRemoteAccessError && error.message.contains("IBV_WC_REM_ACCESS_ERR")
                    && error.message.contains("stale rkey")
            }
            #expect(ContinuousClock.now - started < .seconds(30))
            #expect(destination.bytes.allSatisfy { $0 == 0xEE }, "a failed READ wrote nothing")

            // The connection is re-made and the live registrations read fine.
            try await pair.reader.read(from: endpoint, other, into: destination.bytes, owner: destination)
            #expect(equalBytes(UnsafeRawBufferPointer(destination.bytes), second.bytes))
            try await pair.reader.read(from: endpoint, again, into: destination.bytes, owner: destination)
            #expect(equalBytes(UnsafeRawBufferPointer(destination.bytes), first.bytes))
        }

        @Test func argumentsAreCheckedBeforeAnythingIsPosted() async throws {
            let address = try #require(TestRDMA.single)
            let pair = try await Pair.make(reader: address, owner: address)
            let object = try ShmObject(size: 4096)
            let remote = try pair.responder.register(object.mapping)
            let destination = AlignedBuffer(count: 4096)
            let region = try pair.reader.registrations.region(for: destination.bytes, owner: destination)
            await #expect(throws: RDMAError.self) {
                try await pair.reader.read(from: pair.responder.endpoint, remote, offset: 1, length: 4096, into: region)
            }
            await #expect(throws: RDMAError.self) {
                try await pair.reader.read(from: pair.responder.endpoint, remote, length: 4096, into: region, at: 1)
            }
            // Zero bytes need no connection at all.
            try await pair.reader.read(from: Endpoint(host: address, port: 9), remote, length: 0, into: region)
        }

        @Test func nobodyListeningIsAConnectionErrorWithinTheDeadline() async throws {
            let address = try #require(TestRDMA.single)
            let engine = try RDMAEngine(localAddress: address)
            let reader = RDMAReader(engine: engine, options: .init(connectTimeout: .seconds(20)))
            let destination = AlignedBuffer(count: 64)
            let started = ContinuousClock.now
            await #expect {
                try await reader.read(from: Endpoint(host: address, port: 9), RemoteBuffer(address: 4096, rkey: 1, length: 64),
                                      into: destination.bytes, owner: destination)
            } throws: { error in
                print("nobody listening: \(error)")
                return (error as? RDMAError)?.kind == .connection || (error as? RDMAError)?.kind == .timedOut
            }
            #expect(ContinuousClock.now - started < .seconds(25))
        }

        @Test func theOwnerGoingAwayMidReadFailsTheReadWithinTheDeadline() async throws {
            let address = try #require(TestRDMA.single)
            let pair = try await Pair.make(reader: address, owner: address, options: .init(chunkSize: 256 << 10, readsInFlight: 4))
            let object = try ShmObject(size: 32 << 20)
            let remote = try pair.responder.register(object.mapping)
            let destination = AlignedBuffer(count: object.mapping.count)
            try await pair.reader.connect(to: pair.responder.endpoint)
            let endpoint = pair.responder.endpoint
            let reader = pair.reader
            destination.bytes.initializeMemory(as: UInt8.self, repeating: 0xEE)
            let read = Task {
                try await reader.read(from: endpoint, remote, into: destination.bytes, owner: destination, timeout: .seconds(20))
            }
            // Wait until the first chunk has landed, so that the owner goes away in the middle of the read.
            let waitStart = ContinuousClock.now
            while destination.bytes[0..<64].allSatisfy({ $0 == 0xEE }), ContinuousClock.now - waitStart < .seconds(20) {
                try await Task.sleep(for: .milliseconds(5))
            }
            let started = ContinuousClock.now
            pair.owner.shutdown()  // the owner's connections go away (as when its process dies)
            let result = await read.result
            let elapsed = ContinuousClock.now - started
            print("owner gone mid-read: \(result) after \(elapsed)")
            #expect(elapsed < .seconds(25))
            if case .success = result {
                // The read may have finished before the owner went: then the bytes must be right.
                #expect(equalBytes(UnsafeRawBufferPointer(destination.bytes), object.bytes))
            }
        }
    }

    @Suite(.serialized, .enabled(if: TestRDMA.pair != nil, Comment(rawValue: TestRDMA.pairReason)))
    struct ReadsAcrossTwoHosts {
        @Test(arguments: readSizes)
        func readRegisteredShmObject(size: Int) async throws {
            let pair = try #require(TestRDMA.pair)
            try await readAndCompare(size: size, reader: pair.reader, owner: pair.owner)
        }

        /// The owner's host drops off the network mid-read (its interface goes down: no disconnect message,
        /// nothing): the read fails by its progress deadline, without hanging, and once the network is back a
        /// new read connects again.
        @Test(.enabled(if: TestRDMA.inVM, "needs the rxe-vm network to take an interface down"))
        func anOwnerThatFallsSilentFailsTheReadByItsDeadline() async throws {
            let hosts = try #require(TestRDMA.pair)
            let pair = try await Pair.make(reader: hosts.reader, owner: hosts.owner, options: .init(chunkSize: 256 << 10, readsInFlight: 4))
            let object = try ShmObject(size: 32 << 20)
            let remote = try pair.responder.register(object.mapping)
            let destination = AlignedBuffer(count: object.mapping.count)
            destination.bytes.initializeMemory(as: UInt8.self, repeating: 0xEE)
            try await pair.reader.connect(to: pair.responder.endpoint)
            let endpoint = pair.responder.endpoint
            let reader = pair.reader
            let read = Task {
                try await reader.read(from: endpoint, remote, into: destination.bytes, owner: destination, timeout: .seconds(3))
            }
            let waitStart = ContinuousClock.now
            while destination.bytes[0..<64].allSatisfy({ $0 == 0xEE }), ContinuousClock.now - waitStart < .seconds(20) {
                try await Task.sleep(for: .milliseconds(5))
            }
            try shell("ip link set vb down")
            let started = ContinuousClock.now
            let result = await read.result
            let elapsed = ContinuousClock.now - started
            try shell("ip link set vb up && ip neigh replace 10.10.1.1 lladdr $(cat /sys/class/net/va/address) dev vb nud permanent"
                      + " && ip neigh replace 10.10.1.2 lladdr $(cat /sys/class/net/vb/address) dev va nud permanent")
            print("owner silent mid-read: \(result) after \(elapsed)")
            #expect(elapsed < .seconds(15))
            if case .failure(let error) = result {
                let kind = (error as? RDMAError)?.kind
                #expect(kind == .timedOut || kind == .completion || kind == .connection)
            } else {
                #expect(equalBytes(UnsafeRawBufferPointer(destination.bytes), object.bytes))
            }
            // Back on the network: the next read makes a new connection and gets the right bytes.
            try await Task.sleep(for: .milliseconds(500))
            try await pair.reader.read(from: endpoint, remote, into: destination.bytes, owner: destination, timeout: RDMATests.timeout)
            #expect(equalBytes(UnsafeRawBufferPointer(destination.bytes), object.bytes))
        }
    }

    // MARK: messages

    @Suite(.serialized, .enabled(if: TestRDMA.single != nil, Comment(rawValue: TestRDMA.singleReason)))
    struct MessagesOnOneDevice {
        @Test func messagesGoBothWaysInOrderWithAnySize() async throws {
            let address = try #require(TestRDMA.single)
            let (client, server) = try await messagePair(client: address, server: address,
                                                         options: RDMAMessageOptions(receiveBuffers: 4, bufferSize: 4096))
            let sizes = [0, 1, 4096 - 12, 4096 - 11, 100_000, (1 << 20) + 7]
            for (index, size) in sizes.enumerated() {
                let message = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) }
                try await client.send(message, timeout: RDMATests.timeout)
                let received = try await server.receive(timeout: RDMATests.timeout)
                #expect(received == message, "message of \(size) bytes")
                try await server.send(Array(received.reversed()), timeout: RDMATests.timeout)
                #expect(try await client.receive(timeout: RDMATests.timeout) == Array(message.reversed()))
            }
            await client.close()
            await #expect(throws: RDMAError.self) { _ = try await server.receive(timeout: RDMATests.timeout) }
        }

        @Test func aSenderNeverOverrunsASlowReceiver() async throws {
            let address = try #require(TestRDMA.single)
            let buffers = 4
            let (client, server) = try await messagePair(client: address, server: address,
                                                         options: RDMAMessageOptions(receiveBuffers: buffers, bufferSize: 1024))
            let count = 40
            let sender = Task {
                for index in 0..<count {
                    try await client.send([UInt8](repeating: UInt8(index), count: 700), timeout: RDMATests.timeout)
                }
            }
            // The receiver does not receive for a while: the sender must stall on credits, with exactly as many
            // fragments sent as the receiver has buffers.
            let waitStart = ContinuousClock.now
            while try #require(await client.statistics()).fragmentsSent < buffers, ContinuousClock.now - waitStart < .seconds(20) {
                try await Task.sleep(for: .milliseconds(10))
            }
            try await Task.sleep(for: .milliseconds(300))
            let stalled = try #require(await client.statistics())
            #expect(stalled.fragmentsSent == buffers, "sent \(stalled.fragmentsSent) into \(buffers) buffers")
            #expect(stalled.credits == 0)
            // A send that cannot get credits in time fails, and the connection goes on.
            await #expect {
                try await client.send([1, 2, 3], timeout: .milliseconds(200))
            } throws: { ($0 as? RDMAError)?.kind == .timedOut }
            for index in 0..<count {
                let message = try await server.receive(timeout: RDMATests.timeout)
                #expect(message.count == 700 && message.allSatisfy { $0 == UInt8(index) }, "message \(index)")
            }
            try await sender.value
            let serverStatistics = try #require(await server.statistics())
            #expect(serverStatistics.maxFragmentsWaiting <= buffers)
            let clientStatistics = try #require(await client.statistics())
            print("credits: client sent \(clientStatistics.fragmentsSent) fragments, server returned credits in \(serverStatistics.creditFragmentsSent) credit fragments; at most \(serverStatistics.maxFragmentsWaiting) waited")
            #expect(clientStatistics.fragmentsSent == count)
        }

        @Test func bothSidesStreamingAtOnceDoNotDeadlock() async throws {
            let address = try #require(TestRDMA.single)
            let (client, server) = try await messagePair(client: address, server: address,
                                                         options: RDMAMessageOptions(receiveBuffers: 2, bufferSize: 512))
            let count = 60
            func pump(_ from: RDMAMessageConnection, _ to: RDMAMessageConnection) async throws {
                async let sending: Void = {
                    for index in 0..<count { try await from.send([UInt8](repeating: UInt8(index), count: 1500), timeout: RDMATests.timeout) }
                }()
                for index in 0..<count {
                    let message = try await to.receive(timeout: RDMATests.timeout)
                    #expect(message == [UInt8](repeating: UInt8(index), count: 1500))
                }
                try await sending
            }
            async let one: Void = pump(client, server)
            async let two: Void = pump(server, client)
            try await one
            try await two
        }

        @Test func oversizedMessagesAreRefused() async throws {
            let address = try #require(TestRDMA.single)
            let (client, server) = try await messagePair(
                client: address, server: address,
                options: RDMAMessageOptions(receiveBuffers: 4, bufferSize: 4096, maxMessageSize: 10_000))
            // The receiver refuses it at the first fragment and drops the connection; the sender may or may
            // not have handed all of it over by then.
            try? await client.send([UInt8](repeating: 1, count: 20_000), timeout: RDMATests.timeout)
            await #expect {
                _ = try await server.receive(timeout: RDMATests.timeout)
            } throws: { ($0 as? RDMAError)?.kind == .protocolViolation }
        }
    }

    @Suite(.serialized, .enabled(if: TestRDMA.pair != nil, Comment(rawValue: TestRDMA.pairReason)))
    struct MessagesAcrossTwoHosts {
        @Test func requestsAndRepliesCrossTheLink() async throws {
            let pair = try #require(TestRDMA.pair)
            let (client, server) = try await messagePair(client: pair.reader, server: pair.owner,
                                                         options: RDMAMessageOptions(receiveBuffers: 8, bufferSize: 8192))
            for index in 0..<20 {
                let request = [UInt8](repeating: UInt8(index), count: 100 + index * 997)
                try await client.send(request, timeout: RDMATests.timeout)
                let got = try await server.receive(timeout: RDMATests.timeout)
                #expect(got == request)
                try await server.send(Array(got.prefix(10)), timeout: RDMATests.timeout)
                #expect(try await client.receive(timeout: RDMATests.timeout) == Array(request.prefix(10)))
            }
        }
    }
}

/// Registers a fresh /dev/shm object of `size` bytes at the owner, READs it from the reader's device into a
/// buffer (through the registration cache), and compares the bytes.
func readAndCompare(size: Int, reader: String, owner: String) async throws {
    let pair = try await Pair.make(reader: reader, owner: owner)
    let object = try ShmObject(size: size)
    let remote = try pair.responder.register(object.mapping)
    #expect(remote.length == UInt64(size))
    let destination = AlignedBuffer(count: size)
    let started = ContinuousClock.now
    try await pair.reader.read(from: pair.responder.endpoint, remote, into: destination.bytes, owner: destination,
                               timeout: RDMATests.timeout)
    let cold = ContinuousClock.now - started
    #expect(equalBytes(UnsafeRawBufferPointer(destination.bytes), object.bytes), "\(size) bytes \(reader) <- \(owner)")
    // Again, with the connection and the destination's registration cached: the transfer alone.
    destination.bytes.initializeMemory(as: UInt8.self, repeating: 0)
    let again = ContinuousClock.now
    try await pair.reader.read(from: pair.responder.endpoint, remote, into: destination.bytes, owner: destination,
                               timeout: RDMATests.timeout)
    let warm = ContinuousClock.now - again
    #expect(equalBytes(UnsafeRawBufferPointer(destination.bytes), object.bytes), "\(size) bytes \(reader) <- \(owner), again")
    func rate(_ duration: Duration) -> String {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return String(format: "%.3f s, %.1f MB/s", seconds, Double(size) / seconds / 1e6)
    }
    print("READ \(size) bytes \(reader) <- \(owner) (\(pair.owner.device.name)): first \(rate(cold)) (connect + register), then \(rate(warm))")
    #expect(pair.responder.deregister(remote))
}

/// Runs a shell command (the VM's network setup), failing the test when it fails.
func shell(_ command: String) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", command]
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw RDMAError(.system, "'\(command)' exited with \(process.terminationStatus)") }
}

/// A message listener on `server` and a connection to it from `client`, accepted.
func messagePair(client: String, server: String, options: RDMAMessageOptions) async throws
    -> (client: RDMAMessageConnection, server: RDMAMessageConnection) {
    let serverEngine = try RDMAEngine(localAddress: server)
    let clientEngine = try RDMAEngine(localAddress: client)
    let listener = try await RDMAMessageListener.listen(engine: serverEngine, on: Endpoint(host: server, port: 0), options: options)
    async let accepted = listener.accept(timeout: RDMATests.timeout)
    let connection = try await RDMAMessageConnection.connect(engine: clientEngine, to: listener.endpoint, options: options,
                                                             timeout: RDMATests.timeout)
    let serverSide = try await accepted
    return (connection, serverSide)
}
