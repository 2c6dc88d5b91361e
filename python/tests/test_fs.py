"""GedsFileSystem beyond fsspec's abstract suite: listing with inferred directories, ranged cat_file, rename,
prefix delete, buckets as directories, times, pickling, the entry point, and pandas through a geds:// URL."""

from __future__ import annotations

import datetime
import os
import pickle

import fsspec
import pandas
import pytest

from geds.fs import GedsFileSystem


@pytest.fixture
def fs(mds):
    return GedsFileSystem(mds=mds)


@pytest.fixture
def tree(fs, bucket):
    for key in ("data/a.csv", "data/b.csv", "data/sub/c.csv", "top.txt"):
        fs.pipe_file(f"{bucket}/{key}", key.encode() * 3)
    return bucket


def test_registered_through_the_entry_point(mds):
    assert fsspec.get_filesystem_class("geds") is GedsFileSystem
    assert isinstance(fsspec.filesystem("geds", mds=mds), GedsFileSystem)


def test_listing_infers_directories(fs, tree):
    assert fs.ls(tree, detail=False) == [f"{tree}/data", f"{tree}/top.txt"]
    assert fs.ls(f"geds://{tree}/data/", detail=False) == [f"{tree}/data/a.csv", f"{tree}/data/b.csv",
                                                            f"{tree}/data/sub"]
    assert fs.info(f"{tree}/data")["type"] == "directory"
    info = fs.info(f"{tree}/data/a.csv")
    assert info["type"] == "file" and info["size"] == len(b"data/a.csv") * 3
    assert fs.find(tree) == [f"{tree}/data/a.csv", f"{tree}/data/b.csv", f"{tree}/data/sub/c.csv", f"{tree}/top.txt"]
    assert fs.glob(f"{tree}/data/*.csv") == [f"{tree}/data/a.csv", f"{tree}/data/b.csv"]
    assert fs.glob(f"geds://{tree}/**/c.csv") == [f"{tree}/data/sub/c.csv"]
    assert fs.du(tree) == sum(len(k.encode()) * 3 for k in ("data/a.csv", "data/b.csv", "data/sub/c.csv", "top.txt"))
    assert tree in fs.ls("", detail=False)
    with pytest.raises(FileNotFoundError):
        fs.info(f"{tree}/nothing")
    with pytest.raises(FileNotFoundError):
        fs.ls(f"{tree}/nothing")


def test_ranged_cat_file(fs, bucket):
    data = os.urandom(100_000)
    fs.pipe_file(f"{bucket}/r", data)
    assert fs.cat_file(f"{bucket}/r", start=10, end=20) == data[10:20]
    assert fs.cat_file(f"{bucket}/r", start=-100) == data[-100:]
    assert fs.cat_file(f"{bucket}/r", start=99_990, end=200_000) == data[99_990:]
    assert fs.cat_ranges([f"{bucket}/r"] * 2, [0, 50], [5, 60]) == [data[0:5], data[50:60]]
    with fs.open(f"{bucket}/r", "rb", block_size=4096) as handle:
        handle.seek(50_000)
        assert handle.read(1000) == data[50_000:51_000]
    assert bytes(fs.view(f"{bucket}/r")) == data


def test_pipe_file_create_is_exclusive(fs, bucket):
    fs.pipe_file(f"{bucket}/once", b"first", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file(f"{bucket}/once", b"second", mode="create")
    assert fs.cat_file(f"{bucket}/once") == b"first"
    with pytest.raises(FileExistsError):
        fs.open(f"{bucket}/once", "xb")
    with fs.open(f"{bucket}/fresh", "xb") as handle:
        handle.write(b"made once")
    assert fs.cat_file(f"{bucket}/fresh") == b"made once"


def test_buffered_writes_are_sealed_at_close(fs, bucket):
    path = f"{bucket}/big.bin"
    data = os.urandom(12 << 20)
    with fs.open(path, "wb", block_size=5 << 20) as handle:
        for start in range(0, len(data), 1 << 20):
            handle.write(data[start:start + (1 << 20)])
        assert not fs.exists(path)  # invisible until sealed
    assert fs.cat_file(path) == data


def test_mv_is_a_rename_and_rm_recursive_a_prefix_delete(fs, tree):
    fs.mv(f"{tree}/top.txt", f"{tree}/moved.txt")
    assert not fs.exists(f"{tree}/top.txt") and fs.cat_file(f"{tree}/moved.txt") == b"top.txt" * 3
    fs.cp_file(f"{tree}/moved.txt", f"{tree}/copy.txt")
    assert fs.cat_file(f"{tree}/copy.txt") == b"top.txt" * 3
    fs.rm(f"{tree}/data", recursive=True)
    assert fs.ls(tree, detail=False) == [f"{tree}/copy.txt", f"{tree}/moved.txt"]
    with pytest.raises(FileNotFoundError):
        fs.rm(f"{tree}/data", recursive=True)
    fs.rm(tree, recursive=True)
    assert not fs.exists(tree)


def test_buckets_are_top_level_directories(fs):
    fs.makedirs("py-made-bucket/deeper", exist_ok=True)
    assert fs.isdir("py-made-bucket")
    with pytest.raises(FileExistsError):
        fs.makedirs("py-made-bucket", exist_ok=False)
    fs.rmdir("py-made-bucket")
    assert not fs.exists("py-made-bucket")


def test_times(fs, bucket):
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    fs.pipe_file(f"{bucket}/t", b"t")
    modified = fs.modified(f"{bucket}/t")
    assert before <= modified <= datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5)
    assert fs.created(f"{bucket}/t") == modified  # objects are immutable: sealed once


def test_pickled_filesystem_works(fs, bucket):
    fs.pipe_file(f"{bucket}/p", b"pickled")
    clone = pickle.loads(pickle.dumps(fs))
    assert clone.cat_file(f"{bucket}/p") == b"pickled"


def test_pandas_csv_through_a_geds_url(mds, bucket):
    frame = pandas.DataFrame({"id": range(1000), "name": [f"row-{i}" for i in range(1000)],
                              "value": [i * 0.5 for i in range(1000)]})
    url = f"geds://{bucket}/tables/frame.csv"
    frame.to_csv(url, index=False, storage_options={"mds": mds})
    back = pandas.read_csv(url, storage_options={"mds": mds})
    pandas.testing.assert_frame_equal(back, frame)


def test_bad_input(fs, bucket):
    import geds

    with pytest.raises(geds.InvalidName):
        fs.pipe_file("Bad_Bucket/key", b"x")
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{bucket}/missing")
    with pytest.raises(FileNotFoundError):
        fs.open(f"{bucket}/missing", "rb")
    with pytest.raises(FileNotFoundError):
        fs.pipe_file("no-such-bucket-at-all/key", b"x")
    with pytest.raises(ValueError):
        fs.open(f"{bucket}/appended", "ab")  # a sealed object never changes
    handle = fs.open(f"{bucket}/twice", "wb")
    handle.write(b"data")
    handle.close()
    handle.close()  # closing twice is harmless and seals once
    assert fs.cat_file(f"{bucket}/twice") == b"data"
