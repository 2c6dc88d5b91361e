"""Bad input gets one clear `geds: ...` line on stderr and a non-zero exit, and changes nothing."""

from __future__ import annotations

import os
import socket

import pytest

from geds_harness import parse_ls

INVALID_BUCKETS = {
    "UpperCase": "lowercase",
    "ab": "3 to 63",
    "a" * 64: "3 to 63",
    "a..b": "adjacent periods",
    "192.168.1.1": "IP address",
    ".leading": "begin and end",
    "trailing-": "begin and end",
    "under_score": "lowercase",
    "xn--punycode": "xn--",
}


@pytest.mark.parametrize("name", list(INVALID_BUCKETS), ids=lambda n: n[:20])
def test_invalid_bucket_names(cluster, name):
    reason = INVALID_BUCKETS[name]
    cluster.geds("mb", name).fails(r"invalid bucket name", reason)
    cluster.geds("put", "-", f"{name}/key", "--to", "node-a", input=b"x").fails(r"invalid bucket name")
    cluster.geds("get", f"{name}/key", "-").fails(r"invalid bucket name")
    cluster.geds("ls", name).fails(r"invalid bucket name")
    assert name not in cluster.geds("ls").ok().lines


def test_invalid_keys(cluster, bucket, workdir):
    cluster.geds("put", "-", f"{bucket}/", "--to", "node-a", input=b"x").fails(r"invalid object key", "1 to 1024")
    cluster.geds("put", "-", f"{bucket}/{'k' * 1025}", "--to", "node-a", input=b"x").fails(r"invalid object key")
    cluster.geds("put", "-", f"{bucket}/tab\there", "--to", "node-a", input=b"x").fails(r"control characters")
    cluster.geds("put", "-", bucket, "--to", "node-a", input=b"x").fails(r"BUCKET/KEY")
    cluster.geds("get", f"{bucket}/", "-").fails(r"invalid object key")
    cluster.geds("stat", bucket).fails(r"BUCKET/KEY")
    cluster.geds("cp", f"{bucket}/missing", f"{bucket}/").fails(r"invalid object key")
    # The longest legal key works.
    longest = "k" * 1024
    cluster.geds("put", "-", f"{bucket}/{longest}", "--to", "node-a", input=b"ok").ok()
    assert cluster.geds("cat", f"{bucket}/{longest}").ok().out == b"ok"
    objects, _ = parse_ls(cluster.geds("ls", bucket).ok().text)
    assert list(objects) == [longest]


def test_missing_bucket(cluster, workdir):
    missing = "no-such-bucket-here"
    out = os.path.join(workdir, "out")
    cluster.geds("get", f"{missing}/key", out).fails(f"no such bucket: {missing}")
    assert not os.path.exists(out)
    cluster.geds("cat", f"{missing}/key").fails("no such bucket")
    cluster.geds("stat", f"{missing}/key").fails("no such bucket")
    cluster.geds("ls", missing).fails("no such bucket")
    cluster.geds("put", "-", f"{missing}/key", "--to", "node-a", input=b"x").fails("no such bucket")
    cluster.geds("rm", f"{missing}/key").fails("no such bucket")
    cluster.geds("rm", "--prefix", f"{missing}/p").fails("no such bucket")
    cluster.geds("rb", missing).fails("no such bucket")
    assert missing not in cluster.geds("ls").ok().lines


def test_missing_object(cluster, bucket, workdir):
    out = os.path.join(workdir, "out")
    cluster.geds("get", f"{bucket}/nope", out).fails(f"no such object: {bucket}/nope")
    assert not os.path.exists(out), "a failed get must not create its output file"
    cluster.geds("cat", f"{bucket}/nope").fails("no such object")
    cluster.geds("stat", f"{bucket}/nope").fails("no such object")
    cluster.geds("where", f"{bucket}/nope").fails("no such object")
    cluster.geds("meta", f"{bucket}/nope").fails("no such object")
    cluster.geds("rm", f"{bucket}/nope").fails("no such object")
    cluster.geds("mv", f"{bucket}/nope", f"{bucket}/other").fails("no such object")
    cluster.geds("cp", f"{bucket}/nope", f"{bucket}/other").fails("no such object")
    assert cluster.geds("ls", bucket).ok().out == b""


def test_bad_local_paths_and_nodes(cluster, bucket, workdir):
    cluster.geds("put", os.path.join(workdir, "absent"), f"{bucket}/k", "--to", "node-a").fails("cannot open")
    cluster.geds("put", "--recursive", os.path.join(workdir, "absent"), f"{bucket}/p/").fails("not a folder")
    cluster.geds("put", "-", f"{bucket}/k", "--to", "no-such-node", input=b"x").fails("no live node named")
    assert cluster.geds("ls", bucket).ok().out == b"", "failed puts must not leave objects behind"

    cluster.geds("put", "-", f"{bucket}/k", "--to", "node-a", input=b"data").ok()
    cluster.geds("get", f"{bucket}/k", os.path.join(workdir, "no", "such", "dir", "file")).fails("cannot create")
    assert cluster.geds("cat", f"{bucket}/k").ok().out == b"data"


def test_mds_unreachable(cluster, workdir):
    for args in (["ls"], ["mb", "some-bucket"], ["get", "some-bucket/key", os.path.join(workdir, "x")],
                 ["put", "-", "some-bucket/key"]):
        result = cluster.geds(*args, mds="127.0.0.1:1", input=b"x", timeout=30)
        result.fails(r"^geds: MDS unreachable at 127\.0\.0\.1:1")
        assert result.elapsed < 10, result.describe()
    assert not os.path.exists(os.path.join(workdir, "x"))


def test_mds_silent_times_out(cluster):
    """An MDS address that accepts connections but never answers: the CLI gives up after --timeout-ms."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    try:
        result = cluster.geds("ls", mds=f"127.0.0.1:{port}", timeout_ms=500, timeout=30)
    finally:
        listener.close()
    result.fails(r"MDS|500 ms|timed out|did not answer")
    assert result.elapsed < 10, result.describe()


def test_bad_mds_address(cluster):
    cluster.geds("ls", mds="not-an-address").fails("HOST:PORT")
