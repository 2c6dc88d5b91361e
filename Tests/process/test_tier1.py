"""Tier 1 and spilling: a gedsd with a 64 MiB tier 0 and a tier 1 on the repository's disk (O_DIRECT).

Objects put beyond the tier-0 capacity spill to tier 1, least recently used first; `geds stat` then shows
`tier1 on NODE`; reading a spilled object promotes it back; nothing is lost. Without a tier 1, a capacity is a
hard limit: puts beyond it fail with a clear out-of-space error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import pytest

from geds_harness import MiB, binary, parse_ls, parse_stat, sha256, sha256_file, write_random_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OBJECTS = 50
OBJECT = 4 * MiB  # 200 MiB in all, through a 64 MiB tier 0


@pytest.fixture
def tier1_folder():
    """On the repository's file system (ext4 here), which takes O_DIRECT; /dev/shm would too on this kernel."""
    parent = os.path.join(REPO, ".build", "tmp")
    os.makedirs(parent, exist_ok=True)
    path = tempfile.mkdtemp(prefix="tier1-", dir=parent)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tiered_node(extra_nodes, tier1_folder):
    return extra_nodes("node-t1", "host-t1", extra_args=["--tier0-capacity", "64MiB", "--tier1", tier1_folder,
                                                          "--tier1-capacity", "1GiB"])


def tiers_of(cluster, path: str) -> list[str]:
    info = parse_stat(cluster.geds("stat", path).ok().text)
    assert info["copies"] == str(len(info["locations"])), info
    return [location.split()[0] + " " + location.split()[2] for location in info["locations"]]


def settle(folder: str) -> None:
    """Waits until a background spill pass is over: the tier-1 folder stops changing."""
    last = None
    for _ in range(100):
        now = sorted(os.listdir(folder))
        if now == last:
            return
        last = now
        time.sleep(0.3)


def test_spill_to_tier1_and_promote_back(cluster, tiered_node, tier1_folder, bucket, workdir):
    source = os.path.join(workdir, "in")
    os.makedirs(source)
    digests = {f"obj-{i:02d}": write_random_file(os.path.join(source, f"obj-{i:02d}"), OBJECT) for i in range(OBJECTS)}
    cluster.geds("put", "--recursive", source, f"{bucket}/", "--to", "node-t1", timeout=300).ok()
    settle(tier1_folder)

    objects, _ = parse_ls(cluster.geds("ls", bucket).ok().text)
    assert sorted(objects) == sorted(digests)
    where = {key: tiers_of(cluster, f"{bucket}/{key}") for key in digests}
    for key, copies in where.items():
        assert len(copies) == 1 and copies[0] in ("tier0 node-t1", "tier1 node-t1"), (key, copies)
    spilled = [key for key, copies in where.items() if copies == ["tier1 node-t1"]]
    in_memory = [key for key, copies in where.items() if copies == ["tier0 node-t1"]]
    # 200 MiB through 64 MiB: at least 136 MiB is in tier 1, at most 64 MiB in tier 0.
    assert len(in_memory) * OBJECT <= 64 * MiB, where
    assert len(spilled) >= (OBJECTS * OBJECT - 64 * MiB) // OBJECT, where
    # Least recently used first: the first objects put are the ones spilled.
    assert "obj-00" in spilled and f"obj-{OBJECTS - 1:02d}" in in_memory, where
    files = os.listdir(tier1_folder)
    assert len([name for name in files if len(name) == 16]) == len(spilled), files

    # Every object reads back intact, spilled ones too (promoted back into tier 0 by the owner).
    out = os.path.join(workdir, "out")
    cluster.geds("get", "--recursive", f"{bucket}/", out, timeout=300).ok()
    settle(tier1_folder)
    for key, digest in digests.items():
        assert sha256_file(os.path.join(out, key)) == digest, key
    # The last objects read are in tier 0 now; the earliest were spilled again to make room for them.
    assert tiers_of(cluster, f"{bucket}/obj-{OBJECTS - 1:02d}") == ["tier0 node-t1"]
    assert tiers_of(cluster, f"{bucket}/obj-00") == ["tier1 node-t1"]

    # A reader on the owner's host cannot map a tier-1 file: it asks the owner, which promotes it.
    assert sha256(cluster.geds("cat", f"{bucket}/obj-00", host_id="host-t1").ok().out) == digests["obj-00"]
    settle(tier1_folder)
    assert tiers_of(cluster, f"{bucket}/obj-00") == ["tier0 node-t1"]
    # Ranged reads of spilled objects, from another host.
    assert sha256(cluster.geds("cat", f"{bucket}/obj-01").ok().out) == digests["obj-01"]

    # Deleting objects frees tier 1 too (the owner drops them with its next heartbeat).
    cluster.geds("rm", "--prefix", f"{bucket}/").ok()
    cluster.wait_until(lambda: not [n for n in os.listdir(tier1_folder) if len(n) == 16], 10,
                       "tier-1 files of deleted objects to go")


