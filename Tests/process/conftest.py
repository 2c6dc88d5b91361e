"""Fixtures for the GEDS real-process tests.

One test session runs one `geds-mds` (lease 2 s) and two long-lived `gedsd` on loopback ports:

* node-a, host id `host-a`
* node-b, host id `host-b`

The CLI runs with GEDS_HOST_ID `host-cli` unless a test says otherwise, so by default its reads go over TCP;
with `host-a` it maps node-a's tier-0 files directly. Everything lives under a fresh /dev/shm/geds-test-*
folder that is removed at the end, and every process started is killed at teardown.

Binaries come from $GEDS_BIN, else /work/main/.build/release (build with `swift build -c release`).
"""

from __future__ import annotations

import glob
import itertools
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from geds_harness import BIN, Cluster, binary

_counter = itertools.count(1)


def pytest_configure(config):
    missing = [name for name in ("geds", "geds-mds", "gedsd") if not os.access(binary(name), os.X_OK)]
    if missing:
        raise pytest.UsageError(f"GEDS binaries {missing} not found in {BIN}; run `swift build -c release` "
                                "in /work/main or set GEDS_BIN")


# Basic data paths first, then failure injection, the full-folder tests (which mount a tmpfs) and races last.
FILE_ORDER = ["test_roundtrip.py", "test_commands.py", "test_errors.py", "test_unsealed.py",
              "test_malformed_frames.py", "test_owner_failure.py", "test_full_tier0.py", "test_tier1.py",
              "test_concurrent.py", "test_hostile_input.py"]


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return FILE_ORDER.index(name) if name in FILE_ORDER else len(FILE_ORDER)
    items.sort(key=rank)  # stable: the order inside a file is kept


def remove_root(root: str) -> None:
    # A test that mounted a tmpfs below the root unmounts it itself; be safe anyway.
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in points:
        if point.startswith(root + "/"):
            subprocess.run(["umount", "-l", point], check=False)
    shutil.rmtree(root, ignore_errors=True)


def remove_stale_roots() -> None:
    """Folders of earlier sessions whose pytest was killed before it could clean up (their processes died
    with it, through PR_SET_PDEATHSIG)."""
    for root in glob.glob("/dev/shm/geds-test-*-*"):
        match = re.fullmatch(r"/dev/shm/geds-test-(\d+)-\w+", root)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            remove_root(root)


@pytest.fixture(scope="session")
def session_root():
    remove_stale_roots()
    root = tempfile.mkdtemp(prefix=f"geds-test-{os.getpid()}-", dir="/dev/shm")
    try:
        yield root
    finally:
        remove_root(root)


@pytest.fixture(scope="session")
def cluster(session_root):
    cluster = Cluster(session_root, lease_ms=2000)
    try:
        cluster.start_mds()
        cluster.start_node("node-a", "host-a")
        cluster.start_node("node-b", "host-b")
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def node_a(cluster):
    return next(d for d in cluster.daemons if d.name == "node-a")


@pytest.fixture(scope="session")
def node_b(cluster):
    return next(d for d in cluster.daemons if d.name == "node-b")


@pytest.fixture
def bucket(cluster, request):
    """A fresh, empty bucket for this test."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t{next(_counter)}-{slug}".strip("-")
    cluster.geds("mb", name).ok()
    return name


@pytest.fixture
def workdir(session_root, request):
    """A scratch folder for this test's files, removed afterwards (they can be large)."""
    path = tempfile.mkdtemp(prefix="work-", dir=session_root)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def extra_nodes(cluster):
    """Starts additional gedsd for one test; they are killed afterwards and the test waits until the MDS has
    declared them dead, so that later tests never see a dead node offered as alive."""
    started = []

    def start(name: str, host_id: str, tier0: str | None = None, extra_args: list[str] = ()):
        daemon = cluster.start_node(name, host_id, tier0, extra_args)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.cont()
        daemon.kill()
    for daemon in started:
        cluster.wait_dead(daemon.name, timeout=15)
