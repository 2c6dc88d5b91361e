"""Fixtures of the Python package's tests: a real geds-mds and gedsd (Tests/process/geds_harness.py), started
once per session from $GEDS_BIN (default .build/release), and clients of the installed `geds` package."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "Tests", "process"))

from geds_harness import Cluster  # noqa: E402

import geds  # noqa: E402

HOST_ID = "host-python"


@pytest.fixture(scope="session")
def cluster():
    root = tempfile.mkdtemp(prefix="geds-python-")
    cluster = Cluster(root)
    try:
        cluster.start_mds()
        cluster.start_node("gedsd-py", HOST_ID)
        os.environ["GEDS_MDS"] = cluster.mds_address
        os.environ["GEDS_HOST_ID"] = HOST_ID
        os.environ.setdefault("SWIFT_BACKTRACE", "enable=no")
        yield cluster
    finally:
        geds.client.close_all()  # before the MDS goes: clients left open by fixtures (filesystems, pickles)
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mds(cluster) -> str:
    return cluster.mds_address


@pytest.fixture(scope="session")
def client(mds):
    with geds.connect(mds, host_id=HOST_ID) as connection:
        yield connection


@pytest.fixture
def bucket(client) -> str:
    name = "py-" + uuid.uuid4().hex[:12]
    client.create_bucket(name)
    return name
