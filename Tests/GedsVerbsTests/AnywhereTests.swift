import GedsCore
import GedsTestSupport
@testable import GedsVerbs
import Testing

/// Tests that run on every machine, with or without an RDMA device.
@Suite struct AnywhereTests {
    @Test func deviceListIsAListOrAClearNoDeviceError() throws {
        do {
            let devices = try RDMA.devices()
            #expect(!devices.isEmpty)
            #expect(RDMA.deviceAvailable)
        } catch {
            #expect(error.kind == .noDevice)
            #expect(error.message.hasPrefix("no RDMA device"), "\(error.message)")
            #expect(!RDMA.deviceAvailable)
            #expect(RDMA.unavailableReason?.hasPrefix("no RDMA device") == true)
        }
    }

    @Test(.enabled(if: !RDMA.deviceAvailable, "this machine has an RDMA device"))
    func withoutADeviceTheEngineSaysSo() throws {
        #expect {
            _ = try RDMAEngine(localAddress: "127.0.0.1")
        } throws: { error in
            guard let error = error as? RDMAError else { return false }
            return error.kind == .noDevice && error.message.hasPrefix("no RDMA device")
        }
        #expect(throws: RDMAError.self) { _ = try DeviceContext.all() }
        // The project's error type carries it as an invalid argument, in the same words.
        let error = RDMAError(.noDevice, "no RDMA device: rdma_get_devices: No such device (errno 19)")
        #expect(error.gedsError.code == .invalidArgument)
        #expect(error.gedsError.message == error.message)
    }

    @Test func completionStatusesHaveTheirVerbsNames() {
        #expect(WorkCompletionStatus.remoteAccessError.name == "IBV_WC_REM_ACCESS_ERR")
        #expect(WorkCompletionStatus.remoteAccessError.text == "remote access error")
        #expect(WorkCompletionStatus.flushed.name == "IBV_WC_WR_FLUSH_ERR")
        #expect(WorkCompletionStatus.success.description == "success (IBV_WC_SUCCESS)")
        #expect(WorkCompletionStatus(rawValue: 999).name == "ibv_wc_status(999)")
        let stale = RDMAError(.completion, "READ failed", status: .remoteAccessError)
        #expect(stale.isRemoteAccessError)
        #expect(stale.gedsError.code == .noSuchBlob)
        #expect(RDMAError.system("ibv_reg_mr", errno: 12).message == "ibv_reg_mr: Cannot allocate memory (errno 12)")
    }

    @Test func helloRoundTripsAndRejectsStrangers() throws {
        let hello = Hello(purpose: .messages, receiveBuffers: 16, bufferSize: 65536)
        var padded = hello.bytes + [UInt8](repeating: 0, count: 40)  // rdmacm pads private data
        let parsed = try padded.withUnsafeBytes { try Hello(data: $0.baseAddress, length: $0.count) }
        #expect(parsed == hello)
        padded[0] = 0x58
        #expect(throws: RDMAError.self) { try padded.withUnsafeBytes { _ = try Hello(data: $0.baseAddress, length: $0.count) } }
        #expect(throws: RDMAError.self) { _ = try Hello(data: nil, length: 0) }
    }

    @Test func sharedMappingAndAlignedBufferExposeTheirBytes() throws {
        let object = try ShmObject(size: 10_000)
        #expect(object.mapping.count == 10_000)
        #expect(object.mapping.registrableBytes.count == 10_000)
        let buffer = AlignedBuffer(count: 5)
        #expect(Int(bitPattern: buffer.base) % 4096 == 0)
        #expect(throws: RDMAError.self) { _ = try SharedMapping(path: "/nonexistent/geds", writable: false) }
    }
}
