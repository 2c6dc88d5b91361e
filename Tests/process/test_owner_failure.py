"""The node that owns an object stops answering or dies while readers want its bytes.

Each scenario uses its own throw-away gedsd (node-v*, its own host id) so that the session's node-a and
node-b stay healthy; node-b holds an object that must come through every failure intact."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from geds_harness import (TCP_ESTABLISHED, MiB, cli_tier0_dirs, tcp_connections_to, parse_stat, sha256, sha256_file,
                          write_random_file)

BIG = 256 * MiB
TIMEOUT_PATTERN = r"did not answer within 2000 ms|made no progress|timed out"


@pytest.fixture(scope="module")
def big_file(session_root):
    path = os.path.join(session_root, "owner-failure-big")
    digest = write_random_file(path, BIG)
    yield path, digest
    os.remove(path)


@pytest.fixture
def bystander(cluster, bucket):
    """An object on node-b that must survive everything happening to other nodes."""
    data = os.urandom(MiB + 1)
    cluster.geds("put", "-", f"{bucket}/bystander", "--to", "node-b", input=data).ok()
    return f"{bucket}/bystander", sha256(data)


def assert_bystander_intact(cluster, bystander) -> None:
    path, digest = bystander
    assert sha256(cluster.geds("cat", path, host_id="host-reader").ok().out) == digest
    assert sha256(cluster.geds("cat", path, host_id="host-b").ok().out) == digest


def assert_no_leftover_tier0(pid: int) -> None:
    assert cli_tier0_dirs(pid) == [], f"the failed reader left its tier 0 behind: {cli_tier0_dirs(pid)}"


def reader_failure_after_kill(reader, killed: float, hang_limit: float, timeout_note: str) -> str:
    """Waits for a reader whose source was killed at `killed`: it must fail (never claim success), within
    5 s rather than its own timeout, with exactly one `geds:` line on stderr, which is returned."""
    try:
        _, err = reader.communicate(timeout=hang_limit)
    except Exception:
        reader.kill()
        reader.wait()
        pytest.fail("the reader hung after its source was killed")
    elapsed = time.monotonic() - killed
    err = err.decode()
    assert reader.returncode != 0, f"get claimed success after its source died: {err!r}"
    assert elapsed < 5, f"the reader took {elapsed:.1f}s to notice ({timeout_note}): {err!r}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("geds: "), err
    return err


def test_frozen_owner_times_out_then_recovers(cluster, bucket, workdir, extra_nodes, big_file, bystander):
    source, digest = big_file
    victim = extra_nodes("node-v1", "host-v1")
    path = f"{bucket}/big"
    cluster.geds("put", source, path, "--to", "node-v1", host_id="host-v1").ok()

    out = os.path.join(workdir, "frozen-read")
    victim.stop()
    try:
        reader = cluster.geds("get", path, out, host_id="host-reader", timeout_ms=2000, timeout=60)
    finally:
        victim.cont()
    reader.fails(TIMEOUT_PATTERN)
    assert reader.elapsed < 10, reader.describe()
    assert not os.path.exists(out), "a timed-out get must not leave an output file"
    assert_bystander_intact(cluster, bystander)

    # Thawed, the owner (which may have lost its lease meanwhile) offers its copy again.
    cluster.wait_until(lambda: "node-v1" in cluster.geds("where", path).text, 10, "node-v1 to serve again")
    cluster.geds("get", path, out, host_id="host-reader").ok()
    assert sha256_file(out) == digest
    os.remove(out)

    # Frozen in the middle of a transfer: the reader gives up once no bytes came for its timeout.
    reader = cluster.popen("get", path, out, host_id="host-reader-2", timeout_ms=2000,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while reader.poll() is None and time.monotonic() < deadline:
        if any(state == TCP_ESTABLISHED for state, _, _ in tcp_connections_to(victim.port)):
            break
        time.sleep(0.001)
    time.sleep(0.05)
    if reader.poll() is not None:
        pytest.skip(f"the transfer finished (rc={reader.returncode}) before the owner could be frozen")
    victim.stop()
    frozen = time.monotonic()
    try:
        _, err = reader.communicate(timeout=30)
    finally:
        victim.cont()
    elapsed = time.monotonic() - frozen
    err = err.decode()
    assert reader.returncode != 0, f"get claimed success with its source frozen: {err!r}"
    assert elapsed < 10, f"the reader took {elapsed:.1f}s with a 2 s timeout: {err!r}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("geds: "), err
    assert re.search(TIMEOUT_PATTERN, lines[0]), err
    assert not os.path.exists(out), "a timed-out get must not leave an output file"
    assert_no_leftover_tier0(reader.pid)
    assert_bystander_intact(cluster, bystander)


def test_owner_killed_mid_transfer(cluster, bucket, workdir, extra_nodes, big_file, bystander):
    source, digest = big_file
    victim = extra_nodes("node-v2", "host-v2")
    path = f"{bucket}/big"
    small = os.urandom(20_000)
    cluster.geds("put", source, path, "--to", "node-v2", host_id="host-v2").ok()
    cluster.geds("put", "-", f"{bucket}/small", "--to", "node-v2", input=small).ok()

    out = os.path.join(workdir, "interrupted")
    reader = cluster.popen("get", path, out, host_id="host-reader", timeout_ms=20000,
                           stdout=open(os.devnull, "wb"), stderr=-1)
    # Freeze the reader while bytes are in flight: its connection to the owner is open and data waits in
    # its receive queue. Then the transfer is certainly still under way when the owner dies.
    deadline = time.monotonic() + 20
    in_flight = False
    while not in_flight and reader.poll() is None and time.monotonic() < deadline:
        if not any(state == TCP_ESTABLISHED for state, _, _ in tcp_connections_to(victim.port)):
            time.sleep(0.001)
            continue
        reader.send_signal(signal.SIGSTOP)
        time.sleep(0.1)
        in_flight = any(state == TCP_ESTABLISHED and rx > 0 for state, _, rx in tcp_connections_to(victim.port))
        if not in_flight:
            reader.send_signal(signal.SIGCONT)
            time.sleep(0.002)
    if not in_flight:
        reader.send_signal(signal.SIGCONT)
        reader.communicate(timeout=60)
        pytest.skip(f"could not catch the transfer in flight (reader rc={reader.returncode})")
    time.sleep(0.2)  # the owner fills the socket buffers and waits
    victim.kill()
    killed = time.monotonic()
    reader.send_signal(signal.SIGCONT)
    err = reader_failure_after_kill(reader, killed, hang_limit=30, timeout_note="its timeout was 20 s")
    assert "node-v2" in err and ("closed the connection" in err or "reset" in err), err
    assert not os.path.exists(out), "a failed get must not leave an output file"
    assert_no_leftover_tier0(reader.pid)

    # Dead owner, lease not yet over: a clean error at once.
    result = cluster.geds("get", f"{bucket}/small", out, host_id="host-reader", timeout=30)
    result.fails(r"no copy|unreachable|refused")
    assert result.elapsed < 10

    # Lease over: the MDS knows the copies are gone.
    cluster.wait_dead("node-v2")
    cluster.geds("get", path, out, host_id="host-reader").fails(r"no copy left")
    cluster.geds("cat", f"{bucket}/small", host_id="host-v2").fails(r"no copy left")
    cluster.geds("where", path).fails(r"no copy left")
    info = parse_stat(cluster.geds("stat", f"{bucket}/small").ok().text)
    assert info["copies"] == "0" and info["locations"] == []
    assert not os.path.exists(out)
    assert_bystander_intact(cluster, bystander)

    # The key can be written again.
    cluster.geds("put", "-", f"{bucket}/small", "--to", "node-b", input=small).ok()
    assert cluster.geds("cat", f"{bucket}/small").ok().out == small


def test_owner_killed_while_reader_waits(cluster, bucket, workdir, extra_nodes, bystander):
    """The reader has sent its request to a frozen owner; the owner is then killed. The reader must notice
    the closed connection at once instead of waiting for its (long) timeout."""
    victim = extra_nodes("node-v3", "host-v3")
    path = f"{bucket}/object"
    cluster.geds("put", "-", path, "--to", "node-v3", input=os.urandom(MiB)).ok()

    out = os.path.join(workdir, "out")
    victim.stop()
    reader = cluster.popen("get", path, out, host_id="host-reader", timeout_ms=30000,
                           stdout=open(os.devnull, "wb"), stderr=-1)
    time.sleep(0.8)  # connected and waiting (well inside the 2 s lease)
    victim.kill()
    killed = time.monotonic()
    err = reader_failure_after_kill(reader, killed, hang_limit=40, timeout_note="its timeout was 30 s")
    assert "node-v3" in err, err
    assert not os.path.exists(out)
    assert_no_leftover_tier0(reader.pid)
    assert_bystander_intact(cluster, bystander)
