"""The geds package against a real MDS and gedsd: bytes round trips (digests), the Pythonic API, errors as
Python exceptions carrying libgeds' messages, zero-copy views that outlive a delete, and write-through to moto."""

from __future__ import annotations

import gc
import hashlib
import io
import os
import pickle
import threading
import time
import uuid

import numpy
import pytest

import geds

MiB = 1 << 20


def digest(data) -> str:
    return hashlib.sha256(data).hexdigest()


def test_connect_is_a_context_manager_and_closing_twice_is_harmless(mds, bucket):
    with geds.connect(mds) as client:
        client.put(bucket, "ctx", b"x" * 10)
        assert client.get(bucket, "ctx") == b"x" * 10
    assert client.closed
    client.close()
    with pytest.raises(geds.GedsError, match="closed"):
        client.get(bucket, "ctx")


def test_put_get_sizes_and_metadata(client, bucket):
    for size in (0, 1, 2, 4096, 3 * MiB + 7):
        data = os.urandom(size)
        client.put(bucket, f"obj/{size}", data, metadata={"size": str(size), "kind": "random"})
        got = client.get(bucket, f"obj/{size}")
        assert type(got) is bytes and digest(got) == digest(data)
        assert client.stat(bucket, f"obj/{size}").size == size
        assert client.metadata(bucket, f"obj/{size}") == {"size": str(size), "kind": "random"}
    # put takes any bytes-like object without copying it
    array = numpy.arange(1000, dtype=numpy.int64)
    client.put(bucket, "numpy", array)
    assert numpy.array_equal(numpy.frombuffer(client.get(bucket, "numpy"), dtype=numpy.int64), array)
    client.set_metadata(bucket, "numpy", {"dtype": "int64"})
    assert client.metadata(bucket, "numpy") == {"dtype": "int64"}


def test_large_gets_land_whole_while_their_pages_are_populated(client, bucket):
    # Past 8 MiB libgeds has a thread make a new destination's pages present while the read lands in it (16 MiB
    # at a time): every byte, the short last stretch and a ranged tail land where they belong.
    data = os.urandom(40 * MiB + 123)
    client.put(bucket, "large", data)
    got = client.get(bucket, "large")
    assert type(got) is bytes and digest(got) == digest(data)
    assert digest(client.read(bucket, "large", 5 * MiB + 3)) == digest(data[5 * MiB + 3:])
    assert digest(client.read(bucket, "large", 7, 20 * MiB)) == digest(data[7:20 * MiB + 7])


def test_ranged_reads(client, bucket):
    data = os.urandom(1 * MiB)
    client.put(bucket, "ranged", data)
    assert client.read(bucket, "ranged", 1000, 5000) == data[1000:6000]
    assert client.read(bucket, "ranged", len(data) - 10, 100) == data[-10:]
    assert client.read(bucket, "ranged", 500) == data[500:]
    buffer = bytearray(4096)
    assert client.read_into(bucket, "ranged", buffer, 4096) == 4096 and buffer == data[4096:8192]


def test_open_is_a_raw_file(client, bucket):
    with client.open(bucket, "file.bin", "wb") as handle:
        assert isinstance(handle, io.RawIOBase) and handle.writable()
        handle.write(b"hello ")
        handle.write(memoryview(b"world"))
    with client.open(bucket, "file.bin", "rb") as handle:
        assert handle.readable() and handle.seekable()
        assert handle.read(5) == b"hello"
        assert handle.seek(-5, io.SEEK_END) == 6 and handle.read() == b"world"
        handle.seek(0)
        buffer = bytearray(20)
        assert handle.readinto(buffer) == 11 and buffer[:11] == b"hello world"
        assert handle.read() == b""
    buffered = io.BufferedReader(client.open(bucket, "file.bin", "rb"))
    assert buffered.read() == b"hello world"
    buffered.close()
    with pytest.raises(FileExistsError):
        client.open(bucket, "file.bin", "xb")


