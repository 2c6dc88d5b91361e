"""`geds drain NODE`: a gedsd hands every object it holds (tier 0 and tier 1) to the other gedsd nodes, then leaves
and exits; a drain that cannot finish says why and the node keeps serving."""

from __future__ import annotations

import os
import shutil
import tempfile

from geds_harness import Cluster, sha256, sha256_file


def write_tree(root: str, sizes: dict[str, int]) -> dict[str, str]:
    digests = {}
    for name, size in sizes.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = os.urandom(size)
        with open(path, "wb") as handle:
            handle.write(data)
        digests[name] = sha256(data)
    return digests


def test_drain_moves_every_object_and_the_node_exits(cluster, extra_nodes, bucket, workdir):
    tier1 = tempfile.mkdtemp(prefix="drain-tier1-", dir=workdir)
    # A small tier 0, so that the big objects spill to tier 1 and the drain must move those too.
    node = extra_nodes("node-drain", "host-drain", extra_args=["--tier0-capacity", "8MiB", "--tier1", tier1,
                                                              "--tier1-capacity", "1GiB"])
    sizes = {f"small/{i:04d}": 1 + (i * 37) % 4096 for i in range(1000)}
    sizes.update({f"big/{i}": (3 << 20) + i for i in range(4)})
    tree = os.path.join(workdir, "tree")
    digests = write_tree(tree, sizes)
    cluster.geds("put", "--recursive", tree, f"{bucket}/", "--to", "node-drain").ok()
    assert os.listdir(tier1), "the big objects spilled to tier 1"
    where = cluster.geds("where", f"{bucket}/big/0").ok().text
    assert "node-drain" in where

    drained = cluster.geds("drain", "node-drain", "--timeout", "120", timeout=150).ok()
    assert "drained node-drain" in drained.text
    assert node.proc.wait(timeout=15) == 0, node.log_tail()
    assert "drained, flushing write-backs and leaving" in node.log_tail(40)
    assert cluster.node_states()["node-drain"] == "dead"

    out = os.path.join(workdir, "back")
    cluster.geds("get", "--recursive", f"{bucket}/", out, host_id="host-reader").ok()
    for name, digest in digests.items():
        assert sha256_file(os.path.join(out, name)) == digest, name
    for key in ("big/0", "small/0999"):
        assert "node-drain" not in cluster.geds("where", f"{bucket}/{key}").ok().text


def test_a_drain_that_cannot_finish_says_why_and_the_node_serves_on(session_root):
    root = tempfile.mkdtemp(prefix="drain-alone-", dir=session_root)
    alone = Cluster(root)
    try:
        alone.start_mds()
        solo = alone.start_node("solo", "host-solo")
        alone.geds("mb", "kept").ok()
        data = os.urandom(100_000)
        alone.geds("put", "-", "kept/object", "--to", "solo", input=data).ok()

        failed = alone.geds("drain", "solo", "--timeout", "30", timeout=60)
        failed.fails("drain of solo cannot finish", "no other live gedsd")
        assert solo.proc.poll() is None, "the node keeps serving"
        line = next(line for line in alone.geds("nodes").ok().lines if line.startswith("solo "))
        assert " alive " in line and "drain-failed: no other live gedsd" in line and " draining" not in line
        assert sha256(alone.geds("cat", "kept/object", host_id="host-reader").ok().out) == sha256(data)
        # An unknown node is refused.
        alone.geds("drain", "no-such-node").fails("no live node named 'no-such-node'")
    finally:
        alone.close()
        shutil.rmtree(root, ignore_errors=True)
