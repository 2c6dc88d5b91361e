"""The Python API over libgeds: `geds.connect()` returns a `Client`.

Every libgeds call goes through cffi's API mode, which releases the GIL for the duration of the C call, so
threads of one process overlap their blocking calls. Buffers handed to libgeds are the caller's own (through
`ffi.from_buffer`): reads land in the destination, writes come from the source, nothing is copied in between.

A Client is fork-safe: the libgeds handle belongs to the process that made it; a child (fork, or a pickled
Client rebuilt by spawn) notices the pid change and connects again with the same options. A fork child of a
process that already ran libgeds attaches to its host's gedsd (libgeds's threads do not survive fork(), so it
cannot run a node of its own, subscribe or wait there; libgeds says so in its error)."""

from __future__ import annotations

import atexit
import io
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Iterator, Mapping

from ._geds import ffi, lib
from .errors import GedsError, NoSuchObject, check, error_for

# Objects below this size are read by get() with one geds_read_object call (no separate open).
_SMALL_OBJECT = 64 * 1024

# libgeds takes the deployment's token and TLS files from these variables at connect (geds.h); the options set them
# for that call.
_ENVIRONMENT_OPTIONS = {"token_file": "GEDS_TOKEN_FILE", "tls_cert": "GEDS_TLS_CERT", "tls_key": "GEDS_TLS_KEY",
                        "tls_ca": "GEDS_TLS_CA"}
_CONFIG_FIELDS = ("mds", "transport", "tier0_dir", "host_id", "name", "persistency", "timeout_ms", "tier0_capacity",
                  *_ENVIRONMENT_OPTIONS)
_connect_lock = threading.Lock()


_thread_scratch = threading.local()


def _small_scratch():
    """This thread's buffer for a get's first read (`_SMALL_OBJECT` bytes): allocated once, not per get."""
    scratch = getattr(_thread_scratch, "buffer", None)
    if scratch is None:
        scratch = _thread_scratch.buffer = ffi.new("char[]", _SMALL_OBJECT)
    return scratch


def _c(text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"expected a str, got {type(text).__name__}")
    return text.encode("utf-8")


def _s(pointer) -> str:
    return ffi.string(pointer).decode("utf-8", "replace") if pointer != ffi.NULL else ""


def version() -> str:
    """The library's version string, e.g. "GEDS 0.1.0 (ABI 1)"."""
    return _s(lib.geds_version())


@dataclass(frozen=True)
class ObjectInfo:
    """What stat reports about a sealed object: `modified_ms` is when it was sealed; `locations` counts its
    copies (tier 0, tier 1, S3) and `metadata_count` its user metadata entries."""

    bucket: str
    key: str
    size: int
    modified_ms: int
    locations: int = 0
    metadata_count: int = 0


@dataclass(frozen=True)
class Entry:
    """One listing entry: an object (`size`, `modified_ms`) or, with a delimiter, a common prefix."""

    name: str
    is_prefix: bool
    size: int = 0
    modified_ms: int = 0


@dataclass(frozen=True)
class Location:
    """One copy of an object: the node holding it and "TIER ENDPOINT host=ID" (e.g. "tier0 tcp://H:P host=h"), or
    an S3 copy: its URL and "s3 region=REGION"."""

    node: str
    detail: str


