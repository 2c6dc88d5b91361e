"""Replicas: `geds put --replicas N` / `geds bucket B --replicas N` keep N copies on distinct hosts (host ids), a reader
fails over to another copy when the one it reads dies, the MDS re-replicates after a node's lease ends, and a drain keeps
copies on distinct hosts."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from geds_harness import Cluster, sha256, sha256_file, write_random_file

MiB = 1 << 20


@pytest.fixture
def trio(session_root):
    """An MDS of its own (lease 2 s) and three gedsd on hosts h1, h2, h3."""
    root = tempfile.mkdtemp(prefix="replicas-", dir=session_root)
    cluster = Cluster(root)
    cluster.start_mds()
    cluster.nodes = {name: cluster.start_node(name, host) for name, host in (("n1", "h1"), ("n2", "h2"), ("n3", "h3"))}
    cluster.geds("mb", "rep").ok()
    try:
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


def stat_json(cluster: Cluster, path: str) -> dict:
    return json.loads(cluster.geds("stat", "--json", path).ok().text)


def holders(cluster: Cluster, path: str) -> list[tuple[str, str]]:
    """(node, host) of each copy, in the order a reader tries them."""
    return [(copy["node"], copy["host"]) for copy in json.loads(cluster.geds("where", "--json", path).ok().text)["copies"]]


def test_a_replicated_put_publishes_every_copy_on_distinct_hosts(trio):
    data = os.urandom(3 * MiB + 5)
    trio.geds("put", "-", "rep/two", "--replicas", "2", input=data).ok()
    copies = holders(trio, "rep/two")
    assert len(copies) == 2 and len({host for _, host in copies}) == 2, copies
    stat = stat_json(trio, "rep/two")
    assert (stat["wanted_copies"], stat["present_copies"]) == (2, 2)
    assert "replicas: 2 wanted, 2 present" in trio.geds("stat", "rep/two").ok().text
    # Each copy holds the bytes: read with a host id of each holder (which maps that node's file).
    for _, host in copies:
        assert sha256(trio.geds("cat", "rep/two", host_id=host).ok().out) == sha256(data)

    trio.geds("put", "-", "rep/three", "--replicas", "3", input=data).ok()
    assert sorted(host for _, host in holders(trio, "rep/three")) == ["h1", "h2", "h3"]


def test_too_few_hosts_is_a_clear_error_and_nothing_changes(trio):
    old = os.urandom(1000)
    trio.geds("put", "-", "rep/key", input=old).ok()
    failed = trio.geds("put", "-", "rep/key", "--replicas", "4", input=os.urandom(2 * MiB))
    failed.fails("rep/key wants 4 copies on distinct hosts, but only 3 host\\(s\\) have a live gedsd")
    assert sha256(trio.geds("cat", "rep/key").ok().out) == sha256(old), "the older object stays"
    trio.geds("put", "-", "rep/new", "--replicas", "4", input=b"x").fails("wants 4 copies on distinct hosts")
    trio.geds("stat", "rep/new").fails("no such object")
    trio.geds("put", "-", "rep/new", "--replicas", "0", input=b"x").fails("replicas must be 1 to 16, got 0")
    # A fourth gedsd on a host that has one already does not help.
    trio.start_node("n4", "h3")
    trio.geds("put", "-", "rep/new", "--replicas", "4", input=b"x").fails(r"but only 3 host\(s\)")


def test_a_buckets_factor_applies_to_what_is_sealed_in_it(trio):
    assert "replicas:" not in trio.geds("bucket", "rep").ok().text
    assert "replicas: 2" in trio.geds("bucket", "rep", "--replicas", "2").ok().lines
    assert "replicas: 2" in trio.geds("bucket", "rep").ok().lines
    data = os.urandom(MiB)
    trio.geds("put", "-", "rep/by-bucket", input=data).ok()
    assert len({host for _, host in holders(trio, "rep/by-bucket")}) == 2
    # An object's own factor wins over the bucket's.
    trio.geds("put", "-", "rep/single", "--replicas", "1", input=data).ok()
    assert len(holders(trio, "rep/single")) == 1
    trio.geds("bucket", "rep", "--replicas", "17").fails("replicas must be 1 to 16, got 17")
    trio.geds("bucket", "no-such-bucket", "--replicas", "2").fails("no such bucket")


def test_an_async_put_returns_after_one_copy_and_the_mds_makes_the_others(trio):
    data = os.urandom(2 * MiB)
    trio.geds("put", "-", "rep/async", "--replicas", "3", "--async", input=data).ok()
    trio.wait_until(lambda: stat_json(trio, "rep/async")["present_copies"] == 3, timeout=20,
                    what="the MDS to have the other copies made")
    assert sorted(host for _, host in holders(trio, "rep/async")) == ["h1", "h2", "h3"]
    for host in ("h1", "h2", "h3"):
        assert sha256(trio.geds("cat", "rep/async", host_id=host).ok().out) == sha256(data)


def test_re_replication_restores_two_copies_after_a_node_dies(trio):
    digests = {}
    for index in range(6):
        data = os.urandom(MiB + index)
        trio.geds("put", "-", f"rep/obj-{index}", "--replicas", "2", input=data).ok()
        digests[f"rep/obj-{index}"] = sha256(data)
    held = {path: holders(trio, path) for path in digests}
    victim = held["rep/obj-0"][0][0]
    trio.nodes[victim].kill()
    trio.wait_dead(victim)

    def restored():
        for path in digests:
            stat = stat_json(trio, path)
            copies = [(c["node"], c["host"]) for c in stat["copies"]]
            if stat["present_copies"] != 2 or victim in {node for node, _ in copies} or len({h for _, h in copies}) != 2:
                return False
        return True
    trio.wait_until(restored, timeout=30, what=f"two copies of every object again after {victim} died")
    survivors = sorted({"n1", "n2", "n3"} - {victim})
    for path, digest in digests.items():
        assert sorted(node for node, _ in holders(trio, path)) == survivors
        assert sha256(trio.geds("cat", path).ok().out) == digest
    log = "".join(open(trio.nodes[name].log, errors="replace").read() for name in survivors)
    assert "re-replicated" in log


def partial_file(pid: int) -> str | None:
    files = [f for d in glob.glob(f"/dev/shm/geds-cli-{pid}-*") for f in glob.glob(d + "/*.partial")]
    return files[0] if files else None


def has_data(path: str, offset: int) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return any(handle.read(4096))
    except OSError:
        return False


def test_a_reader_fails_over_when_the_holder_dies_mid_read(trio):
    size = 256 * MiB
    source = os.path.join(trio.root, "big.bin")
    digest = write_random_file(source, size)
    trio.geds("put", source, "rep/big", "--replicas", "2", "--quiet", timeout=180).ok()
    copies = holders(trio, "rep/big")
    assert len({host for _, host in copies}) == 2
    first = copies[0][0]  # the copy a reader on another host tries first

    out = os.path.join(trio.root, "baseline.bin")
    baseline = trio.geds("get", "rep/big", out, "--quiet", timeout=120).ok().elapsed
    assert sha256_file(out) == digest
    os.unlink(out)

    for attempt in range(5):
        out = os.path.join(trio.root, f"read-{attempt}.bin")
        reader = trio.popen("get", "rep/big", out, "--quiet", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started = time.monotonic()
        deadline = started + 60
        partial = None
        while time.monotonic() < deadline and reader.poll() is None:
            partial = partial or partial_file(reader.pid)
            if partial and has_data(partial, 16 * MiB):
                break
            time.sleep(0.001)
        holder = trio.nodes[first]
        holder.stop()  # nothing more is sent while we look
        if reader.poll() is None and partial and not has_data(partial, size - 4096):
            holder.kill()
            killed = time.monotonic()
            _, err = reader.communicate(timeout=120)
            after_kill = time.monotonic() - killed
            assert reader.returncode == 0, err.decode(errors="replace")
            assert not err.strip(), f"no error shown while a copy remains: {err!r}"
            assert sha256_file(out) == digest
            assert after_kill <= baseline + 2.0, f"{after_kill:.2f} s after the kill, a whole read takes {baseline:.2f} s"
            return
        holder.cont()  # the read was done (or not started) before we could kill: try again
        reader.communicate(timeout=120)
    pytest.fail("the read never was caught in the middle")


def test_a_drain_keeps_copies_on_distinct_hosts(trio):
    # n3 holds more bytes than n2, so a drain choosing by load alone would pick n2, which has the other copy.
    trio.geds("put", "-", "rep/ballast", "--to", "n3", input=os.urandom(8 * MiB)).ok()
    trio.wait_until(lambda: "bytes=0" not in next(line for line in trio.geds("nodes").ok().lines if line.startswith("n3 ")),
                    timeout=10, what="n3's bytes at the MDS")
    data = os.urandom(MiB)
    trio.geds("put", "-", "rep/pair", "--replicas", "2", "--to", "n1", input=data).ok()
    assert sorted(node for node, _ in holders(trio, "rep/pair")) == ["n1", "n2"]
    trio.geds("drain", "n1", "--timeout", "60", timeout=90).ok()
    assert sorted(node for node, _ in holders(trio, "rep/pair")) == ["n2", "n3"]
    assert stat_json(trio, "rep/pair")["present_copies"] == 2
    assert sha256(trio.geds("cat", "rep/pair").ok().out) == sha256(data)


def test_a_reader_gives_up_a_silent_holder_within_two_seconds(trio):
    data = os.urandom(32 * MiB)
    trio.geds("put", "-", "rep/hung", "--replicas", "2", input=data).ok()
    first = holders(trio, "rep/hung")[0][0]
    baseline = trio.geds("cat", "rep/hung").ok().elapsed
    trio.nodes[first].stop()  # alive to the kernel (connections are accepted), silent to the reader
    try:
        result = trio.geds("cat", "rep/hung").ok()
    finally:
        trio.nodes[first].cont()
    assert sha256(result.out) == sha256(data)
    assert not result.err.strip(), result.err
    # The 2 s failover bound, plus 1 s for the noise of a loaded machine.
    assert result.elapsed <= baseline + 3.0, f"{result.elapsed:.2f} s with a silent holder, {baseline:.2f} s without"


def test_a_buckets_factor_applies_to_the_objects_already_in_it(trio):
    digests = {}
    for index in range(4):
        data = os.urandom(MiB + index)
        trio.geds("put", "-", f"rep/old-{index}", input=data).ok()
        digests[f"rep/old-{index}"] = sha256(data)
    own = os.urandom(1000)
    trio.geds("put", "-", "rep/own", "--replicas", "1", input=own).ok()
    original = {path: holders(trio, path) for path in digests}
    assert all(len(copies) == 1 for copies in original.values()), original

    trio.geds("bucket", "rep", "--replicas", "2").ok()
    for path in digests:
        assert stat_json(trio, path)["wanted_copies"] == 2
    assert "replicas: 2 wanted" in trio.geds("stat", "rep/old-0").ok().text

    def replicated():
        for path in digests:
            copies = holders(trio, path)
            if len(copies) != 2 or len({host for _, host in copies}) != 2:
                return False
        return True
    trio.wait_until(replicated, timeout=30, what="two copies of every object already in the bucket")
    # An object created with its own factor keeps it.
    stat = stat_json(trio, "rep/own")
    assert (stat["wanted_copies"], stat["present_copies"]) == (1, 1)
    assert sha256(trio.geds("cat", "rep/own").ok().out) == sha256(own)

    victim = original["rep/old-0"][0][0]
    trio.nodes[victim].kill()
    trio.wait_dead(victim)
    for path, digest in digests.items():
        result = trio.geds("cat", path).ok()
        assert sha256(result.out) == digest, path
        assert not result.err.strip(), result.err


def test_lowering_a_factor_trims_the_extra_copies(trio):
    trio.geds("bucket", "rep", "--replicas", "2").ok()
    data = os.urandom(2 * MiB + 3)
    trio.geds("put", "-", "rep/pair", input=data).ok()
    kept = os.urandom(MiB)
    trio.geds("put", "-", "rep/own-pair", "--replicas", "2", input=kept).ok()
    pair = holders(trio, "rep/pair")
    assert len(pair) == 2 and len(holders(trio, "rep/own-pair")) == 2
    blob_file = stat_json(trio, "rep/pair")["blob"]

    def files(node: str) -> list[str]:
        return glob.glob(os.path.join(trio.nodes[node].tier0, "**", blob_file), recursive=True)
    assert all(files(node) for node, _ in pair)

    assert "replicas:" not in trio.geds("bucket", "rep", "--replicas", "1").ok().text
    assert stat_json(trio, "rep/pair")["wanted_copies"] == 1
    trio.wait_until(lambda: stat_json(trio, "rep/pair")["present_copies"] == 1, timeout=20,
                    what="the extra copy of rep/pair to be trimmed")
    (survivor, _), = holders(trio, "rep/pair")
    (gone, _), = [copy for copy in pair if copy[0] != survivor]
    # Withdrawn at the MDS first, then the node deletes its file with its next heartbeat.
    trio.wait_until(lambda: not files(gone), timeout=10, what=f"{gone} to delete its copy of rep/pair")
    assert files(survivor)
    time.sleep(3)  # more heartbeats: nothing more goes
    assert [node for node, _ in holders(trio, "rep/pair")] == [survivor]
    stat = stat_json(trio, "rep/own-pair")
    assert (stat["wanted_copies"], stat["present_copies"]) == (2, 2)
    result = trio.geds("cat", "rep/pair").ok()
    assert sha256(result.out) == sha256(data) and not result.err.strip()
    assert sha256(trio.geds("cat", "rep/own-pair").ok().out) == sha256(kept)


def test_a_node_thought_dead_that_comes_back_has_its_extra_copies_trimmed(trio):
    data = os.urandom(MiB + 7)
    trio.geds("put", "-", "rep/back", "--replicas", "2", input=data).ok()
    victim = holders(trio, "rep/back")[0][0]
    trio.nodes[victim].stop()
    try:
        trio.wait_dead(victim)
        trio.wait_until(lambda: len(holders(trio, "rep/back")) == 2, timeout=30,
                        what="a new copy of rep/back while its holder seems dead")
    finally:
        trio.nodes[victim].cont()
    trio.wait_until(lambda: trio.node_states().get(victim) == "alive", timeout=20, what=f"{victim} to register again")
    # It offers its copy back (three now, for a moment), and one copy is trimmed: two stay, on distinct hosts, and
    # the third node deletes its file.
    blob_file = stat_json(trio, "rep/back")["blob"]

    def holding_files() -> list[str]:
        return sorted(name for name, node in trio.nodes.items()
                      if glob.glob(os.path.join(node.tier0, "**", blob_file), recursive=True))
    trio.wait_until(lambda: len(holding_files()) == 2, timeout=20, what="the extra copy of rep/back to be deleted")
    time.sleep(2)
    copies = holders(trio, "rep/back")
    assert len(copies) == 2 and len({host for _, host in copies}) == 2, copies
    assert sorted(node for node, _ in copies) == holding_files()
    for _, host in copies:
        assert sha256(trio.geds("cat", "rep/back", host_id=host).ok().out) == sha256(data)
