"""Hand-made bad frames on raw sockets, against the MDS port and a gedsd port.

After every abuse the servers must keep serving everyone else: a fresh `geds ls` / `geds get` works and the
stored object is byte-identical (read through the CLI and with a raw readBlob)."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from geds_harness import (ERR_FRAME_TOO_LARGE, ERR_PROTOCOL_VIOLATION, KIND_DATA, KIND_REPLY, KIND_REQUEST, MAX_MESSAGE,
                          REP_BUCKETS, REP_FAILURE, REQ_CREATE_BUCKET, REQ_LIST_BUCKETS, REQ_LOOKUP, REQ_PULL_BLOB,
                          REQ_READ_BLOB, RawConnection, frame, header, parse_ls, parse_stat, raw_list_buckets,
                          raw_read_blob, sha256, wire_string, write_random_file, MiB)


class Stored:
    bucket: str
    key: str
    digest: str
    blob: int
    size: int


@pytest.fixture(scope="module")
def stored(cluster, node_a, session_root):
    """One object on node-a that every abuse must leave intact."""
    item = Stored()
    item.bucket, item.key, item.size = "malformed-frames", "precious", MiB + 1
    source = os.path.join(session_root, "malformed-source")
    item.digest = write_random_file(source, item.size)
    cluster.geds("mb", item.bucket).ok()
    cluster.geds("put", source, f"{item.bucket}/{item.key}", "--to", "node-a", host_id="host-a").ok()
    os.remove(source)
    item.blob = int(parse_stat(cluster.geds("stat", f"{item.bucket}/{item.key}").ok().text)["blob"], 16)
    return item


@pytest.fixture(params=["mds", "gedsd"])
def server(request, cluster, node_a):
    return cluster.mds if request.param == "mds" else node_a


def assert_still_serving(cluster, node_a, stored) -> None:
    assert stored.bucket in raw_list_buckets(cluster.mds.host, cluster.mds.port)
    objects, _ = parse_ls(cluster.geds("ls", stored.bucket).ok().text)
    assert objects == {stored.key: stored.size}
    got = cluster.geds("cat", f"{stored.bucket}/{stored.key}", host_id="host-reader").ok()
    assert sha256(got.out) == stored.digest
    assert sha256(raw_read_blob(node_a.host, node_a.port, stored.blob, stored.size)) == stored.digest


def assert_rejected(conn: RawConnection, *codes: int, message: str | None = None, timeout: float = 5) -> None:
    """The server answers with (at most) an error and closes the connection, promptly."""
    try:
        frames = conn.read_until_closed(timeout=timeout)
    except TimeoutError:
        pytest.fail(f"server kept the connection open for {timeout}s after a malformed frame")
    for reply in frames:
        assert reply.kind == KIND_REPLY and reply.tag == REP_FAILURE, f"expected only an error reply, got {reply}"
        code, text = reply.failure()
        if codes:
            assert code in codes, (code, text)
        if message:
            assert message in text, text


@pytest.fixture
def healthy(server):
    """A well-behaved connection opened before the abuse: it must keep working on the same server."""
    conn = RawConnection(server.host, server.port)
    yield conn
    conn.close()


def check_healthy(conn: RawConnection, server, stored) -> None:
    if server.kind == "geds-mds":
        reply = conn.call(1001, bytes([REQ_LIST_BUCKETS]))
        assert reply.tag == REP_BUCKETS
    else:
        conn.send(frame(KIND_REQUEST, 1001, bytes([REQ_READ_BLOB]) + struct.pack(">QQQ", stored.blob, 0, 16)))
        reply = conn.read_frame()
        assert reply is not None and reply.request_id == 1001 and reply.kind == KIND_REPLY
        data = conn.read_frame()
        assert data is not None and data.kind == KIND_DATA and len(data.payload) == 16


def test_garbage_bytes(cluster, node_a, stored, server, healthy):
    with RawConnection(server.host, server.port) as conn:
        conn.send(bytes.fromhex("deadbeef") * 16)
        assert_rejected(conn, ERR_PROTOCOL_VIOLATION, message="bad magic")
    check_healthy(healthy, server, stored)
    assert_still_serving(cluster, node_a, stored)


def test_http_request(cluster, node_a, stored, server):
    # "GE" happens to be the magic; the version byte ('T') is not.
    with RawConnection(server.host, server.port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert_rejected(conn, ERR_PROTOCOL_VIOLATION, message="version")
    assert_still_serving(cluster, node_a, stored)


@pytest.mark.parametrize("kind,length", [(KIND_REQUEST, 0xFFFFFFFF), (KIND_REQUEST, MAX_MESSAGE + 1),
                                         (KIND_DATA, 0xFFFFFFFF), (KIND_REPLY, 0xFFFFFFF0)],
                         ids=["request-4GiB", "request-limit+1", "data-4GiB", "reply-4GiB"])
def test_oversized_frame_header(cluster, node_a, stored, server, healthy, kind, length):
    with RawConnection(server.host, server.port) as conn:
        conn.send(header(kind, 9, length))  # and nothing else: the server must not wait for the payload
        assert_rejected(conn, ERR_FRAME_TOO_LARGE, message="exceeds the limit", timeout=5)
    check_healthy(healthy, server, stored)
    assert_still_serving(cluster, node_a, stored)


def test_bad_version_and_kind(cluster, node_a, stored, server):
    for bad in (header(KIND_REQUEST, 1, 1, version=2) + b"\x06", header(7, 1, 1) + b"\x06", header(0, 1, 0)):
        with RawConnection(server.host, server.port) as conn:
            conn.send(bad)
            assert_rejected(conn, ERR_PROTOCOL_VIOLATION)
    assert_still_serving(cluster, node_a, stored)


def test_truncated_frame_then_close(cluster, node_a, stored, server, healthy):
    with RawConnection(server.host, server.port) as conn:
        conn.send(header(KIND_REQUEST, 3, 100) + b"\x0a" + b"\x00" * 9)
    # Half a header, then close.
    with RawConnection(server.host, server.port) as conn:
        conn.send(header(KIND_REQUEST, 4, 1)[:7])
    # Truncated, then only our sending side closed: the server hangs up too instead of waiting forever.
    with RawConnection(server.host, server.port) as conn:
        conn.send(header(KIND_REQUEST, 5, 100) + b"\x0a\x00\x00")
        conn.sock.shutdown(socket.SHUT_WR)
        assert_rejected(conn)
    check_healthy(healthy, server, stored)
    assert_still_serving(cluster, node_a, stored)


# 43: the first tag after the last request (waitForObject, 42).
@pytest.mark.parametrize("tag", [0, 43, 0xEE, 0xFF])
def test_unknown_request_tag(cluster, node_a, stored, server, tag):
    with RawConnection(server.host, server.port) as conn:
        conn.send(frame(KIND_REQUEST, 11, bytes([tag]) + b"\x00" * 8))
        assert_rejected(conn, ERR_PROTOCOL_VIOLATION, message=f"unknown request {tag}")
    with RawConnection(server.host, server.port) as conn:
        conn.send(frame(KIND_REQUEST, 12, b""))  # no tag at all
        assert_rejected(conn, ERR_PROTOCOL_VIOLATION)
    assert_still_serving(cluster, node_a, stored)


def lying_payloads(stored) -> dict[str, bytes]:
    bucket = stored.bucket.encode()
    return {
        # createBucket: length says 1000, 4 bytes follow.
        "string-longer-than-frame": bytes([REQ_CREATE_BUCKET]) + struct.pack(">I", 1000) + b"abcd",
        # lookup: a string length of 4 GiB - 1.
        "string-length-4GiB": bytes([REQ_LOOKUP]) + struct.pack(">I", 0xFFFFFFFF) + bucket,
        # lookup: the bucket string is fine, the key claims more than is there.
        "second-string-short": bytes([REQ_LOOKUP]) + wire_string(stored.bucket) + struct.pack(">I", 50) + b"key",
        # lookup: a length shorter than the string leaves trailing bytes.
        "string-shorter-than-data": bytes([REQ_LOOKUP]) + struct.pack(">I", 2) + bucket + wire_string(stored.key),
        # pullBlob: the location's node name lies.
        "pull-location-lies": bytes([REQ_PULL_BLOB]) + struct.pack(">QQ", stored.blob, stored.size)
        + struct.pack(">I", 0x7FFFFFFF) + b"node-a",
        # setMetadata (16): 2^31 metadata entries announced.
        "metadata-count-lies": bytes([16]) + wire_string(stored.bucket) + wire_string(stored.key)
        + struct.pack(">I", 0x80000000) + wire_string("a") + wire_string("b"),
        # readBlob with its integers cut short.
        "integers-truncated": bytes([REQ_READ_BLOB]) + struct.pack(">Q", stored.blob) + b"\x00\x00",
        # listBuckets with trailing junk.
        "trailing-bytes": bytes([REQ_LIST_BUCKETS]) + b"junk",
    }


@pytest.mark.parametrize("case", ["string-longer-than-frame", "string-length-4GiB", "second-string-short",
                                  "string-shorter-than-data", "pull-location-lies", "metadata-count-lies",
                                  "integers-truncated", "trailing-bytes"])
def test_lying_lengths(cluster, node_a, stored, server, healthy, case):
    payload = lying_payloads(stored)[case]
    with RawConnection(server.host, server.port) as conn:
        conn.send(frame(KIND_REQUEST, 21, payload))
        assert_rejected(conn, ERR_PROTOCOL_VIOLATION, message="malformed message")
    check_healthy(healthy, server, stored)
    assert_still_serving(cluster, node_a, stored)
    # Nothing was created by the lie.
    assert "abcd" not in raw_list_buckets(cluster.mds.host, cluster.mds.port)


def test_reply_frame_sent_to_server(cluster, node_a, stored, server):
    with RawConnection(server.host, server.port) as conn:
        conn.send(frame(KIND_REPLY, 1, bytes([1])))
        assert_rejected(conn, ERR_PROTOCOL_VIOLATION)
    assert_still_serving(cluster, node_a, stored)


def test_wrong_server_requests_get_an_answer(cluster, node_a, stored):
    """Well-formed requests sent to the wrong kind of server are refused with an error reply to that
    request; the connection stays usable."""
    with RawConnection(cluster.mds.host, cluster.mds.port) as conn:
        reply = conn.call(31, bytes([REQ_READ_BLOB]) + struct.pack(">QQQ", stored.blob, 0, 16))
        assert reply.tag == REP_FAILURE and "MDS holds no object bytes" in reply.failure()[1]
        assert conn.call(32, bytes([REQ_LIST_BUCKETS])).tag == REP_BUCKETS
    with RawConnection(node_a.host, node_a.port) as conn:
        reply = conn.call(33, bytes([REQ_LOOKUP]) + wire_string(stored.bucket) + wire_string(stored.key))
        assert reply.tag == REP_FAILURE and "ask the MDS" in reply.failure()[1]
        # A blob it does not hold, and a range outside the blob.
        reply = conn.call(34, bytes([REQ_READ_BLOB]) + struct.pack(">QQQ", stored.blob + 1000, 0, 1))
        assert reply.tag == REP_FAILURE and "not held here" in reply.failure()[1]
        reply = conn.call(35, bytes([REQ_READ_BLOB]) + struct.pack(">QQQ", stored.blob, stored.size - 1, 2))
        assert reply.tag == REP_FAILURE and "outside blob" in reply.failure()[1]
        reply = conn.call(36, bytes([REQ_READ_BLOB]) + struct.pack(">QQQ", stored.blob, 0xFFFFFFFFFFFFFFF0, 0x20))
        assert reply.tag == REP_FAILURE and "outside blob" in reply.failure()[1]
    assert sha256(raw_read_blob(node_a.host, node_a.port, stored.blob, stored.size)) == stored.digest
    assert_still_serving(cluster, node_a, stored)


def test_many_abusive_connections_at_once(cluster, node_a, stored, server):
    conns = [RawConnection(server.host, server.port) for _ in range(50)]
    try:
        for i, conn in enumerate(conns):
            conn.send(header(KIND_REQUEST, i, 0xFFFFFFFF) if i % 2 else bytes.fromhex("0badf00d") * 4)
        for conn in conns:
            assert_rejected(conn)
    finally:
        for conn in conns:
            conn.close()
    assert_still_serving(cluster, node_a, stored)


def test_fragmented_and_pipelined_requests(cluster, node_a, stored, server):
    """Positive control for the framing: a request trickled in byte by byte, and several requests in one
    write, are each answered correctly (matched by request id)."""
    if server.kind == "geds-mds":
        request, expected_tag = bytes([REQ_LIST_BUCKETS]), REP_BUCKETS
    else:
        request, expected_tag = bytes([REQ_LOOKUP]) + wire_string("b") + wire_string("k"), REP_FAILURE
    with RawConnection(server.host, server.port) as conn:
        for byte in frame(KIND_REQUEST, 77, request):
            conn.send(bytes([byte]))
            time.sleep(0.002)
        reply = conn.read_frame()
        assert reply is not None and reply.request_id == 77 and reply.tag == expected_tag
        conn.send(b"".join(frame(KIND_REQUEST, 100 + i, request) for i in range(20)))
        ids = []
        for _ in range(20):
            reply = conn.read_frame()
            assert reply is not None and reply.tag == expected_tag
            ids.append(reply.request_id)
        assert sorted(ids) == list(range(100, 120))
    assert_still_serving(cluster, node_a, stored)
