import CVerbs
import GedsCore

/// The status of a work completion (`enum ibv_wc_status`), named as in `verbs.h`.
public struct WorkCompletionStatus: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue }
    init(_ status: ibv_wc_status) { rawValue = status.rawValue }

    public static let success = WorkCompletionStatus(IBV_WC_SUCCESS)
    public static let flushed = WorkCompletionStatus(IBV_WC_WR_FLUSH_ERR)
    public static let remoteAccessError = WorkCompletionStatus(IBV_WC_REM_ACCESS_ERR)
    public static let retryExceeded = WorkCompletionStatus(IBV_WC_RETRY_EXC_ERR)
    public static let receiverNotReadyRetryExceeded = WorkCompletionStatus(IBV_WC_RNR_RETRY_EXC_ERR)

    private static let names = [
        "IBV_WC_SUCCESS", "IBV_WC_LOC_LEN_ERR", "IBV_WC_LOC_QP_OP_ERR", "IBV_WC_LOC_EEC_OP_ERR",
        "IBV_WC_LOC_PROT_ERR", "IBV_WC_WR_FLUSH_ERR", "IBV_WC_MW_BIND_ERR", "IBV_WC_BAD_RESP_ERR",
        "IBV_WC_LOC_ACCESS_ERR", "IBV_WC_REM_INV_REQ_ERR", "IBV_WC_REM_ACCESS_ERR", "IBV_WC_REM_OP_ERR",
        "IBV_WC_RETRY_EXC_ERR", "IBV_WC_RNR_RETRY_EXC_ERR", "IBV_WC_LOC_RDD_VIOL_ERR",
        "IBV_WC_REM_INV_RD_REQ_ERR", "IBV_WC_REM_ABORT_ERR", "IBV_WC_INV_EECN_ERR", "IBV_WC_INV_EEC_STATE_ERR",
        "IBV_WC_FATAL_ERR", "IBV_WC_RESP_TIMEOUT_ERR", "IBV_WC_GENERAL_ERR", "IBV_WC_TM_ERR",
        "IBV_WC_TM_RNDV_INCOMPLETE",
    ]

    /// The enumerator's name, e.g. `IBV_WC_REM_ACCESS_ERR`.
    public var name: String {
        rawValue < Self.names.count ? Self.names[Int(rawValue)] : "ibv_wc_status(\(rawValue))"
    }

    /// libibverbs' own words for it, e.g. "remote access error".
    public var text: String { String(cString: ibv_wc_status_str(ibv_wc_status(rawValue: rawValue))) }

    public var description: String { "\(text) (\(name))" }
}

/// An error of the RDMA layer: what failed, in words for a person, with the errno or the work-completion
/// status that caused it.
public struct RDMAError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// No RDMA device on this machine (or the kernel has no RDMA support at all).
        case noDevice
        /// A verbs or rdmacm call failed; `errno` says why.
        case system
        /// A work request completed with an error status.
        case completion
        /// The peer refused, could not be reached, or went away.
        case connection
        /// A deadline passed.
        case timedOut
        /// The peer broke the protocol (wrong private data, a message over the limit, a bad header).
        case protocolViolation
        /// The caller asked for something impossible (a range outside a registration, a closed endpoint).
        case invalidArgument
        /// The endpoint or engine was closed.
        case closed
    }

    public let kind: Kind
    public let message: String
    public let errno: Int32?
    public let status: WorkCompletionStatus?

    public init(_ kind: Kind, _ message: String, errno: Int32? = nil, status: WorkCompletionStatus? = nil) {
        self.kind = kind
        self.message = message
        self.errno = errno
        self.status = status
    }

    public var description: String { message }

    /// A failed call: "`what`: strerror (errno N)".
    static func system(_ what: String, errno code: Int32) -> RDMAError {
        RDMAError(.system, "\(what): \(describeErrno(code))", errno: code)
    }

    /// The READ was refused by the owner: its registration is gone (the rkey is stale) or the range is
    /// outside it. Never comes with bytes: the destination must be treated as unwritten.
    public var isRemoteAccessError: Bool { status == .remoteAccessError }

    /// The same failure as a `GedsError`, for code that speaks the project's error type.
    public var gedsError: GedsError {
        switch kind {
        case .noDevice, .invalidArgument: GedsError(.invalidArgument, message)
        case .timedOut: GedsError(.timedOut, message)
        case .connection, .closed: GedsError(.peerUnreachable, message)
        case .protocolViolation: GedsError(.protocolViolation, message)
        case .completion: isRemoteAccessError ? GedsError(.noSuchBlob, message) : GedsError(.io, message)
        case .system: GedsError(.io, message)
        }
    }
}
