"""multiprocessing Pools of 8 workers (fork and spawn) reading and writing through the session's gedsd: each
worker connects once (a Client unpickles to its process's connection) and never shares the parent's handle; and
what a fork child of a connected process can do (attached: read, write, list, view) and what it is told it cannot."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

import geds


def _work(client: geds.Client, bucket: str, task: int) -> tuple[int, str, str]:
    data = hashlib.sha256(str(task).encode()).digest() * 4096  # 128 KiB, known to the parent
    client.put(bucket, f"task/{task}", data)
    seed = client.get(bucket, "seed")
    return os.getpid(), hashlib.sha256(client.get(bucket, f"task/{task}")).hexdigest(), seed.decode()


def _expected(task: int) -> str:
    return hashlib.sha256(hashlib.sha256(str(task).encode()).digest() * 4096).hexdigest()


def _run_pool(method: str, mds: str, bucket: str) -> None:
    context = multiprocessing.get_context(method)
    # Connected before the pool: fork workers inherit a process that already runs libgeds and attach anew.
    client = geds.connect(mds, name=f"pool-parent-{method}-{os.getpid()}")
    with context.Pool(8) as pool:
        try:
            client.create_bucket(bucket)
            client.put(bucket, "seed", f"seed-{method}".encode())
            results = pool.starmap(_work, [(client, bucket, task) for task in range(32)])
            assert [digest for _, digest, _ in results] == [_expected(task) for task in range(32)]
            assert {seed for _, _, seed in results} == {f"seed-{method}"}
            workers = {pid for pid, _, _ in results}
            assert os.getpid() not in workers and 1 < len(workers) <= 8
            for task in range(32):  # the parent reads what the workers wrote
                assert hashlib.sha256(client.get(bucket, f"task/{task}")).hexdigest() == _expected(task)
        finally:
            client.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_of_8(method, mds):
    # In a fresh interpreter, so that no connection of this test session exists before the fork.
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_multiprocessing import _run_pool
        if __name__ == "__main__":
            _run_pool({method!r}, {mds!r}, "py-pool-{method}-{os.getpid()}")
            print("pool ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0 and "pool ok" in result.stdout, result.stdout + result.stderr[-4000:]


def _in_fork_child(body) -> str:
    """Runs `body()` in a fork child of this (connected) process; its result or error, as text, within 30 s."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        try:
            message = "ok " + str(body())
        except Exception as error:  # noqa: BLE001 - the child reports whatever happened
            message = f"{type(error).__name__}: {error}"
        os.write(writer, message.encode()[:8000])
        os._exit(0)
    os.close(writer)
    message = None
    try:
        ready, _, _ = select.select([reader], [], [], 30)
        message = os.read(reader, 8192).decode() if ready else None
    finally:
        os.close(reader)
        if message is None:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert message is not None, "the fork child hung"
    return message


def test_a_fork_child_of_an_attached_process_reads_and_writes(client, bucket):
    # Past 8 MiB a get into a new bytes has libgeds start a thread that makes its pages present: the parent's gets
    # do before the fork, and the child's after it.
    data = os.urandom(12 << 20)
    client.put(bucket, "before-fork", data)
    assert client.get(bucket, "before-fork") == data

    def child() -> str:
        got = hashlib.sha256(client.get(bucket, "before-fork")).hexdigest()
        viewed = hashlib.sha256(client.view(bucket, "before-fork")).hexdigest()
        client.put(bucket, "from-child", data[::-1])
        keys = sorted(entry.name for entry in client.list(bucket))
        return f"{got} {viewed} {','.join(keys)}"

    digest = hashlib.sha256(data).hexdigest()
    assert _in_fork_child(child) == f"ok {digest} {digest} before-fork,from-child"
    # The child wrote into the gedsd: its object outlives it, and the parent's handle is untouched.
    assert client.get(bucket, "from-child") == data[::-1]
    assert client.get(bucket, "before-fork") == data


def test_a_fork_child_cannot_subscribe_and_says_why(client, bucket):
    # A subscription of the parent's first starts libgeds's threads (which then do not survive the fork), whichever
    # tests ran in this process before.
    client.subscribe(bucket).close()
    message = _in_fork_child(lambda: client.subscribe(bucket))
    assert message.startswith("InvalidArgument") and "fork" in message and "subscribe" in message, message
    assert client.subscribe(bucket, key="k") is not None  # the parent's runtime is untouched


def test_a_fork_child_of_a_process_with_its_own_node_says_why(mds):
    # A host id no gedsd serves: this process runs its own node, which a fork child cannot run.
    with geds.connect(mds, host_id=f"host-alone-{os.getpid()}") as own:
        own.create_bucket(bucket := "py-own-" + uuid.uuid4().hex[:8])
        own.put(bucket, "k", b"x")
        message = _in_fork_child(lambda: own.get(bucket, "k"))
        assert "fork" in message and "spawn" in message, message
        assert own.get(bucket, "k") == b"x"


def _cat(fs, path: str) -> str:
    return hashlib.sha256(fs.cat_file(path)).hexdigest()


def test_a_filesystem_travels_to_spawned_workers(mds, bucket):
    from geds.fs import GedsFileSystem

    fs = GedsFileSystem(mds=mds)
    data = {f"{bucket}/part-{i}": os.urandom(100_000 + i) for i in range(4)}
    for path, value in data.items():
        fs.pipe_file(path, value)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        digests = pool.starmap(_cat, [(fs, path) for path in data])
    assert digests == [hashlib.sha256(value).hexdigest() for value in data.values()]
