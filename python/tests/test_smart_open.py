"""smart_open.open("geds://bucket/key") in binary and text modes (smart_open ships no conformance suite)."""

from __future__ import annotations

import gzip
import os

import pytest
import smart_open

import geds


def test_binary_round_trip(mds, client, bucket):
    data = os.urandom(20 << 20)
    params = {"mds": mds}
    with smart_open.open(f"geds://{bucket}/blob.bin", "wb", transport_params=params) as handle:
        for start in range(0, len(data), 3 << 20):
            handle.write(data[start:start + (3 << 20)])
    assert client.get(bucket, "blob.bin") == data
    with smart_open.open(f"geds://{bucket}/blob.bin", "rb", transport_params=params) as handle:
        handle.seek(1000)
        assert handle.read(10) == data[1000:1010]
        handle.seek(0)
        assert handle.read() == data


def test_text_lines_and_compression(client, bucket):
    lines = [f"line {i}\n" for i in range(1000)]
    params = {"client": client}
    with smart_open.open(f"geds://{bucket}/text.txt.gz", "w", transport_params=params) as handle:
        handle.writelines(lines)
    assert gzip.decompress(client.get(bucket, "text.txt.gz")).decode() == "".join(lines)
    with smart_open.open(f"geds://{bucket}/text.txt.gz", "r", transport_params=params) as handle:
        assert list(handle) == lines


def test_errors(client, bucket):
    params = {"client": client}
    with pytest.raises(FileNotFoundError):
        smart_open.open(f"geds://{bucket}/missing", "rb", transport_params=params)
    with pytest.raises(ValueError, match="bucket and a key"):
        smart_open.open("geds://only-a-bucket", "rb", transport_params=params)
    with pytest.raises(NotImplementedError):
        smart_open.open(f"geds://{bucket}/x", "ab", transport_params=params)
    with pytest.raises(RuntimeError):
        with smart_open.open(f"geds://{bucket}/failed", "wb", transport_params=params) as handle:
            handle.write(b"partial")
            raise RuntimeError("producer failed")
    assert not client.exists(bucket, "failed")
    assert isinstance(geds.GedsError("x"), Exception)
