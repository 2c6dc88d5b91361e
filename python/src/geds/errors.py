"""Python exceptions for libgeds' GEDS_E_* codes: builtin exception types where Python has one (so `except
FileNotFoundError` works), every one also a `GedsError` carrying the code and the library's message."""

from __future__ import annotations

import errno as _errno

from ._geds import ffi, lib


class GedsError(Exception):
    """Any failure reported by libgeds. `code` is the negative GEDS_E_* code, `message` the library's text."""

    code = 0

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class _OSGedsError(GedsError, OSError):
    """A GedsError that is also an OSError: `errno`/`strerror` set, the message as its text."""

    os_errno = 0

    def __init__(self, message: str, code: int | None = None):
        OSError.__init__(self, self.os_errno, message)
        GedsError.__init__(self, message, code)

    def __str__(self) -> str:
        return self.message


class NoSuchObject(_OSGedsError, FileNotFoundError):
    code, os_errno = lib.GEDS_E_NO_SUCH_OBJECT, _errno.ENOENT


class NoSuchBucket(_OSGedsError, FileNotFoundError):
    code, os_errno = lib.GEDS_E_NO_SUCH_BUCKET, _errno.ENOENT


class BucketExists(_OSGedsError, FileExistsError):
    code, os_errno = lib.GEDS_E_BUCKET_EXISTS, _errno.EEXIST


class ObjectExists(_OSGedsError, FileExistsError):
    """An exclusive create (mode "x", pipe_file(mode="create"), put(exclusive=True)) found the key taken."""

    code, os_errno = lib.GEDS_E_OBJECT_EXISTS, _errno.EEXIST


class ObjectSealed(_OSGedsError, PermissionError):
    code, os_errno = lib.GEDS_E_OBJECT_SEALED, _errno.EPERM


class BucketNotEmpty(_OSGedsError):
    code, os_errno = lib.GEDS_E_BUCKET_NOT_EMPTY, _errno.ENOTEMPTY


class InvalidName(GedsError, ValueError):
    code = lib.GEDS_E_INVALID_NAME


class InvalidArgument(GedsError, ValueError):
    code = lib.GEDS_E_INVALID_ARGUMENT


class Unreachable(_OSGedsError, ConnectionError):
    code, os_errno = lib.GEDS_E_MDS_UNREACHABLE, _errno.ECONNREFUSED


class PeerUnreachable(Unreachable):
    code = lib.GEDS_E_PEER_UNREACHABLE


class TimedOut(_OSGedsError, TimeoutError):
    code, os_errno = lib.GEDS_E_TIMED_OUT, _errno.ETIMEDOUT


class OutOfSpace(_OSGedsError):
    code, os_errno = lib.GEDS_E_OUT_OF_SPACE, _errno.ENOSPC


class ObjectLost(_OSGedsError):
    code, os_errno = lib.GEDS_E_OBJECT_LOST, _errno.EIO


class IOFailure(_OSGedsError):
    code, os_errno = lib.GEDS_E_IO, _errno.EIO


class Compacted(GedsError):
    """A subscription asked for events older than the MDS's history: list again, then subscribe from now."""
    code = lib.GEDS_E_COMPACTED


class SubscriberTooSlow(GedsError):
    """A subscription fell too far behind and was ended; subscribe again after its `revision`."""
    code = lib.GEDS_E_SUBSCRIBER_TOO_SLOW


class AuthenticationFailed(GedsError, PermissionError):
    """The deployment's token (GEDS_TOKEN_FILE, or connect(token_file=...)) is missing or wrong."""
    code = lib.GEDS_E_AUTHENTICATION_FAILED


_BY_CODE = {cls.code: cls for cls in (NoSuchObject, NoSuchBucket, BucketExists, ObjectExists, ObjectSealed, BucketNotEmpty,
                                      InvalidName, InvalidArgument, Unreachable, PeerUnreachable, TimedOut,
                                      OutOfSpace, ObjectLost, IOFailure, Compacted, SubscriberTooSlow,
                                      AuthenticationFailed)}


def error_for(code: int) -> GedsError:
    """The exception for a failed call's code, with this thread's libgeds message (read right after the call)."""
    message = ffi.string(lib.geds_last_error()).decode("utf-8", "replace")
    if not message:
        message = ffi.string(lib.geds_strerror(code)).decode("utf-8", "replace")
    return _BY_CODE.get(code, GedsError)(message, code)


def check(code: int) -> int:
    if code < 0:
        raise error_for(code)
    return code
