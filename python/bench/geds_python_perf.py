"""Python beside its references, in one run (the Python half of `geds-perf`; figures in docs/PERFORMANCE.md).

    GEDS_BIN=.build/release python3 python/bench/geds_python_perf.py [--quick]

Starts an MDS, an owner gedsd (host "owner"), moto_server and redis-server on loopback; the measuring process
is a node on host "reader", so remote reads cross TCP. Prints a table of figures and ratios:
  - get of a remote 256 MiB object: Python geds.get vs the Swift API's GEDS.get (a new array, geds-perf get-bw) and
    vs its read into a reused buffer (geds-perf read-bw), same run; read_into vs the latter
  - view of a local 256 MiB object (open + zero-copy view + release), p50
  - 4 KiB get p50, one process: geds.get vs redis-py GET; and ops/s with 16 processes
  - fsspec cat_file of 64 MiB: GedsFileSystem vs s3fs reading the same bytes from moto"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "Tests", "process"))

from geds_harness import BIN, Cluster, _die_with_parent  # noqa: E402

import geds  # noqa: E402
from geds.fs import GedsFileSystem  # noqa: E402

MiB = 1 << 20


def p50_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def swift_remote_gbits(size_arg: str) -> dict[str, float]:
    """geds-perf's figures for the Swift API, Gbit/s, by workload: read-bw (remote read of a whole object into a
    reused caller buffer) and get-bw (GEDS.get: the whole object into a new array, lookup included)."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "perf.json")
        subprocess.run([os.path.join(BIN, "geds-perf"), "--workloads", "read-bw,get-bw", "--sizes", size_arg,
                        "--json", out], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=600)
        with open(out) as handle:
            report = json.load(handle)
    figures = {row["workload"]: float(row["gbit_per_s"]) for row in report["measurements"]
               if row["workload"] in ("read-bw", "get-bw") and row.get("gbit_per_s")}
    if len(figures) != 2:
        raise RuntimeError(f"no read-bw and get-bw figures in geds-perf's JSON: {json.dumps(report)[:2000]}")
    return figures


def remote_get(owner: geds.Client, reader: geds.Client, size: int, rounds: int) -> tuple[float, float]:
    """Gbit/s (medians) on a fresh remote object each round (no cached copy helps): geds.get (a new bytes
    object, whose pages the read faults in) and read_into a reused buffer (what geds-perf's read-bw does)."""
    data = os.urandom(size)
    get_seconds, into_seconds = [], []
    buffer = bytearray(size)
    for i in range(rounds):
        owner.put("perf", f"big/{i}", data)
        start = time.perf_counter()
        got = reader.get("perf", f"big/{i}")
        get_seconds.append(time.perf_counter() - start)
        assert len(got) == size
        del got
        owner.delete("perf", f"big/{i}")
        owner.put("perf", f"into/{i}", data)
        start = time.perf_counter()
        assert reader.read_into("perf", f"into/{i}", buffer) == size
        into_seconds.append(time.perf_counter() - start)
        owner.delete("perf", f"into/{i}")
    return tuple(size * 8 / statistics.median(seconds) / 1e9 for seconds in (get_seconds, into_seconds))


def local_view_p50(client: geds.Client, size: int, rounds: int) -> float:
    client.put("perf", "viewed", os.urandom(size))
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        view = client.view("perf", "viewed")
        samples.append(time.perf_counter() - start)
        assert len(view) == size
        del view
    return p50_us(samples)


