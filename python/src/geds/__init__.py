"""GEDS, a Generic Ephemeral Data Store, from Python: `geds.connect()`, buckets and objects, zero-copy views,
an fsspec filesystem (`geds://bucket/key`, in geds.fs) and a smart_open transport (geds.smart_open_transport)."""

from .client import (Client, Entry, Event, Location, ObjectFile, ObjectInfo, Reader, Subscription, Writer, connect,
                     version)
from .errors import (AuthenticationFailed, BucketExists, BucketNotEmpty, Compacted, GedsError, InvalidArgument, InvalidName, IOFailure,
                     NoSuchBucket, NoSuchObject, ObjectExists, ObjectLost, ObjectSealed, OutOfSpace, PeerUnreachable,
                     SubscriberTooSlow, TimedOut, Unreachable)

__all__ = ["Client", "Entry", "Event", "Location", "ObjectFile", "ObjectInfo", "Reader", "Subscription", "Writer",
           "connect", "version", "AuthenticationFailed", "Compacted", "SubscriberTooSlow",
           "GedsError", "BucketExists", "BucketNotEmpty", "InvalidArgument", "InvalidName", "IOFailure", "NoSuchBucket",
           "NoSuchObject", "ObjectExists", "ObjectLost", "ObjectSealed", "OutOfSpace", "PeerUnreachable", "TimedOut",
           "Unreachable"]



def _register_smart_open() -> None:
    """Makes smart_open.open("geds://...") work as soon as geds is imported (smart_open has no entry points)."""
    try:
        import smart_open.transport as transport
    except ImportError:
        return
    from . import smart_open_transport

    try:
        transport.get_transport("geds")
    except NotImplementedError:
        transport.register_transport(smart_open_transport)


_register_smart_open()
