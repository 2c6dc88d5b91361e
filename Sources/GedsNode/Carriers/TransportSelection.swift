import GedsCore

/// What a node offers peers, decided once at start from `NodeConfiguration.transport` and this machine.
public struct TransportSelection: Sendable, Equatable {
    /// Whether the node advertises RDMA in its registration.
    public var offersRDMA: Bool
    /// The one log line that says which transport was chosen and why.
    public var explanation: String

    /// `rdmaUnavailableReason` is `RDMA.unavailableReason` ("no RDMA device: …"), nil when a device is
    /// usable; passed in so the decision is testable on any machine. Throws when `.rdma` is demanded and
    /// there is no device: a node asked for RDMA must not quietly run over TCP.
    public init(_ transport: NodeConfiguration.Transport, rdmaUnavailableReason: String?) throws(GedsError) {
        switch (transport, rdmaUnavailableReason) {
        case (.tcp, _):
            self.init(offersRDMA: false, explanation: "transport: tcp (asked for)")
        case (.auto, let reason?):
            self.init(offersRDMA: false, explanation: "transport: tcp (auto: \(reason))")
        case (.auto, nil):
            self.init(offersRDMA: true, explanation: "transport: rdma (auto: RDMA device available)")
        case (.rdma, let reason?):
            throw GedsError(.invalidArgument, "--transport rdma: \(reason)")
        case (.rdma, nil):
            self.init(offersRDMA: true, explanation: "transport: rdma (asked for)")
        }
    }

    public init(offersRDMA: Bool, explanation: String) {
        self.offersRDMA = offersRDMA
        self.explanation = explanation
    }
}
