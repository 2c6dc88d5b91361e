"""Bytes in, same bytes out: single objects of awkward sizes through every read path, and folder trees."""

from __future__ import annotations

import os

import pytest

from geds_harness import MiB, parse_ls, parse_stat, resting_bytes, sha256, sha256_file, write_random_file

SIZES = [0, 1, 4095, 4097, MiB + 1, 64 * MiB + 3]
PACK_LIMIT = 64 * 1024



@pytest.mark.parametrize("size", SIZES, ids=[f"size-{s}" for s in SIZES])
def test_object_round_trip(cluster, node_a, bucket, workdir, size):
    source = os.path.join(workdir, "source")
    digest = write_random_file(source, size)
    path = f"{bucket}/object-{size}"

    # Written by a CLI on node-a's host and handed to node-a (a hard link, no copy).
    cluster.geds("put", source, path, "--to", "node-a", host_id="host-a").ok()

    info = parse_stat(cluster.geds("stat", path).ok().text)
    assert info["size"] == str(size)
    assert info["sealed"] == "true"
    assert info["copies"] == "1"
    assert info["locations"][0].startswith("tier0 on node-a (host host-a"), info
    # The bytes at rest in node-a's tier 0 are the bytes written; small ones packed into a slab.
    resting = resting_bytes(node_a.tier0, info["blob"], size)
    assert resting is not None and len(resting) == size and sha256(resting) == digest
    assert os.path.exists(os.path.join(node_a.tier0, info["blob"])) == (size == 0 or size > PACK_LIMIT)

    # A reader on another host: a TCP transfer from node-a.
    remote = os.path.join(workdir, "remote")
    cluster.geds("get", path, remote, host_id="host-reader").ok()
    assert os.path.getsize(remote) == size
    assert sha256_file(remote) == digest
    os.remove(remote)

    cat = cluster.geds("cat", path, host_id="host-reader").ok()
    assert len(cat.out) == size
    assert sha256(cat.out) == digest

    # A reader on the owner's host maps node-a's file.
    local = os.path.join(workdir, "local")
    cluster.geds("get", path, local, host_id="host-a").ok()
    assert sha256_file(local) == digest
    os.remove(local)

    cat = cluster.geds("cat", path, host_id="host-a").ok()
    assert sha256(cat.out) == digest

    stdout = cluster.geds("get", path, "-", host_id="host-reader").ok()
    assert sha256(stdout.out) == digest

    # Reads are not writes: still exactly one copy, on node-a.
    info = parse_stat(cluster.geds("stat", path).ok().text)
    assert info["copies"] == "1" and info["locations"][0].startswith("tier0 on node-a")


def test_same_host_read_needs_no_owner_process(cluster, node_a, bucket, workdir):
    """A reader with the owner's host id maps the tier-0 file: it works even while the owner is frozen
    (well inside the 2 s lease), whereas a reader on another host has to wait for the owner."""
    source = os.path.join(workdir, "source")
    digest = write_random_file(source, MiB + 1)
    path = f"{bucket}/frozen-owner"
    cluster.geds("put", source, path, "--to", "node-a", host_id="host-a").ok()

    node_a.stop()
    try:
        local = cluster.geds("cat", path, host_id="host-a", timeout_ms=3000, timeout=20)
        remote = cluster.geds("cat", path, host_id="host-reader", timeout_ms=300, timeout=20)
    finally:
        node_a.cont()
    local.ok()
    assert sha256(local.out) == digest
    remote.fails(r"node-a")
    assert remote.out == b""
    # node-a serves again (should a slow machine have stretched the freeze past the lease, node-a registers
    # again on its next heartbeat and offers its copies back).
    cluster.wait_until(lambda: cluster.geds("cat", path, host_id="host-reader").rc == 0, 10, "node-a to serve again")
    assert sha256(cluster.geds("cat", path, host_id="host-reader").ok().out) == digest


def test_put_from_stdin_and_default_placement(cluster, bucket):
    data = os.urandom(300_000)
    path = f"{bucket}/from-stdin"
    cluster.geds("put", "-", path, input=data).ok()
    info = parse_stat(cluster.geds("stat", path).ok().text)
    assert info["size"] == str(len(data))
    # Without --to the object still goes to one of the long-lived nodes, never stays with the CLI.
    assert len(info["locations"]) == 1
    assert info["locations"][0].split()[2] in ("node-a", "node-b"), info
    assert sha256(cluster.geds("cat", path).ok().out) == sha256(data)


def test_mds_from_environment(cluster, bucket):
    data = b"configured through GEDS_MDS\n"
    env = {"GEDS_MDS": cluster.mds_address}
    cluster.geds("put", "-", f"{bucket}/env", "--to", "node-b", input=data, mds=None, env=env).ok()
    assert cluster.geds("cat", f"{bucket}/env", mds=None, env=env).ok().out == data


TREE = {
    "top.txt": 10,
    "empty": 0,
    "sub/one.bin": 4097,
    "sub/two.bin": 70_000,
    "sub/deeper/three.bin": MiB + 1,
    "sub/deeper/deepest/four": 1,
    "other/five.dat": 12_345,
}


def test_recursive_put_and_get(cluster, bucket, workdir):
    tree = os.path.join(workdir, "tree")
    digests = {rel: write_random_file(os.path.join(tree, rel), size) for rel, size in TREE.items()}

    cluster.geds("put", "--recursive", tree, f"{bucket}/data/", "--to", "node-b", host_id="host-b").ok()
    # A neighbour prefix that a recursive get of data/ must not pick up.
    cluster.geds("put", "-", f"{bucket}/data2/not-mine", "--to", "node-a", input=b"x").ok()

    objects, _ = parse_ls(cluster.geds("ls", f"{bucket}/data/").ok().text)
    assert objects == {f"data/{rel}": size for rel, size in TREE.items()}

    out = os.path.join(workdir, "out")
    cluster.geds("get", "--recursive", f"{bucket}/data/", out, host_id="host-reader").ok()
    found = {}
    for folder, _, files in os.walk(out):
        for name in files:
            full = os.path.join(folder, name)
            found[os.path.relpath(full, out)] = sha256_file(full)
    assert found == digests

    # Same-host recursive get (mapping path) gives the same tree.
    out_local = os.path.join(workdir, "out-local")
    cluster.geds("get", "--recursive", f"{bucket}/data/", out_local, host_id="host-b").ok()
    for rel, digest in digests.items():
        assert sha256_file(os.path.join(out_local, rel)) == digest
