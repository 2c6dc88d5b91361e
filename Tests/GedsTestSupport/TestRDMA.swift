import Foundation
import GedsVerbs

/// Where the RDMA tests can run. Inside tools/rxe-vm (GEDS_RXE_VM=1) the addresses are known: rxe0 at
/// 10.10.0.1, and with --two-hosts rxe1 at 10.10.1.1 and rxe2 at 10.10.1.2. On a machine with real RDMA,
/// GEDS_RDMA_TEST_ADDRESS=IP (one local address of an RDMA device) and GEDS_RDMA_TEST_PAIR=IP1,IP2 (two
/// addresses whose traffic crosses a link) enable them.
public enum TestRDMA {
    public static let environment = ProcessInfo.processInfo.environment
    public static let inVM = environment["GEDS_RXE_VM"] == "1"
    public static let vmDevices = Set((environment["GEDS_RXE_DEVICES"] ?? "").split(separator: " ").map(String.init))

    /// One address of an RDMA device, for a responder and a reader in "one host".
    public static let single: String? = {
        guard RDMA.deviceAvailable else { return nil }
        if let address = environment["GEDS_RDMA_TEST_ADDRESS"], !address.isEmpty { return address }
        return inVM && vmDevices.contains("rxe0") ? "10.10.0.1" : nil
    }()

    /// Two addresses on two devices ("two hosts"): the reader's, then the owner's.
    public static let pair: (reader: String, owner: String)? = {
        guard RDMA.deviceAvailable else { return nil }
        if let text = environment["GEDS_RDMA_TEST_PAIR"] {
            let parts = text.split(separator: ",").map(String.init)
            if parts.count == 2 { return (parts[0], parts[1]) }
        }
        return inVM && vmDevices.isSuperset(of: ["rxe1", "rxe2"]) ? ("10.10.1.1", "10.10.1.2") : nil
    }()

    public static let singleReason = RDMA.unavailableReason
        ?? "an RDMA device is present but GEDS_RDMA_TEST_ADDRESS is not set (tools/test-rdma.sh sets up soft-RoCE)"
    public static let pairReason = RDMA.unavailableReason
        ?? "no second RDMA device: GEDS_RDMA_TEST_PAIR is not set (tools/test-rdma.sh runs the VM with --two-hosts)"
}

