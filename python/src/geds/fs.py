"""fsspec filesystem for GEDS: `geds://bucket/key`.

Directories are inferred from "/" in keys (no empty directories); a bucket is a top-level directory and
mkdir/makedirs create buckets. The libgeds client is created lazily, per process: an instance unpickled in
another process, or used in a fork child, connects there with the same storage options."""

from __future__ import annotations

import datetime
import os
import threading

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from fsspec.utils import infer_storage_options

from .client import Client, Reader, Writer


def _utc(milliseconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(milliseconds / 1000, tz=datetime.timezone.utc)


class GedsFileSystem(AbstractFileSystem):
    """Storage options: `mds` (HOST:PORT; default $GEDS_MDS) and the fields of geds_config_t (transport,
    tier0_dir, host_id, name, persistency, timeout_ms, tier0_capacity)."""

    protocol = "geds"
    root_marker = ""
    supports_empty_directories = False

    def __init__(self, mds: str | None = None, **options):
        config = {k: options.pop(k) for k in list(options) if k in Client.option_names()}
        super().__init__(**options)
        self._config = {"mds": mds, **config}
        self._clients: dict[int, Client] = {}
        self._lock = threading.Lock()

    # -- the connection (one per process)

    @property
    def client(self) -> Client:
        pid = os.getpid()
        client = self._clients.get(pid)
        if client is None or client.closed:
            with self._lock:
                client = self._clients.get(pid)
                if client is None or client.closed:  # closed: by its owner, e.g. geds.client.close_all()
                    client = Client.shared(**self._config)
                    self._clients = {pid: client}
        return client

    # -- paths

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("geds://"):
            path = path[len("geds://"):]
        elif path.startswith("geds::"):
            path = path[len("geds::"):]
        return path.strip("/")

    @staticmethod
    def _get_kwargs_from_urls(path):
        return {}

    def split_path(self, path: str) -> tuple[str, str]:
        bucket, _, key = self._strip_protocol(path).partition("/")
        return bucket, key

    def unstrip_protocol(self, name: str) -> str:
        return "geds://" + name

    # -- listing

    def _bucket_entry(self, bucket: str) -> dict:
        return {"name": bucket, "size": 0, "type": "directory"}

    def _object_entry(self, bucket: str, key: str, size: int, modified_ms: int) -> dict:
        return {"name": f"{bucket}/{key}", "size": size, "type": "file", "mtime": modified_ms / 1000,
                "created": modified_ms / 1000}

    def ls(self, path, detail=True, **kwargs):
        bucket, key = self.split_path(path)
        if not bucket:
            entries = [self._bucket_entry(name) for name in self.client.buckets()]
        else:
            prefix = key + "/" if key else ""
            try:
                listing = self.client.list(bucket, prefix, "/")
            except FileNotFoundError:
                raise FileNotFoundError(path) from None
            entries = [{"name": f"{bucket}/{e.name.rstrip('/')}", "size": 0, "type": "directory"} if e.is_prefix
                       else self._object_entry(bucket, e.name, e.size, e.modified_ms) for e in listing]
            if not entries and key:
                entries = [self.info(path)]  # a file lists as itself; raises FileNotFoundError if nothing is there
        return entries if detail else [entry["name"] for entry in entries]

    def info(self, path, **kwargs):
        bucket, key = self.split_path(path)
        if not bucket:
            return {"name": "", "size": 0, "type": "directory"}
        if not key:
            if bucket in self.client.buckets():
                return self._bucket_entry(bucket)
            raise FileNotFoundError(path)
        try:
            stat = self.client.stat(bucket, key)
            return self._object_entry(bucket, key, stat.size, stat.modified_ms)
        except FileNotFoundError:
            pass
        try:
            if next(self.client.iter(bucket, key + "/", "/"), None) is not None:
                return {"name": f"{bucket}/{key}", "size": 0, "type": "directory"}
        except FileNotFoundError:
            pass
        raise FileNotFoundError(path)

    def created(self, path):
        return _utc(int(self.info(path).get("created", 0) * 1000))

    def modified(self, path):
        return _utc(int(self.info(path).get("mtime", 0) * 1000))

    # -- buckets as top-level directories

    def mkdir(self, path, create_parents=True, **kwargs):
        bucket, key = self.split_path(path)
        if not bucket:
            raise ValueError("geds: cannot create the root")
        if key and not create_parents and bucket not in self.client.buckets():
            raise FileNotFoundError(f"no such bucket: {bucket}")
        self.client.create_bucket(bucket)  # deeper levels exist once an object is written under them

    def makedirs(self, path, exist_ok=False):
        if not exist_ok and self.exists(path):
            raise FileExistsError(path)
        self.mkdir(path, create_parents=True)

    def rmdir(self, path):
        bucket, key = self.split_path(path)
        if not key:
            self.client.delete_bucket(bucket)
        # a directory below a bucket exists only while objects are under it: nothing to remove

    # -- bytes

    def cat_file(self, path, start=None, end=None, **kwargs):
        bucket, key = self.split_path(path)
        if start is None and end is None:
            return self.client.get(bucket, key)
        with self.client.reader(bucket, key) as reader:
            start, end = _range(start, end, reader.size)
            return reader.read_range(start, end - start)

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        bucket, key = self.split_path(path)
        # mode="create" is atomic at the MDS: of racing creators exactly one succeeds.
        self.client.put(bucket, key, value, metadata=kwargs.get("metadata"), exclusive=mode == "create")

    def cp_file(self, path1, path2, **kwargs):
        bucket, key = self.split_path(path1)
        to_bucket, to_key = self.split_path(path2)
        if self.isdir(path1):
            return  # no empty directories: the files below are copied one by one
        self.client.copy(bucket, key, to_bucket, to_key)

    def mv(self, path1, path2, recursive=False, maxdepth=None, **kwargs):
        if isinstance(path1, str) and isinstance(path2, str) and not self.isdir(path1) and self.isfile(path1):
            bucket, key = self.split_path(path1)
            to_bucket, to_key = self.split_path(path2)
            if self.isdir(path2):
                to_key = f"{to_key}/{key.rsplit('/', 1)[-1]}".lstrip("/")
            self.client.rename(bucket, key, to_bucket, to_key)  # metadata only: no bytes move
            self.invalidate_cache()
            return
        super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)

    def _rm(self, path):
        bucket, key = self.split_path(path)
        if not key:
            self.client.delete_bucket(bucket)
        elif self.client.exists(bucket, key):
            self.client.delete(bucket, key)
        # else: a directory, gone with its last object

    def rm(self, path, recursive=False, maxdepth=None):
        simple = isinstance(path, str) and not any(c in path for c in "*?[")
        if not (recursive and maxdepth is None and simple):
            return super().rm(path, recursive=recursive, maxdepth=maxdepth)
        bucket, key = self.split_path(path)
        if not key:
            self.client.delete_bucket(bucket, force=True)
            return
        found = self.client.exists(bucket, key)
        if found:
            self.client.delete(bucket, key)
        deleted = self.client.delete_prefix(bucket, key + "/")  # one call at the MDS for a whole subtree
        if not found and not deleted:
            raise FileNotFoundError(path)
        self.invalidate_cache()

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        bucket, key = self.split_path(path)
        if mode not in ("rb", "wb", "xb"):
            raise ValueError(f"geds: mode {mode!r} is not supported: a sealed object never changes, so objects are "
                             "read ('rb') or written whole ('wb', 'xb')")
        return GedsFile(self, path, mode, block_size=block_size or "default", autocommit=autocommit,
                        cache_options=cache_options, **kwargs)

    def view(self, path) -> memoryview:
        """The whole object without copies (see geds.Client.view)."""
        return self.client.view(*self.split_path(path))


