"""Random and mutated frames thrown at every port of a running deployment (the MDS and two gedsd nodes) for
GEDS_GARBAGE_SECONDS (default 60), then every object stored before must still be readable, byte for byte,
and every server must still answer.

Mutations start from valid requests that only name decoy buckets and objects, so a mutation that happens to
stay valid can only touch decoys (an unauthenticated peer may still delete what it names: that is the token
issue's business, not this test's). Traffic goes to loopback only and stops by itself."""

from __future__ import annotations

import os
import random
import socket
import struct
import time

import pytest

from geds_harness import (KIND_DATA, KIND_REPLY, KIND_REQUEST, MAGIC, REQ_CREATE_BUCKET, REQ_LIST_BUCKETS, REQ_LOOKUP,
                          REQ_READ_BLOB, VERSION, Cluster, MiB, frame, header, parse_stat, raw_list_buckets,
                          raw_read_blob, sha256, wire_string, write_random_file)

SECONDS = float(os.environ.get("GEDS_GARBAGE_SECONDS", "60"))
MAX_CONNECTIONS = 200_000
SIZES = [0, 1, 4096, 64 * 1024 + 3, MiB + 7, 3 * MiB]


@pytest.fixture(scope="module")
def deployment(session_root):
    cluster = Cluster(os.path.join(session_root, "garbage"), lease_ms=2000)
    try:
        cluster.start_mds()
        cluster.start_node("garbage-a", "host-ga")
        cluster.start_node("garbage-b", "host-gb")
        yield cluster
    finally:
        cluster.close()


def store_objects(cluster: Cluster, root: str) -> dict[str, tuple[str, int, int]]:
    """path -> (digest, blob, size), spread over both nodes."""
    cluster.geds("mb", "precious").ok()
    stored = {}
    for index, size in enumerate(SIZES):
        source = os.path.join(root, f"source-{index}")
        digest = write_random_file(source, size)
        path = f"precious/object-{index}"
        node = "garbage-a" if index % 2 == 0 else "garbage-b"
        cluster.geds("put", source, path, "--to", node, host_id=f"host-{node}").ok()
        os.remove(source)
        blob = int(parse_stat(cluster.geds("stat", path).ok().text)["blob"], 16)
        stored[path] = (digest, blob, size)
    return stored


def decoy_requests(rng: random.Random) -> list[bytes]:
    decoy = f"decoy-{rng.randrange(1000)}"
    return [
        bytes([REQ_LIST_BUCKETS]),
        bytes([REQ_CREATE_BUCKET]) + wire_string(decoy),
        bytes([REQ_LOOKUP]) + wire_string(decoy) + wire_string("k"),
        bytes([REQ_READ_BLOB]) + struct.pack(">QQQ", rng.getrandbits(64), 0, 4096),
    ]


def garbage(rng: random.Random) -> bytes:
    """One connection's worth of bad input."""
    choice = rng.randrange(7)
    if choice == 0:  # noise
        return rng.randbytes(rng.randrange(1, 4096))
    if choice == 1:  # a valid header, then noise of the announced length
        payload = rng.randbytes(rng.randrange(0, 2048))
        return header(rng.choice([KIND_REQUEST, KIND_REPLY, KIND_DATA]), rng.getrandbits(64), len(payload)) + payload
    if choice == 2:  # a header that lies about the length (shorter or longer than what follows, or huge)
        payload = rng.randbytes(rng.randrange(0, 256))
        length = rng.choice([len(payload) + rng.randrange(1, 64), max(0, len(payload) - 1), rng.getrandbits(32)])
        return header(KIND_REQUEST, rng.getrandbits(64), length) + payload
    if choice == 3:  # a random tag with a random payload
        return frame(KIND_REQUEST, rng.getrandbits(64), bytes([rng.randrange(256)]) + rng.randbytes(rng.randrange(0, 64)))
    if choice == 4:  # a valid request with bytes flipped after its tag
        payload = bytearray(rng.choice(decoy_requests(rng)))
        for _ in range(rng.randrange(1, 4)):
            if len(payload) > 1:
                payload[rng.randrange(1, len(payload))] = rng.randrange(256)
        return frame(KIND_REQUEST, rng.getrandbits(64), bytes(payload))
    if choice == 5:  # a valid frame cut short, or with bytes added
        whole = frame(KIND_REQUEST, rng.getrandbits(64), rng.choice(decoy_requests(rng)))
        return whole[:rng.randrange(len(whole))] if rng.random() < 0.5 else whole + rng.randbytes(rng.randrange(1, 64))
    # a bad magic or version in front of a valid payload
    body = rng.choice(decoy_requests(rng))
    return struct.pack(">HBBQI", rng.choice([MAGIC ^ 1, MAGIC]), rng.choice([VERSION + 1, 0, VERSION]),
                       KIND_REQUEST, 1, len(body)) + body


def throw(host: str, port: int, data: bytes) -> None:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(data)
            sock.settimeout(0.05)
            try:
                while sock.recv(65536):
                    pass
            except (socket.timeout, ConnectionResetError):
                pass
    except (ConnectionResetError, BrokenPipeError, socket.timeout):
        pass  # the server dropped us: what it should do with garbage


def test_garbage_on_every_port_loses_nothing(deployment, session_root):
    stored = store_objects(deployment, session_root)
    servers = [deployment.mds] + [d for d in deployment.daemons if d.name.startswith("garbage-")]
    assert len(servers) == 3
    rng = random.Random(20261206)
    thrown = 0
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline and thrown < MAX_CONNECTIONS:
        server = servers[thrown % len(servers)]
        throw(server.host, server.port, garbage(rng))
        thrown += 1
    print(f"garbage: {thrown} connections in {SECONDS:.0f} s over {len(servers)} ports")
    for server in servers:
        assert server.proc.poll() is None, f"{server.name} died: {server.log_tail()}"
        # Every connection we dropped was closed on the server's side too: its descriptors are back to a few.
        deployment.wait_until(lambda: len(os.listdir(f"/proc/{server.proc.pid}/fd")) < 100, timeout=10,
                              what=f"{server.name} to close the garbage connections")
    assert "precious" in raw_list_buckets(deployment.mds.host, deployment.mds.port)
    nodes = {d.name: d for d in servers[1:]}
    for index, (path, (digest, blob, size)) in enumerate(stored.items()):
        got = deployment.geds("cat", path, host_id="host-garbage-reader").ok()
        assert sha256(got.out) == digest, path
        owner = nodes["garbage-a" if index % 2 == 0 else "garbage-b"]
        if size:
            assert sha256(raw_read_blob(owner.host, owner.port, blob, size)) == digest, path