def small_p50(get, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        get()
        samples.append(time.perf_counter() - start)
    return p50_us(samples)


def _geds_worker(mds: str, seconds: float) -> int:
    client = geds.connect(mds, host_id="reader")
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        client.get("perf", "small")
        count += 1
    client.close()
    return count


def _redis_worker(port: int, seconds: float) -> int:
    import redis
    connection = redis.Redis(port=port)
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        connection.get("small")
        count += 1
    return count


def ops_per_second(worker, argument, processes: int, seconds: float) -> float:
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        counts = pool.starmap(worker, [(argument, seconds)] * processes)
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB instead of 256 MiB, fewer rounds")
    options = parser.parse_args()
    big = 64 * MiB if options.quick else 256 * MiB
    rounds = 3 if options.quick else 5
    rows = []
    root = tempfile.mkdtemp(prefix="geds-pyperf-")
    cluster = Cluster(root)
    redis_proc = moto = None
    try:
        cluster.start_mds()
        cluster.start_node("owner-gedsd", "owner")
        mds = cluster.mds_address
        owner = geds.connect(mds, host_id="owner")
        reader = geds.connect(mds, host_id="reader")
        owner.create_bucket("perf")

        print("python-perf: remote get", file=sys.stderr)
        get_gbits, into_gbits = remote_get(owner, reader, big, rounds)
        swift = swift_remote_gbits(f"{big // MiB}M")
        rows.append((f"get {big // MiB} MiB remote (Gbit/s)", get_gbits, "Swift GEDS.get (geds-perf get-bw)",
                     swift["get-bw"], get_gbits / swift["get-bw"], "≥ 0.9"))
        rows.append((f"get {big // MiB} MiB remote (Gbit/s)", get_gbits, "Swift read, reused buffer (read-bw)",
                     swift["read-bw"], get_gbits / swift["read-bw"], "≥ 0.9"))
        rows.append((f"read_into {big // MiB} MiB remote (Gbit/s)", into_gbits, "Swift read, reused buffer (read-bw)",
                     swift["read-bw"], into_gbits / swift["read-bw"], "≥ 0.9"))

        print("python-perf: view", file=sys.stderr)
        view_us = local_view_p50(owner, big, 50)
        rows.append((f"view {big // MiB} MiB local, p50 (µs)", view_us, "goal", 200.0, 200.0 / view_us, "≤ 200 µs"))

        print("python-perf: 4 KiB get vs redis-py", file=sys.stderr)
        port = free_port()
        redis_proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        import redis
        connection = redis.Redis(port=port)
        for _ in range(100):
            try:
                connection.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        small = os.urandom(4096)
        owner.put("perf", "small", small)
        connection.set("small", small)
        assert reader.get("perf", "small") == small and connection.get("small") == small
        geds_us = small_p50(lambda: reader.get("perf", "small"), 3000)
        redis_us = small_p50(lambda: connection.get("small"), 3000)
        rows.append(("4 KiB get p50, 1 process (µs)", geds_us, "redis-py GET", redis_us, redis_us / geds_us, "≥ 1.0"))
        # The Python layer's share: the same read as one bare cffi call into a reused buffer.
        from geds._geds import ffi, lib
        scratch = bytearray(64 * 1024)
        target, handle = ffi.from_buffer(scratch), reader.handle
        raw_us = small_p50(lambda: lib.geds_read_object(handle, b"perf", b"small", target, len(scratch), 0), 3000)
        rows.append(("4 KiB get p50 (µs)", geds_us, "bare cffi geds_read_object", raw_us, raw_us / geds_us,
                     "(Python's share)"))
        seconds = 2.0 if options.quick else 4.0
        geds_ops = ops_per_second(_geds_worker, mds, 16, seconds)
        redis_ops = ops_per_second(_redis_worker, port, 16, seconds)
        rows.append(("4 KiB get, 16 processes (ops/s)", geds_ops, "redis-py GET", redis_ops, geds_ops / redis_ops,
                     "≥ 1.0"))

        print("python-perf: fsspec cat_file vs s3fs on moto", file=sys.stderr)
        from test_s3 import ACCESS_KEY, SECRET_KEY, Moto
        import s3fs
        moto = Moto(root, "moto-perf").start()
        moto.client().create_bucket(Bucket="perf")
        data = os.urandom(64 * MiB)
        moto.client().put_object(Bucket="perf", Key="cat.bin", Body=data)
        s3 = s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, client_kwargs={"endpoint_url": moto.endpoint,
                                                                                 "region_name": "us-east-1"})
        fs = GedsFileSystem(mds=mds, host_id="reader", skip_instance_cache=True)
        geds_s, s3_s = [], []
        for i in range(rounds):
            owner.put("perf", f"cat/{i}", data)
            start = time.perf_counter()
            assert len(fs.cat_file(f"perf/cat/{i}")) == len(data)
            geds_s.append(time.perf_counter() - start)
            owner.delete("perf", f"cat/{i}")
            start = time.perf_counter()
            assert len(s3.cat_file("perf/cat.bin")) == len(data)
            s3_s.append(time.perf_counter() - start)
        geds_ms, s3_ms = statistics.median(geds_s) * 1e3, statistics.median(s3_s) * 1e3
        rows.append(("fsspec cat_file 64 MiB remote (ms, p50)", geds_ms, "s3fs from moto", s3_ms, s3_ms / geds_ms,
                     "≥ 5"))
        owner.close()
        reader.close()
    finally:
        if redis_proc is not None:
            redis_proc.kill()
        if moto is not None:
            moto.stop()
        cluster.close()

    print(f"{'measure':40} {'GEDS Python':>12}  {'reference':32} {'ref':>10} {'ratio':>7}  goal")
    for name, ours, reference, theirs, ratio, goal in rows:
        print(f"{name:40} {ours:12.2f}  {reference:32} {theirs:10.2f} {ratio:7.2f}  {goal}")


if __name__ == "__main__":
    main()
