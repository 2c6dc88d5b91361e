"""smart_open transport for `geds://bucket/key` (registered when `geds` is imported with smart_open installed).

    smart_open.open("geds://bucket/key", "rb", transport_params={"mds": "HOST:PORT"})

transport_params: `client` (a geds.Client to use), else `mds` and any geds.connect option (one client per
process and options is shared); `buffer_size` of the buffered file (default 8 MiB); `metadata` for writes."""

from __future__ import annotations

import io

from .client import Client, ObjectFile

SCHEME = "geds"
URI_EXAMPLES = ("geds://bucket/key", "geds://bucket/folder/key.csv")
DEFAULT_BUFFER_SIZE = 8 << 20


def parse_uri(uri_as_string: str) -> dict:
    prefix = SCHEME + "://"
    if not uri_as_string.startswith(prefix):
        raise ValueError(f"not a geds:// URI: {uri_as_string!r}")
    bucket, _, key = uri_as_string[len(prefix):].partition("/")
    if not bucket or not key:
        raise ValueError(f"a geds URI names a bucket and a key (geds://bucket/key): {uri_as_string!r}")
    return {"scheme": SCHEME, "bucket": bucket, "key": key}


def open_uri(uri: str, mode: str, transport_params: dict):
    parsed = parse_uri(uri)
    return open(parsed["bucket"], parsed["key"], mode, **transport_params)


class _Writer(io.BufferedWriter):
    """Seals the object at close; leaving a `with` block by an exception publishes nothing."""

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.raw.abort()


def open(bucket: str, key: str, mode: str, client: Client | None = None, buffer_size: int = DEFAULT_BUFFER_SIZE,
         metadata: dict | None = None, **connect_options):
    client = client or Client.shared(**connect_options)
    if mode == "rb":
        return io.BufferedReader(client.open(bucket, key, "rb"), buffer_size=buffer_size)
    if mode == "wb":
        return _Writer(ObjectFile(client.create(bucket, key), "wb", metadata), buffer_size=buffer_size)
    raise NotImplementedError(f"geds: smart_open mode {mode!r} is not supported (objects are read 'rb' or "
                              "written whole 'wb'; a sealed object never changes)")
