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


# MARK: checksums kept by the MDS, corrupt files, restarts

_CRC32C_TABLE = []
for _byte in range(256):
    _crc = _byte
    for _ in range(8):
        _crc = (_crc >> 1) ^ 0x82F63B78 if _crc & 1 else _crc >> 1
    _CRC32C_TABLE.append(_crc)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as Tier1Store computes it; pure Python, so keep the inputs small."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x20]))


def put_and_spill(cluster, bucket: str, node: str, folder: str, count: int, size: int) -> tuple[dict, dict, list]:
    """Puts `count` random objects on `node`; returns their bytes, blob file names, and the keys spilled to tier 1."""
    data, blobs = {}, {}
    for i in range(count):
        key = f"o{i:02d}"
        data[key] = os.urandom(size)
        cluster.geds("put", "-", f"{bucket}/{key}", "--to", node, input=data[key]).ok()
    settle(folder)
    spilled = []
    for key in data:
        info = parse_stat(cluster.geds("stat", f"{bucket}/{key}").ok().text)
        blobs[key] = info["blob"]
        if [location.split()[0] for location in info["locations"]] == ["tier1"]:
            spilled.append(key)
    return data, blobs, spilled


def test_the_mds_keeps_the_tier1_checksum(cluster, extra_nodes, tier1_folder, bucket):
    extra_nodes("node-crc", "host-crc", extra_args=["--tier0-capacity", "4MiB", "--tier1", tier1_folder,
                                                     "--tier1-capacity", "64MiB"])
    data, blobs, spilled = put_and_spill(cluster, bucket, "node-crc", tier1_folder, 8, 512 * 1024)
    assert spilled, "nothing was spilled"
    for key in data:
        info = parse_stat(cluster.geds("stat", f"{bucket}/{key}").ok().text)
        if key in spilled:
            # The checksum the MDS hands out is the CRC-32C of the bytes written.
            assert info["crc32c"] == f"{crc32c(data[key]):08x}", key
        else:
            assert "crc32c" not in info, (key, info)


def test_a_corrupt_tier1_file_is_a_clear_error_and_loses_nothing_else(cluster, extra_nodes, tier1_folder, bucket):
    """A spilled file truncated, another with a flipped byte, under a running gedsd: reading either fails with
    `checksum mismatch` naming the object, the MDS withdraws that copy, and every other object reads intact."""
    extra_nodes("node-bad", "host-bad", extra_args=["--tier0-capacity", "8MiB", "--tier1", tier1_folder,
                                                     "--tier1-capacity", "256MiB"])
    data, blobs, spilled = put_and_spill(cluster, bucket, "node-bad", tier1_folder, 16, 1 * MiB)
    assert len(spilled) >= 4, spilled
    truncated, flipped = spilled[0], spilled[1]
    os.truncate(os.path.join(tier1_folder, blobs[truncated]), 1 * MiB - 4096)
    flip_byte(os.path.join(tier1_folder, blobs[flipped]), 300_000)

    for key in (truncated, flipped):
        cluster.geds("cat", f"{bucket}/{key}").fails("checksum mismatch", f"{bucket}/{key}", "node-bad")
        # The corrupt copy was withdrawn and its file deleted: the object now says it has no copy left.
        assert parse_stat(cluster.geds("stat", f"{bucket}/{key}").ok().text)["copies"] == "0"
        assert blobs[key] not in os.listdir(tier1_folder)
        cluster.geds("cat", f"{bucket}/{key}").fails("no copy left")
    for key, payload in data.items():
        if key not in (truncated, flipped):
            assert sha256(cluster.geds("cat", f"{bucket}/{key}").ok().out) == sha256(payload), key


def test_a_restarted_node_offers_back_the_tier1_files_the_mds_still_knows(cluster, extra_nodes, tier1_folder, bucket):
    """kill -9 a gedsd holding spilled objects, meanwhile delete some objects and damage some files, restart it
    with the same tier-1 folder: the intact files of known objects are offered back and read from another node
    with the bytes written; the files of deleted objects and the damaged ones are removed."""
    args = ["--tier0-capacity", "8MiB", "--tier1", tier1_folder, "--tier1-capacity", "256MiB"]
    node = extra_nodes("node-rs", "host-rs", extra_args=args)
    data, blobs, spilled = put_and_spill(cluster, bucket, "node-rs", tier1_folder, 24, 1 * MiB)
    assert len(spilled) >= 10, spilled
    node.kill()

    deleted, flipped, forged = spilled[:2], spilled[2], spilled[3]
    for key in deleted:
        cluster.geds("rm", f"{bucket}/{key}").ok()
    flip_byte(os.path.join(tier1_folder, blobs[flipped]), 123_456)
    # The forged file's own record is rewritten to match its damaged bytes: only the MDS's checksum tells.
    forged_path = os.path.join(tier1_folder, blobs[forged])
    flip_byte(forged_path, 654_321)
    with open(forged_path, "rb") as handle:
        damaged = handle.read()
    os.setxattr(forged_path, "user.geds.tier1", f"{len(damaged)} {crc32c(damaged):08x}".encode())
    # A stray partial write of the dead process goes too.
    with open(os.path.join(tier1_folder, "00000000000000aa.partial"), "wb") as handle:
        handle.write(b"x" * 100)

    restarted = extra_nodes("node-rs", "host-rs", tier0=node.tier0, extra_args=args)
    kept = [key for key in spilled if key not in deleted and key not in (flipped, forged)]
    assert sorted(os.listdir(tier1_folder)) == sorted(blobs[key] for key in kept)
    log = open(restarted.log, errors="replace").read()
    assert f"offered back {len(kept)} object(s) left by an earlier process; removed 4" in log, log
    assert log.count("checksum mismatch") == 2, log

    for key in kept:
        assert tiers_of(cluster, f"{bucket}/{key}") == ["tier1 node-rs"], key
        assert sha256(cluster.geds("cat", f"{bucket}/{key}").ok().out) == sha256(data[key]), key
    for key in deleted:
        cluster.geds("cat", f"{bucket}/{key}").fails("no such object")
    for key in (flipped, forged):
        cluster.geds("cat", f"{bucket}/{key}").fails("no copy left")
    # Objects that were in tier 0 (memory) when the process died are gone with it.
    for key in data:
        if key not in spilled:
            cluster.geds("cat", f"{bucket}/{key}").fails("no copy left")