def test_exclusive_create_has_one_winner_among_racing_writers(client, bucket):
    """All writers pass the create (nothing is sealed yet); the MDS lets exactly one seal, atomically."""
    writers = [client.create(bucket, "contended", exclusive=True) for _ in range(8)]
    payloads = [os.urandom(4096) for _ in writers]
    for writer, payload in zip(writers, payloads):
        writer.write_at(payload, 0)
    start, outcomes = threading.Barrier(len(writers)), [None] * len(writers)

    def seal(index):
        start.wait()
        try:
            writers[index].seal()
            outcomes[index] = "sealed"
        except geds.ObjectExists as error:
            outcomes[index] = error

    threads = [threading.Thread(target=seal, args=(index,)) for index in range(len(writers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("sealed") == 1, outcomes
    assert all(isinstance(outcome, FileExistsError) for outcome in outcomes if outcome != "sealed")
    winner = outcomes.index("sealed")
    assert digest(client.get(bucket, "contended")) == digest(payloads[winner])
    with pytest.raises(geds.ObjectExists, match="object exists"):
        client.put(bucket, "contended", b"late", exclusive=True)
    client.put(bucket, "contended", b"overwrite")  # not exclusive: replaces as before
    assert client.get(bucket, "contended") == b"overwrite"


def test_a_failed_write_publishes_nothing(client, bucket):
    with pytest.raises(RuntimeError):
        with client.open(bucket, "aborted", "wb") as handle:
            handle.write(b"partial")
            raise RuntimeError("the producer failed")
    assert not client.exists(bucket, "aborted")


def test_list_delete_rename_copy(client, bucket):
    for key in ("a/1", "a/2", "a/b/3", "c"):
        client.put(bucket, key, key.encode())
    assert [e.name for e in client.list(bucket)] == ["a/1", "a/2", "a/b/3", "c"]
    top = client.list(bucket, delimiter="/")
    assert [(e.name, e.is_prefix) for e in top] == [("a/", True), ("c", False)]
    assert [e.name for e in client.list(bucket, "a/", "/")] == ["a/1", "a/2", "a/b/"]
    client.rename(bucket, "c", bucket, "d")
    assert not client.exists(bucket, "c") and client.get(bucket, "d") == b"c"
    client.copy(bucket, "d", bucket, "e")
    assert client.get(bucket, "e") == b"c" and client.get(bucket, "d") == b"c"
    assert client.delete_prefix(bucket, "a/") == 3
    client.delete(bucket, "d")
    assert [e.name for e in client.list(bucket)] == ["e"]
    assert bucket in client.buckets()
    locations = client.locations(bucket, "e")
    assert locations and all("tier0" in location.detail for location in locations)


def test_errors_are_python_exceptions_with_the_library_message(client, bucket):
    with pytest.raises(FileNotFoundError) as missing:
        client.get(bucket, "no/such/key")
    assert isinstance(missing.value, geds.NoSuchObject) and isinstance(missing.value, geds.GedsError)
    assert "no/such/key" in str(missing.value) and missing.value.code == -4
    with pytest.raises(geds.NoSuchBucket):
        client.stat("no-such-bucket-here", "k")
    with pytest.raises(geds.InvalidName, match="bucket name"):
        client.create_bucket("Bad_Bucket")
    with pytest.raises(ValueError):
        client.put(bucket, "", b"empty key")
    with pytest.raises(geds.BucketNotEmpty):
        client.put(bucket, "keep", b"1")
        client.delete_bucket(bucket)
    with pytest.raises(TypeError):
        client.put(bucket, 42, b"not a str key")
    with pytest.raises(TypeError, match="unknown GEDS option"):
        geds.connect(colour="blue")


def test_an_attached_lookup_goes_straight_to_the_mds_and_a_copy_on_this_host_is_mapped(client, bucket, cluster):
    data = os.urandom(300_000)  # neither inline at the MDS nor packed into a slab: a tier-0 file of its own
    client.put(bucket, "looked-up", data)
    gedsd = next(daemon for daemon in cluster.daemons if daemon.kind == "gedsd")
    gedsd.stop()  # SIGSTOP: whatever still answers does not go through the gedsd
    resume = threading.Timer(1.0, gedsd.cont)
    try:
        assert client.stat(bucket, "looked-up").size == len(data)
        view = client.view(bucket, "looked-up")  # the gedsd's tier-0 file, mapped from its path
        assert digest(bytes(view)) == digest(data)
        view.release()
        assert digest(client.get(bucket, "looked-up")) == digest(data)
        assert client.read(bucket, "looked-up", offset=123_457, length=1000) == data[123_457:124_457]
        with pytest.raises(geds.NoSuchObject):  # a miss asks the gedsd (its S3 store), which answers once it runs
            resume.start()
            started = time.monotonic()
            client.stat(bucket, "not-there")
        assert time.monotonic() - started >= 0.9, "the miss did not wait for the gedsd: is the client attached?"
    finally:
        resume.cancel()  # never left to resume the gedsd in the middle of the next test
        gedsd.cont()
    assert digest(client.get(bucket, "looked-up")) == digest(data)


def test_put_is_one_call_through_the_attached_gedsd_and_reads_back_what_was_written(client, bucket):
    # Up to 64 KiB one request to the gedsd (geds_put_flags), beyond it create + write + seal: the same results.
    for size in (0, 1, 4096, 64 * 1024, 64 * 1024 + 1, 1 << 20):
        data = os.urandom(size)
        client.put(bucket, f"p{size}", memoryview(data), metadata={"size": str(size)})
        assert digest(client.get(bucket, f"p{size}")) == digest(data)
        assert client.stat(bucket, f"p{size}").size == size
        assert client.metadata(bucket, f"p{size}") == {"size": str(size)}
    with pytest.raises(geds.ObjectExists):
        client.put(bucket, "p4096", b"x", exclusive=True)
    assert client.stat(bucket, "p4096").size == 4096
    client.put(bucket, "fresh", bytearray(b"once"), exclusive=True)
    assert client.get(bucket, "fresh") == b"once"
    with pytest.raises(geds.NoSuchBucket):
        client.put("no-such-bucket-py", "k", b"x")
    with pytest.raises(geds.InvalidName):
        client.put(bucket, "", b"x")
    with pytest.raises(geds.InvalidArgument):
        client.put(bucket, "bad-metadata", b"x", metadata={"": "x"})
    with pytest.raises(geds.NoSuchObject):
        client.stat(bucket, "bad-metadata")


def test_an_attached_call_fails_once_the_gedsd_is_found_stopped(mds, bucket, cluster):
    gedsd = next(daemon for daemon in cluster.daemons if daemon.kind == "gedsd")
    with geds.connect(mds, host_id="host-python", timeout_ms=1000) as attached:
        attached.put(bucket, "before", b"ok")
        gedsd.stop()  # SIGSTOP: a create goes through the gedsd, which cannot answer
        try:
            started = time.monotonic()
            with pytest.raises(geds.TimedOut, match="is stopped"):
                attached.put(bucket, "while-stopped", b"x" * 100)
            assert time.monotonic() - started < 5
        finally:
            gedsd.cont()
        # The gedsd runs again: the next call attaches again, and nothing stored was lost.
        data = os.urandom(3000)
        attached.put(bucket, "after", data)
        assert digest(attached.get(bucket, "after")) == digest(data)
        assert attached.get(bucket, "before") == b"ok"


def test_replicas_live_on_distinct_hosts(client, bucket, cluster):
    second = cluster.start_node("gedsd-py-2", "host-python-2")
    try:
        data = os.urandom(300_000)
        client.put(bucket, "twice", data, replicas=2)
        hosts = {location.detail.rsplit("host=", 1)[-1] for location in client.locations(bucket, "twice")}
        assert hosts == {"host-python", "host-python-2"}, hosts
        assert digest(client.get(bucket, "twice")) == digest(data)
        with pytest.raises(geds.GedsError, match="distinct hosts"):  # two hosts cannot hold three copies
            client.put(bucket, "thrice", data, replicas=3)
        with pytest.raises(ValueError):
            client.put(bucket, "too-many", data, replicas=17)
        with pytest.raises(geds.NoSuchObject):  # the refused seal published nothing
            client.stat(bucket, "thrice")
    finally:
        second.proc.terminate()  # a clean stop leaves the MDS at once, so later tests never pick this node
        second.proc.wait(timeout=30)


def test_writing_to_a_sealed_object_is_refused(client, bucket):
    writer = client.create(bucket, "sealed")
    writer.write_at(b"abc", 0)
    writer.seal()
    with pytest.raises(ValueError, match="sealed"):
        writer.write_at(b"more", 3)
    with pytest.raises(ValueError, match="sealed"):
        writer.seal()
    handle = client.open(bucket, "sealed", "rb")
    with pytest.raises(io.UnsupportedOperation):
        handle.write(b"x")
    handle.close()
    handle.close()  # closing twice is harmless
    with pytest.raises(ValueError, match="closed"):
        handle.read()
    assert client.get(bucket, "sealed") == b"abc"


def test_unreachable_mds_is_a_connection_error():
    with pytest.raises(ConnectionError) as error:
        geds.connect("127.0.0.1:1", timeout_ms=2000)
    assert isinstance(error.value, geds.GedsError) and "127.0.0.1:1" in str(error.value)


def test_view_is_zero_copy_and_outlives_a_delete(client, bucket):
    data = os.urandom(8 * MiB)
    client.put(bucket, "viewed", data)
    view = client.view(bucket, "viewed")
    assert view.readonly and len(view) == len(data)
    array = numpy.frombuffer(view, dtype=numpy.uint8)
    assert not array.flags.owndata and not array.flags.writeable
    with pytest.raises(TypeError):
        view[0] = 1
    del view
    client.delete(bucket, "viewed")
    assert not client.exists(bucket, "viewed")
    gc.collect()
    assert digest(array) == digest(data)  # the lease keeps the mapping while numpy still points into it
    slice_ = memoryview(array)[100:200]
    del array
    gc.collect()
    assert bytes(slice_) == data[100:200]
    client.put(bucket, "empty", b"")
    assert len(client.view(bucket, "empty")) == 0


def test_views_of_a_remote_object_through_another_node(mds, client, bucket):
    data = os.urandom(2 * MiB)
    client.put(bucket, "remote", data)
    with geds.connect(mds, host_id="host-elsewhere") as other:
        view = other.view(bucket, "remote")
        assert digest(view) == digest(data)
        assert other.get(bucket, "remote") == data


def test_threads_share_a_client(client, bucket):
    payloads = {i: os.urandom(64 * 1024 + i) for i in range(8)}
    failures = []

    def work(i):
        try:
            for round_ in range(10):
                client.put(bucket, f"t{i}/{round_}", payloads[i])
                assert client.get(bucket, f"t{i}/{round_}") == payloads[i]
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert len(client.list(bucket)) == 80


def test_a_client_pickles_to_its_options(client):
    clone = pickle.loads(pickle.dumps(client))
    assert clone is client  # the same process reuses the open client for the same options
    assert clone.options == client.options


def test_write_through_to_s3(client, tmp_path):
    from test_s3 import ACCESS_KEY, SECRET_KEY, Moto

    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    moto = Moto(str(tmp_path), "moto-python").start()
    try:
        s3_bucket = "py-s3-" + uuid.uuid4().hex[:8]
        moto.client().create_bucket(Bucket=s3_bucket)
        bucket = "py-wt-" + uuid.uuid4().hex[:8]
        # Credentials reach a process through its environment: this client writes through itself.
        with geds.connect(client.options["mds"], host_id="host-s3") as writer:
            writer.set_bucket_storage(bucket, f"{moto.endpoint}/{s3_bucket}", persistency="write-through")
            data = os.urandom(3 * MiB)
            writer.put(bucket, "dir/object.bin", data)
            writer.flush()
            assert moto.sha256(s3_bucket, "dir/object.bin") == digest(data)
            assert any("s3" in location.detail for location in writer.locations(bucket, "dir/object.bin"))
        # Read back by a process with the credentials: the `client` fixture is attached to the host's gedsd,
        # which reads through S3 with its own environment, and that gedsd was started without credentials.
        with geds.connect(client.options["mds"], host_id="host-s3-reader") as reader:
            assert reader.get(bucket, "dir/object.bin") == data
    finally:
        moto.stop()


def test_wait_and_subscribe(client, bucket):
    """wait returns once the object exists; a subscription yields the changes under its prefix in order, can be
    polled through its file descriptor, and resumes after a revision from the MDS's history."""
    import selectors

    with pytest.raises(geds.TimedOut):
        client.wait(bucket, "events/one", timeout=0.2)
    with client.subscribe(bucket, prefix="events/") as subscription:
        assert subscription.next(timeout=0) is None
        client.put(bucket, "events/one", b"x" * 100)
        client.wait(bucket, "events/one", timeout=5)  # exists: at once
        with selectors.DefaultSelector() as selector:
            selector.register(subscription, selectors.EVENT_READ)
            assert selector.select(timeout=10)
        created = subscription.next(timeout=10)
        assert (created.kind, created.bucket, created.key, created.source) == ("created", bucket, "events/one", None)
        client.rename(bucket, "events/one", bucket, "events/two")
        renamed = subscription.next(timeout=10)
        assert (renamed.kind, renamed.key, renamed.source) == ("renamed", "events/two", (bucket, "events/one"))
        assert renamed.revision > created.revision and subscription.revision == renamed.revision
    with client.subscribe(bucket, key="events/two", after=created.revision) as again:
        assert next(iter(again)) == renamed
    with pytest.raises(ValueError):
        client.subscribe(bucket, prefix="a", key="b")
