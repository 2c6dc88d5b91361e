"""Object keys come from whoever writes to the store; a reader's machine must not be at their mercy."""

from __future__ import annotations

import os


def files_under(folder: str) -> set[str]:
    found = set()
    for parent, _, files in os.walk(folder):
        for name in files:
            found.add(os.path.relpath(os.path.join(parent, name), folder))
    return found


def test_recursive_get_stays_inside_destination(cluster, bucket, workdir):
    """Keys with '..' components are legal (as in S3), but `get --recursive` must never write outside the
    destination folder: it may refuse such a key or skip it, not follow it."""
    cluster.geds("put", "-", f"{bucket}/data/ok", "--to", "node-a", input=b"fine").ok()
    cluster.geds("put", "-", f"{bucket}/data/../../escaped", "--to", "node-a", input=b"evil").ok()
    cluster.geds("put", "-", f"{bucket}/data/sub/../../../also-escaped", "--to", "node-a", input=b"evil").ok()

    destination = os.path.join(workdir, "a", "b", "out")
    os.makedirs(destination)
    result = cluster.geds("get", "--recursive", f"{bucket}/data/", destination)

    outside = {path for path in files_under(workdir) if not path.startswith(os.path.join("a", "b", "out") + "/")}
    assert outside == set(), f"get --recursive wrote outside {destination}: {sorted(outside)}\n{result.describe()}"
    if result.rc == 0:
        with open(os.path.join(destination, "ok"), "rb") as handle:
            assert handle.read() == b"fine"
    else:
        result.fails()