class Client:
    """A connection to GEDS. Use `geds.connect()`; close it (or use it as a context manager) when done."""

    def __init__(self, mds: str | None = None, **config):
        unknown = set(config) - set(_CONFIG_FIELDS)
        if unknown:
            raise TypeError(f"unknown GEDS option(s): {', '.join(sorted(unknown))} (known: {', '.join(_CONFIG_FIELDS)})")
        self._options = {"mds": mds, **config}
        self._lock = threading.Lock()
        self._handle = None
        self._pid = None
        self._closed = False
        self._connect()

    # -- connection and fork-safety

    def _connect(self) -> None:
        config = ffi.new("geds_config_t *")
        lib.geds_config_init(config)
        keep = []  # the C strings must outlive geds_connect_config
        for field, value in self._options.items():
            if value is None or field in _ENVIRONMENT_OPTIONS:
                continue
            if field in ("timeout_ms", "tier0_capacity"):
                setattr(config, field, int(value))
            else:
                keep.append(ffi.new("char[]", _c(str(value))))
                setattr(config, field, keep[-1])
        out = ffi.new("geds_t **")
        variables = {_ENVIRONMENT_OPTIONS[field]: os.fspath(value) for field, value in self._options.items()
                     if field in _ENVIRONMENT_OPTIONS and value is not None}
        if not variables:
            check(lib.geds_connect_config(config, out))
        else:
            with _connect_lock:
                saved = {variable: os.environ.get(variable) for variable in variables}
                os.environ.update(variables)
                try:
                    check(lib.geds_connect_config(config, out))
                finally:
                    for variable, value in saved.items():
                        if value is None:
                            del os.environ[variable]
                        else:
                            os.environ[variable] = value
        self._handle, self._pid = out[0], os.getpid()
        _open_clients.add(self)
        with _shared_lock:
            current = _shared.get(_shared_key(self._options))
            if current is None or current.closed:
                _shared[_shared_key(self._options)] = self

    @property
    def handle(self):
        """This process's libgeds handle (a new connection after a fork)."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    if self._closed:
                        raise GedsError("this GEDS client is closed")
                    # The parent's handle is the parent's: it is neither used nor closed here.
                    self._options = _for_another_process(self._options)
                    self._connect()
        if self._closed:
            raise GedsError("this GEDS client is closed")
        return self._handle

    @property
    def options(self) -> dict:
        return dict(self._options)

    def close(self) -> None:
        """Stops this process's node (or detaches from the host's gedsd). A second close does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._pid == os.getpid() and self._handle is not None:
                lib.geds_close(self._handle)
            self._handle = None

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __reduce__(self):
        return (_rebuild, (_for_another_process(self._options),))

    @staticmethod
    def option_names() -> tuple[str, ...]:
        return _CONFIG_FIELDS

    @classmethod
    def shared(cls, **options) -> "Client":
        """This process's client for these options (made on first use, one per process and options)."""
        return _rebuild(options)

    def __repr__(self) -> str:
        return f"geds.Client(mds={self._options.get('mds')!r}{', closed' if self._closed else ''})"

    # -- buckets

    def create_bucket(self, bucket: str) -> None:
        """Creates a bucket; an existing one is not an error."""
        check(lib.geds_create_bucket(self.handle, _c(bucket)))

    def delete_bucket(self, bucket: str, force: bool = False) -> None:
        check(lib.geds_delete_bucket(self.handle, _c(bucket), 1 if force else 0))

    def buckets(self) -> list[str]:
        out = ffi.new("geds_iter_t **")
        check(lib.geds_list_buckets(self.handle, out))
        return [entry.name for entry in _drain(out[0])]

    def set_bucket_storage(self, bucket: str, s3: str | None, prefix: str | None = None, region: str | None = None,
                           persistency: str | None = None) -> None:
        """Gives a bucket an S3 store ("http://HOST:PORT/S3BUCKET[/PREFIX]"); s3=None takes it away."""
        check(lib.geds_set_bucket_storage(self.handle, _c(bucket), _opt(s3), _opt(prefix), _opt(region),
                                          _opt(persistency)))

    # -- objects

    def put(self, bucket: str, key: str, data, metadata: Mapping[str, str] | None = None,
            exclusive: bool = False, replicas: int = 0, wait_for_replicas: bool = True) -> None:
        """Writes `data` (any bytes-like object) as the object bucket/key and seals it, in one libgeds call
        (geds_put_flags: attached, an object of up to 64 KiB is one request to the gedsd). `exclusive`: only if the
        key does not exist (ObjectExists, a FileExistsError, otherwise; atomic at the MDS). `replicas`: see
        `create`."""
        flags = _create_flags(exclusive, replicas, wait_for_replicas)
        source = ffi.from_buffer(data)
        names, values, keep = _string_arrays(metadata)
        check(lib.geds_put_flags(self.handle, _c(bucket), _c(key), source, len(source), flags, names, values, len(keep) // 2))

    def create(self, bucket: str, key: str, exclusive: bool = False, replicas: int = 0,
               wait_for_replicas: bool = True) -> "Writer":
        """A new, unsealed object: write at any offset, then seal (or discard). `exclusive` (create-if-absent):
        ObjectExists now if the key exists, or at the seal if another writer sealed it first; of racing
        exclusive creators exactly one wins. `replicas` (1 to 16; 0: the bucket's factor): copies kept on as many
        distinct hosts, all published when the seal returns, or only the first with `wait_for_replicas=False`."""
        out = ffi.new("geds_writer_t **")
        check(lib.geds_create_flags(self.handle, _c(bucket), _c(key), _create_flags(exclusive, replicas, wait_for_replicas), out))
        return Writer(self, out[0], bucket, key)

    def get(self, bucket: str, key: str) -> bytes:
        """The whole object as bytes. A small object costs one call (lookup and read together); a larger one is
        read straight into the result (no intermediate copy)."""
        scratch = _small_scratch()
        count = check(lib.geds_read_object(self.handle, _c(bucket), _c(key), scratch, _SMALL_OBJECT, 0))
        if count < _SMALL_OBJECT:
            return ffi.buffer(scratch, count)[:]
        with self.reader(bucket, key) as reader:
            return reader.read_all()

    def read(self, bucket: str, key: str, offset: int = 0, length: int = -1) -> bytes:
        """Bytes [offset, offset + length) of the object (length -1: to the end); shorter at the end."""
        if length < 0:
            with self.reader(bucket, key) as reader:
                return reader.read_range(offset, max(reader.size - offset, 0))
        buffer = bytearray(length)
        count = self.read_into(bucket, key, buffer, offset)
        return bytes(memoryview(buffer)[:count])

    def read_into(self, bucket: str, key: str, buffer, offset: int = 0) -> int:
        """Reads into a writable buffer (bytearray, numpy array, memoryview) in one call; the count read."""
        if offset < 0:
            raise ValueError("offset must be >= 0")
        target = ffi.from_buffer(buffer, require_writable=True)
        return check(lib.geds_read_object(self.handle, _c(bucket), _c(key), target, len(target), offset))

    def reader(self, bucket: str, key: str) -> "Reader":
        out = ffi.new("geds_reader_t **")
        check(lib.geds_open(self.handle, _c(bucket), _c(key), out))
        return Reader(self, out[0], bucket, key)

    def open(self, bucket: str, key: str, mode: str = "rb", metadata: Mapping[str, str] | None = None):
        """A raw binary file over an object: "rb" reads a sealed object (seek, readinto), "wb" writes a new
        object that is sealed at close, "xb" too but fails with FileExistsError if the object exists."""
        if mode in ("r", "rb"):
            return ObjectFile(self.reader(bucket, key), "rb")
        if mode in ("w", "wb", "x", "xb"):
            return ObjectFile(self.create(bucket, key, exclusive=mode.startswith("x")), "wb", metadata)
        raise ValueError(f"unsupported mode {mode!r} (use 'rb', 'wb' or 'xb')")

    def view(self, bucket: str, key: str) -> memoryview:
        """A read-only memoryview straight over the object's tier-0 mapping (fetched into this host's tier 0
        first if remote). The mapping is leased until the last view of it (and every slice, numpy array...) is
        gone; deleting the object meanwhile does not invalidate it."""
        with self.reader(bucket, key) as reader:
            return reader.view()

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        out = ffi.new("geds_stat_t *")
        check(lib.geds_stat(self.handle, _c(bucket), _c(key), out))
        return ObjectInfo(bucket, key, out.size, out.modified_ms, out.locations, out.metadata_count)

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.stat(bucket, key)
            return True
        except FileNotFoundError:
            return False

    def list(self, bucket: str, prefix: str = "", delimiter: str = "") -> list[Entry]:
        """Objects of a bucket under `prefix`, in key order; with a delimiter, common prefixes too."""
        return list(self.iter(bucket, prefix, delimiter))

    def iter(self, bucket: str, prefix: str = "", delimiter: str = "") -> Iterator[Entry]:
        out = ffi.new("geds_iter_t **")
        check(lib.geds_list(self.handle, _c(bucket), _opt(prefix or None), _opt(delimiter or None), out))
        for entry in _drain(out[0]):
            yield Entry(entry.name, entry.kind == lib.GEDS_ENTRY_PREFIX, entry.size, entry.modified_ms)

    def delete(self, bucket: str, key: str) -> None:
        check(lib.geds_delete(self.handle, _c(bucket), _c(key)))

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Deletes every object whose key starts with `prefix`; the number deleted."""
        deleted = ffi.new("uint64_t *")
        check(lib.geds_delete_prefix(self.handle, _c(bucket), _c(prefix), deleted))
        return deleted[0]

    def rename(self, bucket: str, key: str, to_bucket: str, to_key: str) -> None:
        """Renames at the MDS only: no bytes move."""
        check(lib.geds_rename(self.handle, _c(bucket), _c(key), _c(to_bucket), _c(to_key)))

    def copy(self, bucket: str, key: str, to_bucket: str, to_key: str) -> None:
        """Copies inside the store (the bytes are shared, not moved through this process)."""
        check(lib.geds_copy(self.handle, _c(bucket), _c(key), _c(to_bucket), _c(to_key)))

    def metadata(self, bucket: str, key: str) -> dict[str, str]:
        out = ffi.new("geds_iter_t **")
        check(lib.geds_metadata_list(self.handle, _c(bucket), _c(key), out))
        return {entry.name: entry.detail for entry in _drain(out[0])}

    def set_metadata(self, bucket: str, key: str, metadata: Mapping[str, str]) -> None:
        """Replaces all of the object's user metadata."""
        names, values, keep = _string_arrays(metadata)
        check(lib.geds_metadata_set(self.handle, _c(bucket), _c(key), names, values, len(metadata)))

    def locations(self, bucket: str, key: str) -> list[Location]:
        out = ffi.new("geds_iter_t **")
        check(lib.geds_locations(self.handle, _c(bucket), _c(key), out))
        return [Location(entry.name, entry.detail) for entry in _drain(out[0])]

    def relocate(self, bucket: str, key: str, node: str | None = None) -> None:
        """Moves a sealed object to another node (None: the least loaded gedsd) so it outlives this process."""
        check(lib.geds_relocate(self.handle, _c(bucket), _c(key), _opt(node)))

    def flush(self, timeout_ms: int = 0) -> None:
        """Waits for every node's write-back uploads to S3."""
        check(lib.geds_flush(self.handle, timeout_ms))

    def wait(self, bucket: str, key: str, timeout: float | None = None) -> None:
        """Returns once the object exists sealed (at once if it does); TimeoutError after `timeout` seconds."""
        check(lib.geds_wait(self.handle, _c(bucket), _c(key), -1 if timeout is None else int(timeout * 1000)))

    def subscribe(self, bucket: str, prefix: str | None = None, key: str | None = None,
                  after: int | None = None) -> "Subscription":
        """The changes of a bucket, of the keys under `prefix`, or of one `key`, in revision order, each once:
        every change after revision `after` (from the MDS's history), else from now."""
        if prefix is not None and key is not None:
            raise ValueError("subscribe to a prefix or to a key, not both")
        scope, name = ((lib.GEDS_SCOPE_KEY, key) if key is not None else
                       (lib.GEDS_SCOPE_PREFIX, prefix) if prefix else (lib.GEDS_SCOPE_BUCKET, None))
        out = ffi.new("geds_subscription_t **")
        revision = ffi.new("uint64_t *", after) if after is not None else ffi.NULL
        check(lib.geds_subscribe(self.handle, scope, _c(bucket), _opt(name), revision, out))
        return Subscription(out[0])


@dataclass(frozen=True)
class Event:
    """One change of the namespace; `kind` is what `geds watch` prints (created, deleted, renamed, copied, metadata,
    bucket-created, bucket-deleted); `source` is the old name of a rename or the source of a copy."""
    revision: int
    kind: str
    bucket: str
    key: str
    source: tuple[str, str] | None


_EVENT_KINDS = {1: "created", 2: "deleted", 3: "renamed", 4: "copied", 5: "metadata", 6: "bucket-created",
                7: "bucket-deleted"}


class Subscription:
    """Events in revision order (iterate it, or call `next(timeout)`); `fileno()` is readable when one may be
    waiting (for select/selectors); `revision` is where to resume; close() ends it."""

    def __init__(self, handle):
        self._handle = ffi.gc(handle, lib.geds_subscription_close)

    def next(self, timeout: float | None = None) -> Event | None:
        """The next event, or None when `timeout` seconds pass first (0: do not wait)."""
        event = ffi.new("geds_event_t *")
        got = check(lib.geds_next_event(self._live(), -1 if timeout is None else int(timeout * 1000), event))
        if got == 0:
            return None
        source = (_s(event.source_bucket), _s(event.source_key)) if event.kind in (3, 4) else None
        return Event(event.revision, _EVENT_KINDS.get(event.kind, str(event.kind)), _s(event.bucket), _s(event.key),
                     source)

    def __iter__(self) -> Iterator[Event]:
        while (event := self.next()) is not None:
            yield event

    def fileno(self) -> int:
        return check(lib.geds_subscription_fd(self._live()))

    @property
    def revision(self) -> int:
        revision = ffi.new("uint64_t *")
        check(lib.geds_subscription_revision(self._live(), revision))
        return revision[0]

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            ffi.release(handle)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _live(self):
        if self._handle is None:
            raise ValueError("the subscription is closed")
        return self._handle


_shared: dict[tuple, Client] = {}
_shared_lock = threading.RLock()


def _shared_key(options: dict) -> tuple:
    return (os.getpid(), tuple(sorted((k, v) for k, v in options.items() if v is not None)))


# Every open client, so that interpreter exit closes them: an embedded node's tier-0 folder is removed at
# geds_close, and the MDS learns at once that the node is gone instead of waiting for its lease to expire.
_open_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


@atexit.register
def close_all() -> None:
    """Closes every client this process opened (also run at interpreter exit)."""
    for client in list(_open_clients):
        if client._pid == os.getpid():
            client.close()


def _for_another_process(options: dict) -> dict:
    """A node name belongs to one process: another process connecting with the same options takes its own."""
    return {k: v for k, v in options.items() if k != "name"}


def _rebuild(options: dict) -> Client:
    """An unpickled Client: this process's open client for the same options, else a new one. A worker that
    receives many tasks carrying a Client thus connects once."""
    with _shared_lock:
        client = _shared.get(_shared_key(options))
        return client if client is not None and not client.closed else Client(**options)


def connect(mds: str | None = None, **config) -> Client:
    """Connects to GEDS. `mds` is HOST:PORT (None: $GEDS_MDS, else 127.0.0.1:4381); `config` takes the fields of
    geds_config_t: transport, tier0_dir, host_id, name, persistency, timeout_ms, tier0_capacity; and token_file, the
    deployment's token (default: $GEDS_TOKEN_FILE)."""
    return Client(mds, **config)


def _opt(text: str | None):
    return ffi.NULL if text is None else _c(text)


def _create_flags(exclusive: bool, replicas: int, wait_for_replicas: bool) -> int:
    """geds_create_flags' flags (GEDS_CREATE_REPLICAS(n) of geds.h is a macro cffi cannot call)."""
    if not 0 <= replicas <= 16:
        raise ValueError(f"replicas must be 0 to 16, got {replicas}")
    return ((lib.GEDS_CREATE_EXCLUSIVE if exclusive else 0) | (replicas << 8)
            | (lib.GEDS_CREATE_ASYNC_REPLICAS if replicas and not wait_for_replicas else 0))


def _string_arrays(mapping: Mapping[str, str] | None):
    mapping = mapping or {}
    keep = [ffi.new("char[]", _c(str(v))) for pair in mapping.items() for v in pair]
    names = ffi.new("const char *[]", keep[0::2]) if keep else ffi.NULL
    values = ffi.new("const char *[]", keep[1::2]) if keep else ffi.NULL
    return names, values, keep


@dataclass(frozen=True)
class _RawEntry:
    kind: int
    name: str
    detail: str
    size: int
    modified_ms: int


def _drain(iterator) -> list[_RawEntry]:
    """Every entry of a libgeds iterator (closed afterwards)."""
    entries = []
    entry = ffi.new("geds_entry_t *")
    try:
        while True:
            status = lib.geds_next(iterator, entry)
            if status == 0:
                return entries
            if status < 0:
                raise error_for(status)
            entries.append(_RawEntry(entry.kind, _s(entry.name), _s(entry.detail), entry.size, entry.modified_ms))
    finally:
        lib.geds_iter_close(iterator)


# MARK: readers, writers, views


class Reader:
    """A sealed object opened for reading (positional reads; not a file: see ObjectFile)."""

    def __init__(self, client: Client, handle, bucket: str, key: str):
        self._handle = handle
        self.client, self.bucket, self.key = client, bucket, key
        size = ffi.new("uint64_t *")
        try:
            check(lib.geds_reader_size(handle, size))
        except BaseException:
            lib.geds_reader_close(handle)
            raise
        self.size = size[0]

    def _live(self):
        if self._handle is None:
            raise ValueError("the object reader is closed")
        return self._handle

    def readinto(self, buffer, offset: int) -> int:
        target = ffi.from_buffer(buffer, require_writable=True)
        if len(target) == 0:
            return 0
        return check(lib.geds_read(self._live(), target, len(target), offset))

    def read_range(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        return _fill_bytes(length, lambda target, count, at: lib.geds_read(self._live(), target, count, offset + at))

    def read_all(self) -> bytes:
        return self.read_range(0, self.size)

    def view(self) -> memoryview:
        if self.size == 0:
            return memoryview(b"")
        out = ffi.new("geds_view_t **")
        data = ffi.new("void **")
        size = ffi.new("uint64_t *")
        check(lib.geds_view(self._live(), out, ffi.cast("const void **", data), size))
        lease = out[0]
        # The buffer keeps `owner` alive; `owner`'s destructor releases the lease: the mapping stays until the
        # last memoryview (slice, numpy array) exporting this buffer is gone.
        owner = ffi.gc(ffi.cast("char *", data[0]), lambda _, lease=lease: lib.geds_view_release(lease), size[0])
        return memoryview(ffi.buffer(owner, size[0])).toreadonly()

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            lib.geds_reader_close(handle)

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_handle", None) is not None and self.client._pid == os.getpid():
            self.close()


def _fill_bytes(length: int, fill) -> bytes:
    """A bytes object of `length` filled in place by `fill(char *, count, at)` (bytes [at, at + count) of the source;
    it returns the count or a GEDS_E_*).

    A fresh bytes object of two or more bytes is private to us until returned (bytes(0) and bytes(1) are shared
    singletons, hence the copy for those), so libgeds writes straight into it: one pass over the data, no copy.
    bytes(n) is calloc'd: its pages are new, and libgeds faults them in on another thread ahead of a large read."""
    if length < 2:
        scratch = bytearray(length)
        count = check(fill(ffi.from_buffer(scratch), length, 0)) if length else 0
        return bytes(scratch[:count])
    result = bytes(length)
    count = check(fill(ffi.from_buffer(result), length, 0))
    return result if count == length else result[:count]


class Writer:
    """An object being written: invisible until sealed."""

    def __init__(self, client: Client, handle, bucket: str, key: str):
        self._handle = handle
        self.client, self.bucket, self.key = client, bucket, key

    def _live(self):
        if self._handle is None:
            raise ValueError(f"the writer of {self.bucket}/{self.key} is sealed or discarded")
        return self._handle

    def write_at(self, data, offset: int) -> int:
        source = ffi.from_buffer(data)
        if len(source):
            check(lib.geds_write(self._live(), source, len(source), offset))
        else:
            self._live()
        return len(source)

    def truncate(self, size: int) -> None:
        check(lib.geds_truncate(self._live(), size))

    @property
    def size(self) -> int:
        out = ffi.new("uint64_t *")
        check(lib.geds_writer_size(self._live(), out))
        return out[0]

    def seal(self, metadata: Mapping[str, str] | None = None) -> None:
        handle, self._handle = self._live(), None
        if metadata:
            names, values, keep = _string_arrays(metadata)
            check(lib.geds_seal_metadata(handle, names, values, len(metadata)))
        else:
            check(lib.geds_seal(handle))

    def discard(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            lib.geds_writer_discard(handle)

    def __del__(self):
        if getattr(self, "_handle", None) is not None and self.client._pid == os.getpid():
            self.discard()


class ObjectFile(io.RawIOBase):
    """A raw binary file over an object. Reading: readinto/seek/tell over a sealed object. Writing: sequential
    (or seek-then-write) writes into the unsealed object, sealed by close()."""

    def __init__(self, target, mode: str, metadata: Mapping[str, str] | None = None):
        super().__init__()
        self._target = target
        self._mode = mode
        self._metadata = metadata
        self._position = 0
        self.name = f"geds://{target.bucket}/{target.key}"

    @property
    def mode(self) -> str:
        return self._mode

    def readable(self) -> bool:
        return self._mode == "rb"

    def writable(self) -> bool:
        return self._mode == "wb"

    def seekable(self) -> bool:
        return True

    @property
    def size(self) -> int:
        return self._target.size

    def readinto(self, buffer) -> int:
        self._check_open("read")
        if not self.readable():
            raise io.UnsupportedOperation("not readable")
        view = memoryview(buffer).cast("B")
        length = min(len(view), max(self._target.size - self._position, 0))
        if length == 0:
            return 0
        count = self._target.readinto(view[:length], self._position)
        self._position += count
        return count

    def readall(self) -> bytes:
        self._check_open("read")
        data = self._target.read_range(self._position, self._target.size - self._position)
        self._position += len(data)
        return data

    def write(self, data) -> int:
        self._check_open("write")
        if not self.writable():
            raise io.UnsupportedOperation("not writable")
        count = self._target.write_at(data, self._position)
        self._position += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open("seek")
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self._target.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def tell(self) -> int:
        self._check_open("tell")
        return self._position

    def view(self) -> memoryview:
        """The whole object without copies (reading mode only)."""
        self._check_open("view")
        if not self.readable():
            raise io.UnsupportedOperation("not readable")
        return self._target.view()

    def _check_open(self, what: str) -> None:
        if self.closed:
            raise ValueError(f"I/O operation ({what}) on a closed GEDS file")

    def close(self) -> None:
        """Reading: releases the reader. Writing: seals the object (visible everywhere from now on)."""
        if self.closed:
            return
        try:
            if self._mode == "wb":
                self._target.seal(self._metadata)
            else:
                self._target.close()
        finally:
            super().close()

    def abort(self) -> None:
        """Writing: closes without publishing anything."""
        if not self.closed and self._mode == "wb":
            self._target.discard()
        super().close()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self._mode == "wb":
            self.abort()
        else:
            self.close()
