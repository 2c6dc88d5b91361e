import CGeds
import GEDS
#if canImport(Glibc)
import Glibc
#endif

/// This thread's last failure message, for `geds_last_error`: a malloc'd C string per thread, freed when the
/// thread ends or the next failure replaces it.
private let lastErrorKey: pthread_key_t? = {
    var key = pthread_key_t()
    return pthread_key_create(&key, { free($0) }) == 0 ? key : nil
}()

/// Records `error` as this thread's last error and returns its C code.
func fail(_ error: GedsError) -> Int32 {
    if let lastErrorKey {
        free(pthread_getspecific(lastErrorKey))
        pthread_setspecific(lastErrorKey, strdup(error.message))
    }
    return -Int32(error.code.rawValue)
}

func fail(_ code: GedsError.Code, _ message: String) -> Int32 {
    fail(GedsError(code, message))
}

/// 0 on success, else the failure's code (recorded as the last error).
func status(_ result: Result<Void, GedsError>) -> Int32 {
    switch result {
    case .success: 0
    case .failure(let error): fail(error)
    }
}

func cString(_ text: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("geds_last_error")
public func gedsLastError() -> UnsafePointer<CChar> {
    guard let lastErrorKey, let message = pthread_getspecific(lastErrorKey) else { return cString("") }
    return UnsafePointer(message.assumingMemoryBound(to: CChar.self))
}

@_cdecl("geds_strerror")
public func gedsStrerror(_ code: Int32) -> UnsafePointer<CChar> {
    if code == 0 { return cString("GEDS_OK: success") }
    guard code < 0, code >= -Int32(UInt16.max), let known = GedsError.Code(rawValue: UInt16(-code)) else {
        return cString("unknown GEDS error code")
    }
    return switch known {
    case .invalidName: cString("GEDS_E_INVALID_NAME: a bucket or key breaks the naming rules")
    case .invalidArgument: cString("GEDS_E_INVALID_ARGUMENT: invalid argument")
    case .noSuchBucket: cString("GEDS_E_NO_SUCH_BUCKET: no such bucket")
    case .noSuchObject: cString("GEDS_E_NO_SUCH_OBJECT: no such object")
    case .bucketExists: cString("GEDS_E_BUCKET_EXISTS: the bucket exists")
    case .bucketNotEmpty: cString("GEDS_E_BUCKET_NOT_EMPTY: the bucket is not empty")
    case .objectSealed: cString("GEDS_E_OBJECT_SEALED: the object is sealed")
    case .objectNotSealed: cString("GEDS_E_OBJECT_NOT_SEALED: the object is not sealed")
    case .objectLost: cString("GEDS_E_OBJECT_LOST: every copy of the object is gone")
    case .mdsUnreachable: cString("GEDS_E_MDS_UNREACHABLE: the metadata service cannot be reached")
    case .peerUnreachable: cString("GEDS_E_PEER_UNREACHABLE: the node holding the object cannot be reached")
    case .protocolViolation: cString("GEDS_E_PROTOCOL_VIOLATION: a peer broke the wire protocol")
    case .frameTooLarge: cString("GEDS_E_FRAME_TOO_LARGE: a message is too large")
    case .outOfSpace: cString("GEDS_E_OUT_OF_SPACE: no space left")
    case .timedOut: cString("GEDS_E_TIMED_OUT: timed out")
    case .io: cString("GEDS_E_IO: input/output error")
    case .noSuchNode: cString("GEDS_E_NO_SUCH_NODE: no such node")
    case .noSuchBlob: cString("GEDS_E_NO_SUCH_BLOB: no such blob")
    case .metadataTooLarge: cString("GEDS_E_METADATA_TOO_LARGE: metadata too large")
    case .internal: cString("GEDS_E_INTERNAL: internal error")
    case .checksumMismatch: cString("GEDS_E_CHECKSUM_MISMATCH: stored bytes do not match their checksum")
    case .s3DeletionPending: cString("GEDS_E_S3_DELETION_PENDING: the S3 object is being deleted")
    case .compacted: cString("GEDS_E_COMPACTED: the events asked for are older than the MDS's event history")
    case .subscriberTooSlow: cString("GEDS_E_SUBSCRIBER_TOO_SLOW: the subscription fell too far behind and was ended")
    case .objectExists: cString("GEDS_E_OBJECT_EXISTS: an exclusive create found the object existing")
    case .authenticationFailed: cString("GEDS_E_AUTHENTICATION_FAILED: the deployment's token is missing or wrong")
    }
}
