"""A gedsd whose tier-0 folder is a small tmpfs (8 MiB) that fills up.

The CLI's own tier 0 is always /dev/shm/geds-cli-*, so the full folder is on the gedsd side: a put hands the
object to the gedsd, which reserves the space for its copy and fails with ENOSPC when there is none."""

from __future__ import annotations

import os
import subprocess
import tempfile

import pytest

from geds_harness import MiB, parse_ls, parse_stat, sha256

OBJECT = 1536 * 1024  # 1.5 MiB: an 8 MiB folder holds five
SPACE = r"No space left on device|out of space"


@pytest.fixture
def full_node(cluster, session_root):
    point = tempfile.mkdtemp(prefix="small-tmpfs-", dir=session_root)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", point],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        os.rmdir(point)
        pytest.skip(f"cannot mount a tmpfs for the full-folder test (needs root/CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip()}")
    daemon = None
    try:
        daemon = cluster.start_node("node-full", "host-full", tier0=point)
        yield daemon
    finally:
        if daemon is not None:
            daemon.kill()
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
        os.rmdir(point)
        if daemon is not None:
            cluster.wait_dead("node-full", timeout=15)


def fill(cluster, bucket: str, limit: int = 20):
    """Puts 1.5 MiB objects on node-full until one fails; returns ({path: sha256}, the failed put, its path)."""
    stored = {}
    for i in range(limit):
        data = os.urandom(OBJECT)
        path = f"{bucket}/fill-{i:02d}"
        result = cluster.geds("put", "-", path, "--to", "node-full", input=data)
        if result.rc != 0:
            return stored, result, path
        stored[path] = sha256(data)
    pytest.fail(f"{limit} puts of {OBJECT} bytes into an 8 MiB folder all succeeded")


def assert_all_intact(cluster, stored: dict) -> None:
    for path, digest in stored.items():
        assert sha256(cluster.geds("cat", path, host_id="host-reader").ok().out) == digest, path
        assert sha256(cluster.geds("cat", path, host_id="host-full").ok().out) == digest, path


def test_put_into_full_folder_fails_cleanly(cluster, full_node, bucket):
    stored, failure, _ = fill(cluster, bucket)
    assert len(stored) >= 3, f"only {len(stored)} objects fit in 8 MiB: {failure.describe()}"
    failure.fails(SPACE)
    assert_all_intact(cluster, stored)
    for path in stored:
        info = parse_stat(cluster.geds("stat", path).ok().text)
        assert info["copies"] == "1" and info["locations"][0].startswith("tier0 on node-full"), info

    # Still full: another put fails the same way, and the node keeps serving what it has.
    cluster.geds("put", "-", f"{bucket}/one-more", "--to", "node-full", input=os.urandom(OBJECT)).fails(SPACE)
    assert_all_intact(cluster, stored)
    # Other nodes are unaffected.
    cluster.geds("put", "-", f"{bucket}/elsewhere", "--to", "node-b", input=b"fine").ok()
    assert cluster.geds("cat", f"{bucket}/elsewhere").ok().out == b"fine"


def test_space_is_reclaimed_after_rm(cluster, full_node, bucket):
    stored, failure, _ = fill(cluster, bucket)
    failure.fails(SPACE)
    doomed = sorted(stored)[:2]
    for path in doomed:
        cluster.geds("rm", path).ok()
        del stored[path]
    # The owner deletes the files on its next heartbeat; then there is room again.
    data = os.urandom(OBJECT)
    path = f"{bucket}/after-rm"
    cluster.wait_until(lambda: cluster.geds("put", "-", path, "--to", "node-full", input=data).rc == 0, 10,
                       "space to be reclaimed after rm")
    stored[path] = sha256(data)
    assert_all_intact(cluster, stored)


def test_failed_put_leaves_no_unreadable_object(cluster, full_node, bucket):
    """A put that failed must not leave its key behind as an object that is listed but cannot be read."""
    stored, failure, failed_path = fill(cluster, bucket)
    failure.fails(SPACE)
    key = failed_path.split("/", 1)[1]
    objects, _ = parse_ls(cluster.geds("ls", bucket).ok().text)
    assert key not in objects, f"the failed put left {failed_path} listed: {objects}"
    cluster.geds("get", failed_path, "-").fails("no such object")
    assert_all_intact(cluster, stored)


def test_failed_overwrite_keeps_previous_version(cluster, full_node, bucket):
    """Overwriting a key with a put that fails for lack of space keeps the old bytes under the key."""
    stored, failure, _ = fill(cluster, bucket)
    failure.fails(SPACE)
    victim = sorted(stored)[0]
    cluster.geds("put", "-", victim, "--to", "node-full", input=os.urandom(3 * MiB)).fails(SPACE)
    assert_all_intact(cluster, stored)
