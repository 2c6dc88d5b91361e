"""multiprocessing Pools of 8 workers (fork and spawn) reading and writing through the session's gedsd: each
worker connects once (a Client unpickles to its process's connection) and never shares the parent's handle."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import subprocess
import sys
import textwrap

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
    # A forked child cannot run a libgeds the parent already started (threads do not survive fork), so the fork
    # pool is made before this process connects; spawn does not care.
    with context.Pool(8) as pool:
        client = geds.connect(mds, name=f"pool-parent-{method}-{os.getpid()}")
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


def test_a_fork_child_of_a_connected_process_gets_a_clear_error(client, bucket):
    client.put(bucket, "before-fork", b"x")
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        try:
            client.get(bucket, "before-fork")
            message = "no error"
        except geds.GedsError as error:
            message = str(error)
        os.write(writer, message.encode()[:4000])
        os._exit(0)
    os.close(writer)
    message = os.read(reader, 4096).decode()
    os.close(reader)
    os.waitpid(pid, 0)
    assert "spawn" in message and "fork" in message, message
    assert client.get(bucket, "before-fork") == b"x"  # the parent's handle is untouched


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
