import GedsCore
import GedsNode
import Testing

@Suite struct TransportSelectionTests {
    static let noDevice = "no RDMA device: ibv_get_device_list: Function not implemented (errno 38)"

    @Test func autoFallsBackToTCPAndSaysWhy() throws {
        let selection = try TransportSelection(.auto, rdmaUnavailableReason: Self.noDevice)
        #expect(!selection.offersRDMA)
        #expect(selection.explanation == "transport: tcp (auto: \(Self.noDevice))")
    }

    @Test func autoOffersRDMAWhenADeviceIsThere() throws {
        let selection = try TransportSelection(.auto, rdmaUnavailableReason: nil)
        #expect(selection.offersRDMA)
        #expect(selection.explanation == "transport: rdma (auto: RDMA device available)")
    }

    @Test func rdmaWithoutADeviceRefusesToStart() throws {
        #expect(throws: GedsError(.invalidArgument, "--transport rdma: \(Self.noDevice)")) {
            try TransportSelection(.rdma, rdmaUnavailableReason: Self.noDevice)
        }
        #expect(try TransportSelection(.rdma, rdmaUnavailableReason: nil).offersRDMA)
    }

    @Test func tcpNeverOffersRDMA() throws {
        for reason in [nil, Self.noDevice] {
            let selection = try TransportSelection(.tcp, rdmaUnavailableReason: reason)
            #expect(selection == TransportSelection(offersRDMA: false, explanation: "transport: tcp (asked for)"))
        }
    }

    @Test func optionValuesParse() throws {
        #expect(try NodeConfiguration.Transport(parsing: "auto") == .auto)
        #expect(try NodeConfiguration.Transport(parsing: "rdma") == .rdma)
        #expect(try NodeConfiguration.Transport(parsing: "tcp") == .tcp)
        #expect(NodeConfiguration(mds: Endpoint(host: "h", port: 1)).transport == .auto)
        #expect(throws: GedsError(.invalidArgument, "--transport: expected auto, rdma or tcp, got 'bogus'")) {
            try NodeConfiguration.Transport(parsing: "bogus")
        }
    }
}
