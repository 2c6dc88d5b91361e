"""Objects being written are invisible to other processes until sealed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from geds_harness import cli_tier0_dirs, parse_ls, sha256


def start_streaming_put(cluster, path: str, node: str = "node-b") -> subprocess.Popen:
    return cluster.popen("put", "-", path, "--to", node, host_id="host-writer",
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_not_sealed(cluster, path: str, out: str):
    """Polls until a reader is told the object is not sealed (the writer has created it)."""
    def attempt():
        result = cluster.geds("get", path, out, host_id="host-reader")
        return result if "not sealed" in result.err else None
    return cluster.wait_until(attempt, 10, f"{path} to exist unsealed", interval=0.05)


def finish(writer: subprocess.Popen, data: bytes) -> None:
    out, err = writer.communicate(input=data, timeout=60)  # writes, then closes the pipe
    assert writer.returncode == 0, f"streaming put failed: rc={writer.returncode} stderr={err!r}"


def test_get_of_unsealed_object_fails_until_sealed(cluster, bucket, workdir):
    path = f"{bucket}/streaming"
    out = os.path.join(workdir, "out")
    first, second = os.urandom(1024 * 1024 + 7), os.urandom(300_001)
    writer = start_streaming_put(cluster, path)
    try:
        writer.stdin.write(first)
        writer.stdin.flush()

        result = wait_not_sealed(cluster, path, out)
        result.fails("not sealed")
        assert not os.path.exists(out), "a failed get must not create its output file"
        cluster.geds("cat", path, host_id="host-reader").fails("not sealed")
        cluster.geds("stat", path).fails("not sealed")
        cluster.geds("get", path, "-", host_id="host-writer").fails("not sealed")
        objects, _ = parse_ls(cluster.geds("ls", bucket).ok().text)
        assert objects == {}, "an unsealed object must not be listed"

        # The producer is slower than a lease: the writer must keep its object alive meanwhile.
        time.sleep(2.5)
        cluster.geds("cat", path, host_id="host-reader").fails("not sealed")
        finish(writer, second)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()

    cluster.geds("get", path, out, host_id="host-reader").ok()
    with open(out, "rb") as handle:
        assert sha256(handle.read()) == sha256(first + second)
    objects, _ = parse_ls(cluster.geds("ls", bucket).ok().text)
    assert objects == {"streaming": len(first) + len(second)}


def test_old_version_stays_readable_while_new_one_is_written(cluster, bucket, workdir):
    path = f"{bucket}/versioned"
    old, new = os.urandom(10_000), os.urandom(20_000)
    cluster.geds("put", "-", path, "--to", "node-a", input=old).ok()

    writer = start_streaming_put(cluster, path)
    try:
        writer.stdin.write(new[:5000])
        writer.stdin.flush()
        # Wait until the new version exists (unsealed), visible as a pending object: rb refuses the bucket.
        cluster.wait_until(lambda: "not empty" in cluster.geds("rb", bucket).err, 10, "the pending object")
        for _ in range(3):
            assert cluster.geds("cat", path, host_id="host-reader").ok().out == old
        finish(writer, new[5000:])
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert cluster.geds("cat", path, host_id="host-reader").ok().out == new
    assert cluster.geds("cat", path, host_id="host-a").ok().out == new


def test_writer_killed_before_sealing_leaves_nothing(cluster, bucket, workdir):
    path = f"{bucket}/abandoned"
    out = os.path.join(workdir, "out")
    writer = start_streaming_put(cluster, path)
    try:
        writer.stdin.write(os.urandom(100_000))
        writer.stdin.flush()
        wait_not_sealed(cluster, path, out)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        for leftover in cli_tier0_dirs(writer.pid):
            shutil.rmtree(leftover, ignore_errors=True)

    # Once the writer's lease has run out (2 s) the half-written object is forgotten.
    cluster.wait_until(lambda: "no such object" in cluster.geds("get", path, out).err, 10,
                       "the abandoned object to be forgotten")
    cluster.geds("get", path, out).fails("no such object")
    assert not os.path.exists(out)
    assert cluster.geds("ls", bucket).ok().out == b""
    # Nothing pending any more: the bucket is empty.
    cluster.geds("rb", bucket).ok()
