"""Several CLI processes on one object at the same time."""

from __future__ import annotations

import os
import subprocess
import time

from geds_harness import MiB, parse_ls, sha256, sha256_file, write_random_file


def test_concurrent_readers(cluster, bucket, workdir):
    """Several readers on different hosts fetch the same object at once; each gets every byte."""
    source = os.path.join(workdir, "source")
    digest = write_random_file(source, 16 * MiB + 1)
    path = f"{bucket}/popular"
    cluster.geds("put", source, path, "--to", "node-a", host_id="host-a").ok()
    readers = []
    for i in range(6):
        out = os.path.join(workdir, f"out-{i}")
        host = "host-a" if i == 0 else f"host-reader-{i}"
        readers.append((out, cluster.popen("get", path, out, host_id=host,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    for out, proc in readers:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert sha256_file(out) == digest


def test_overlapping_puts_to_one_key(cluster, bucket):
    """Two puts of one key overlap: the first is sealed and still being handed to its gedsd when the second
    is sealed. Both puts succeed and readers see exactly one of the two objects."""
    path = f"{bucket}/contended"
    first, second = os.urandom(64 * MiB), os.urandom(100_000)
    writers = [cluster.popen("put", "-", path, "--to", "node-b", host_id=f"host-w{i}",
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for i in range(2)]
    writers[0].stdin.write(first)
    writers[1].stdin.write(second)
    writers[0].stdin.close()  # sealed now; its 64 MiB then travel to node-b over TCP
    time.sleep(0.03)
    writers[1].stdin.close()  # sealed while the first is still being relocated
    errors = []
    for proc in writers:
        proc.wait(timeout=60)
        errors.append((proc.returncode, proc.stderr.read().decode()))
    assert all(rc == 0 for rc, _ in errors), errors
    # As with S3, the put that completes last wins; a put completes when its gedsd holds the bytes, so
    # either may win here, but the object is exactly one of them, never a mix or a lost object.
    data = cluster.geds("cat", path, host_id="host-reader").ok().out
    assert sha256(data) in (sha256(first), sha256(second))
    objects, _ = parse_ls(cluster.geds("ls", bucket).ok().text)
    assert objects == {"contended": len(data)}
    # The writers are gone; the surviving copy is on a gedsd.
    for line in cluster.geds("where", path).ok().lines:
        assert line.split()[0] == "node-b", line