def test_capacity_without_tier1_is_a_hard_limit(cluster, extra_nodes, bucket):
    extra_nodes("node-cap", "host-cap", extra_args=["--tier0-capacity", "8MiB"])
    stored = {}
    for i in range(10):
        data = os.urandom(1536 * 1024)
        result = cluster.geds("put", "-", f"{bucket}/o{i}", "--to", "node-cap", input=data)
        if result.rc != 0:
            result.fails("out of space", "tier 0 of node node-cap is full", "no tier 1")
            break
        stored[f"{bucket}/o{i}"] = sha256(data)
    else:
        pytest.fail("ten puts of 1.5 MiB into an 8 MiB tier 0 all succeeded")
    assert len(stored) == 5, stored  # 5 x 1.5 MiB fit in 8 MiB, a sixth does not
    for path, digest in stored.items():
        assert sha256(cluster.geds("cat", path).ok().out) == digest
        assert tiers_of(cluster, path) == ["tier0 node-cap"]


@pytest.mark.parametrize("args, message", [
    (["--tier1", "/tmp/x", "--tier1-capacity", "1GiB"], "--tier1 needs --tier0-capacity"),
    (["--tier0-capacity", "64MiB", "--tier1", "/tmp/x"], "--tier1 needs --tier1-capacity"),
    (["--tier0-capacity", "64MiB", "--tier1-capacity", "1GiB"], "--tier1-capacity needs --tier1"),
    (["--tier0-capacity", "lots"], "bad size 'lots'"),
])
def test_bad_tier_flags(cluster, session_root, args, message):
    result = subprocess.run([binary("gedsd"), "--mds", cluster.mds_address, "--tier0",
                             os.path.join(session_root, "tier0-badflags"), *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and message in result.stderr, result


def test_full_tier1_is_a_clear_error_and_loses_nothing(cluster, extra_nodes, tier1_folder, bucket):
    extra_nodes("node-t1full", "host-t1full", extra_args=["--tier0-capacity", "8MiB", "--tier1", tier1_folder,
                                                           "--tier1-capacity", "8MiB"])
    stored = {}
    for i in range(20):
        data = os.urandom(1536 * 1024)
        result = cluster.geds("put", "-", f"{bucket}/o{i:02d}", "--to", "node-t1full", input=data)
        if result.rc != 0:
            result.fails("out of space", "nothing more could be spilled to tier 1")
            break
        stored[f"{bucket}/o{i:02d}"] = sha256(data)
    else:
        pytest.fail("twenty puts of 1.5 MiB into 8 MiB of tier 0 and 8 MiB of tier 1 all succeeded")
    assert len(stored) >= 8, stored  # both tiers were used
    for path, digest in stored.items():
        assert sha256(cluster.geds("cat", path).ok().out) == digest, path


def test_readers_race_spills(cluster, tiered_node, tier1_folder, bucket):
    """Readers on the owner's host (mapping its tier-0 files) and elsewhere keep reading the first objects while
    later puts spill them to tier 1 and reads promote them back: every read succeeds with the right bytes."""
    digests = {}
    first = [f"{bucket}/early-{i}" for i in range(4)]
    for path in first:
        data = os.urandom(4 * MiB)
        cluster.geds("put", "-", path, "--to", "node-t1", input=data).ok()
        digests[path] = sha256(data)
    readers = [cluster.popen("cat", path, host_id=host, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for path in first for host in ("host-t1", "host-cli")]
    outcomes = []
    moved = set()
    for i in range(30):
        cluster.geds("put", "-", f"{bucket}/late-{i:02d}", "--to", "node-t1", input=os.urandom(4 * MiB)).ok()
        for index, proc in enumerate(readers):
            if proc.poll() is not None:
                out, err = proc.communicate()
                outcomes.append((first[index // 2], proc.returncode, sha256(out), err))
                readers[index] = cluster.popen("cat", first[index // 2], host_id=("host-t1", "host-cli")[index % 2],
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        moved.update(path for path in first if tiers_of(cluster, path) == ["tier1 node-t1"])
    for index, proc in enumerate(readers):
        out, err = proc.communicate(timeout=60)
        outcomes.append((first[index // 2], proc.returncode, sha256(out), err))
    assert moved, "no early object was spilled while they were read"
    for path, rc, digest, err in outcomes:
        assert rc == 0 and digest == digests[path], (path, rc, err)
