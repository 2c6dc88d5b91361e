"""fsspec's own abstract test suite (every class fsspec ships: copy, get, put, pipe, open) against GedsFileSystem
on a real MDS and gedsd. Nothing skipped: GEDS has no empty directories, which the suite allows for."""

from __future__ import annotations

import uuid

import fsspec.tests.abstract as abstract
import pytest

from geds.fs import GedsFileSystem


class GedsFixtures(abstract.AbstractFixtures):
    @pytest.fixture(scope="class")
    def fs(self, mds):
        fs = GedsFileSystem(mds=mds, skip_instance_cache=True)
        yield fs
        fs.client.close()

    @pytest.fixture
    def fs_path(self, fs):
        bucket = "abstract-" + uuid.uuid4().hex[:12]
        fs.mkdir(bucket)
        yield bucket
        fs.client.delete_bucket(bucket, force=True)

    @pytest.fixture
    def supports_empty_directories(self):
        return False


class TestGedsCopy(abstract.AbstractCopyTests, GedsFixtures):
    pass


class TestGedsGet(abstract.AbstractGetTests, GedsFixtures):
    pass


class TestGedsPut(abstract.AbstractPutTests, GedsFixtures):
    pass


class TestGedsPipe(abstract.AbstractPipeTests, GedsFixtures):
    pass


class TestGedsOpen(abstract.AbstractOpenTests, GedsFixtures):
    pass
