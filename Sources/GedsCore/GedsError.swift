/// The one error type of GEDS: a stable code (it crosses the wire) and a message written for a person.
public struct GedsError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: UInt16, Sendable {
        case invalidName = 1
        case invalidArgument
        case noSuchBucket
        case noSuchObject
        case bucketExists
        case bucketNotEmpty
        case objectSealed
        case objectNotSealed
        case objectLost
        case mdsUnreachable
        case peerUnreachable
        case protocolViolation
        case frameTooLarge
        case outOfSpace
        case timedOut
        case io
        case noSuchNode
        case noSuchBlob
        case metadataTooLarge
        case `internal`
        /// A copy's bytes do not match the CRC-32C recorded for them (a corrupt or truncated tier-1 file).
        case checksumMismatch
        /// The S3 object a blob would be uploaded to is being deleted (the key was deleted just before); upload
        /// once the deletion is done, so that it does not remove the new bytes.
        case s3DeletionPending
        /// A subscription asked to resume from a revision older than the MDS's event history.
        case compacted
        /// The MDS ended a subscription whose events piled up unread.
        case subscriberTooSlow
        /// An exclusive create (create-if-absent) found the key taken, or lost the race to seal it.
        case objectExists
        /// A peer of a deployment with a token (`--token-file`) refused this one's proof of it, or the other way round.
        case authenticationFailed
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// Keeps a GedsError as it is and describes anything else as an internal error.
    public static func wrapping(_ error: any Error) -> GedsError {
        (error as? GedsError) ?? GedsError(.internal, "\(error)")
    }

    public static func noSuchBucket(_ bucket: String) -> GedsError {
        GedsError(.noSuchBucket, "no such bucket: \(bucket)")
    }

    public static func noSuchObject(_ bucket: String, _ key: String) -> GedsError {
        GedsError(.noSuchObject, "no such object: \(bucket)/\(key)")
    }

    public static func objectExists(_ bucket: String, _ key: String) -> GedsError {
        GedsError(.objectExists, "object exists: \(bucket)/\(key)")
    }

    public static func io(_ what: String, errno: Int32) -> GedsError {
        let code: Code = (errno == 28 || errno == 122) ? .outOfSpace : .io  // ENOSPC, EDQUOT
        return GedsError(code, "\(what): \(describeErrno(errno))")
    }

    /// A failed swift-system call as the error the raw call gave: what failed, and its errno (swift-system throws
    /// nothing but `Errno`, though untyped).
    public static func io(_ what: String, _ error: any Error) -> GedsError {
        io(what, errno: Errno(thrown: error).rawValue)
    }
}

extension Errno {
    /// What a swift-system call threw (nothing but `Errno`, though untyped).
    public init(thrown error: any Error) { self = error as? Errno ?? .ioError }
}

/// `strerror` text for an errno value, with its symbolic number so logs can be searched.
public func describeErrno(_ value: Int32) -> String {
    #if canImport(Glibc)
    if let text = strerror(value) { return "\(String(cString: text)) (errno \(value))" }
    #endif
    return "errno \(value)"
}

import SystemPackage
#if canImport(Glibc)
import Glibc
#endif