def _range(start, end, size):
    start = 0 if start is None else (max(size + start, 0) if start < 0 else min(start, size))
    end = size if end is None else (max(size + end, 0) if end < 0 else min(end, size))
    return start, max(start, end)


class GedsFile(AbstractBufferedFile):
    """Reading: ranged reads through one libgeds reader. Writing: buffered chunks written at their offsets into
    an unsealed object; close seals it (until then nobody sees it; a failed or discarded write publishes nothing)."""

    def __init__(self, fs: GedsFileSystem, path, mode="rb", **kwargs):
        self.bucket, self.key = fs.split_path(path)
        self._reader: Reader | None = None
        self._writer: Writer | None = None
        metadata = kwargs.pop("metadata", None)
        self._metadata = metadata
        if "r" in mode:
            self._reader = fs.client.reader(self.bucket, self.key)
            kwargs["size"] = self._reader.size
        elif "x" in mode:
            # Created now so that "xb" on an existing key fails at open (and atomically at the MDS).
            self._writer = fs.client.create(self.bucket, self.key, exclusive=True)
        super().__init__(fs, path, mode, **kwargs)

    def _fetch_range(self, start, end):
        return self._reader.read_range(start, end - start)

    def _initiate_upload(self):
        if self._writer is None:
            self._writer = self.fs.client.create(self.bucket, self.key)

    def _upload_chunk(self, final=False):
        if self._writer is None:
            self._initiate_upload()
        data = self.buffer.getbuffer()
        self._writer.write_at(data, self.offset)
        del data
        if final:
            self._writer.seal(self._metadata)
            self._writer = None
        return True

    def discard(self):
        if self._writer is not None:
            self._writer.discard()
            self._writer = None

    def close(self):
        try:
            super().close()
        finally:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
