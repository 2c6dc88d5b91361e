"""The RDMA data plane with real processes, on soft-RoCE inside tools/rxe-vm (tools/test-rdma.sh runs this file
there): one geds-mds serving TCP and RDMA send/receive, node-a on "host A" (rxe1, 10.10.1.1) talking to the MDS
over RDMA, node-b on "host B" (rxe2, 10.10.1.2) talking to it over TCP, and the CLI reading over one-sided RDMA
READs. Outside the VM every test here reports itself skipped with the reason."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from geds_harness import Cluster, binary, sha256_file, write_random_file

HOST_A, HOST_B, OTHER_DEVICE = "10.10.1.1", "10.10.1.2", "10.10.0.1"
RDMA_LISTENING = re.compile(r"listening for RDMA on (\S+):(\d+)")


def _why_skipped() -> str | None:
    if os.environ.get("GEDS_RXE_VM") != "1":
        try:
            devices = os.listdir("/sys/class/infiniband")
        except OSError:
            devices = []
        return ("no RDMA device here (" + ("found " + ", ".join(devices) if devices else "/sys/class/infiniband is empty")
                + "); tools/test-rdma.sh runs these inside the soft-RoCE VM")
    devices = set(os.environ.get("GEDS_RXE_DEVICES", "").split())
    if not {"rxe1", "rxe2"} <= devices:
        return f"the VM has no two simulated hosts (devices: {sorted(devices)}); run it with --two-hosts"
    return None


pytestmark = pytest.mark.skipif(_why_skipped() is not None, reason=_why_skipped() or "")


class RDMACluster(Cluster):
    """geds-mds on host A with TCP and RDMA listeners; gedsd on either host; the CLI reading from host B."""

    def start_rdma_mds(self, *extra: str):
        mds = self._spawn("geds-mds", "mds", "", [binary("geds-mds"), "--listen", f"{HOST_A}:0",
                                                  "--rdma-listen", f"{HOST_A}:0", "--lease-ms", str(self.lease_ms),
                                                  # small objects' bytes off the MDS: every read takes the data plane
                                                  "--inline-limit", "0", *extra])
        self.mds = mds
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with open(mds.log, errors="replace") as handle:
                match = RDMA_LISTENING.search(handle.read())
            if match:
                self.mds_rdma = f"{match.group(1)}:{match.group(2)}"
                return mds
            time.sleep(0.05)
        raise RuntimeError("geds-mds did not listen for RDMA:\n" + mds.log_tail())

    def start_host_node(self, name: str, address: str, *extra: str):
        tier0 = os.path.join(self.root, f"tier0-{name}")
        return self._spawn("gedsd", name, f"host-{name}",
                           [binary("gedsd"), "--mds", self.mds_address, "--listen", f"{address}:0", "--tier0", tier0,
                            "--name", name, "--host-id", f"host-{name}", *extra], tier0)

    def cli(self, *args, address: str | None = HOST_B, rdma_mds: bool = False, **kwargs):
        """The CLI on host B (its RDMA device's address given), reading over RDMA unless told otherwise."""
        options = ["--verbose"]
        if address:
            options += ["--rdma-address", address]
        if rdma_mds:
            options += ["--mds-rdma", self.mds_rdma]
        return self.geds(*options, *args, **kwargs)


@pytest.fixture(scope="module")
def rdma(request):
    root = tempfile.mkdtemp(prefix=f"geds-rdma-{os.getpid()}-", dir="/dev/shm")
    cluster = RDMACluster(root, lease_ms=2000)
    try:
        cluster.start_rdma_mds("--log-level", "debug")  # debug: it names the streams it pushes over RDMA
        cluster.start_host_node("node-a", HOST_A, "--transport", "rdma", "--mds-rdma", cluster.mds_rdma)
        cluster.start_host_node("node-b", HOST_B, "--transport", "rdma")
        cluster.geds("mb", "rdma").ok()
        yield cluster
    finally:
        cluster.close()
        subprocess.run(["rm", "-rf", root], check=False)


def log_of(cluster, name) -> str:
    daemon = next(d for d in cluster.daemons if d.name == name)
    with open(daemon.log, errors="replace") as handle:
        return handle.read()


@pytest.mark.parametrize("size", [1, 4096, (1 << 20) + 7, (64 << 20) + 1, (256 << 20) + 3])
def test_remote_reads_over_rdma_match_sha256(rdma, tmp_path, size):
    source = str(tmp_path / "in")
    digest = write_random_file(source, size)
    path = f"rdma/size-{size}"
    rdma.cli("put", source, path, "--to", "node-a", timeout=300).ok()
    out = str(tmp_path / "out")
    result = rdma.cli("get", path, out, timeout=300).ok()
    assert sha256_file(out) == digest
    # Also the small sizes, packed into a tier-0 slab slot: published with the slab's rkey at the slot's address.
    assert re.search(r"node node-a: reading over rdma from 10\.10\.1\.1:\d+", result.err), result.describe()
    where = rdma.geds("where", path).ok().text
    assert re.search(r"node-a tier0 .*transports=tcp://10\.10\.1\.1:\d+,rdma://10\.10\.1\.1:\d+", where), where
    os.unlink(source)
    os.unlink(out)


def test_packed_1kib_objects_are_read_over_rdma_match_sha256(rdma, tmp_path):
    """1 KiB objects share a slab of node-a's tier 0 (registered once): the CLI reads each with one READ of its slot."""
    digests = {}
    for index in range(6):
        source = str(tmp_path / f"in-{index}")
        digests[f"rdma/packed-{index}"] = write_random_file(source, 1024)
        rdma.cli("put", source, f"rdma/packed-{index}", "--to", "node-a").ok()
    out = str(tmp_path / "out")
    for path, digest in digests.items():
        result = rdma.cli("get", path, out).ok()
        assert sha256_file(out) == digest, path
        assert re.search(r"node node-a: reading over rdma from 10\.10\.1\.1:\d+", result.err), result.describe()
        where = rdma.geds("where", path).ok().text
        assert re.search(r"node-a tier0 .*transports=tcp://10\.10\.1\.1:\d+,rdma://10\.10\.1\.1:\d+", where), where


def test_the_mds_serves_one_node_over_rdma_and_another_over_tcp_at_once(rdma, tmp_path):
    assert "MDS: over rdma at " in log_of(rdma, "node-a")
    assert "MDS: over rdma" not in log_of(rdma, "node-b")
    payloads = {f"rdma/mixed-{i}": os.urandom(10_000 + i) for i in range(12)}
    failures: list[str] = []

    def writer(keys, over_rdma, node):
        for key in keys:
            result = rdma.cli("put", "-", key, "--to", node, input=payloads[key], rdma_mds=over_rdma, timeout=120)
            if result.rc != 0:
                failures.append(result.describe())

    keys = sorted(payloads)
    threads = [threading.Thread(target=writer, args=(keys[0::2], True, "node-a")),
               threading.Thread(target=writer, args=(keys[1::2], False, "node-b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    for key, payload in payloads.items():
        assert rdma.cli("cat", key, rdma_mds=True).ok().out == payload
        assert rdma.cli("cat", key).ok().out == payload
    listing = rdma.cli("ls", "rdma/mixed-", rdma_mds=True).ok().lines
    assert [line.split()[-1] for line in listing] == [key.removeprefix("rdma/") for key in keys]


def test_a_peer_offering_only_tcp_is_read_over_tcp(rdma, tmp_path):
    rdma.start_host_node("node-tcp", HOST_A, "--transport", "tcp")
    payload = os.urandom(3 << 20)
    rdma.cli("put", "-", "rdma/tcp-only", "--to", "node-tcp", input=payload).ok()
    assert "transports=tcp://" in rdma.geds("where", "rdma/tcp-only").ok().text
    assert "rdma://" not in rdma.geds("where", "rdma/tcp-only").ok().text
    result = rdma.cli("cat", "rdma/tcp-only").ok()
    assert result.out == payload
    assert "reading over rdma" not in result.err, result.describe()


def test_auto_falls_back_to_tcp_when_rdma_cannot_connect(rdma):
    # The reader's device (rxe0) has no route to host A's: connecting over RDMA fails, TCP reaches it.
    payload = os.urandom((2 << 20) + 5)
    rdma.cli("put", "-", "rdma/fallback", "--to", "node-a", input=payload).ok()
    result = rdma.cli("cat", "rdma/fallback", address=OTHER_DEVICE).ok()
    assert result.out == payload
    assert re.search(r"node node-a: no RDMA connection to 10\.10\.1\.1:\d+ \(.*\); reading over tcp", result.err), result.describe()


def test_demanding_rdma_on_an_address_without_a_device_fails_clearly(rdma):
    tier0 = os.path.join(rdma.root, "tier0-loopback")
    result = subprocess.run([binary("gedsd"), "--mds", rdma.mds_address, "--listen", "127.0.0.1:0", "--tier0", tier0,
                             "--name", "node-loopback", "--transport", "rdma"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gedsd: --transport rdma: no usable RDMA device at 127.0.0.1"), result


def test_the_owner_killed_mid_read_fails_the_reader_within_its_deadline(rdma, tmp_path):
    victim = rdma.start_host_node("node-victim", HOST_A, "--transport", "rdma")
    source = str(tmp_path / "big")
    write_random_file(source, 256 << 20)
    rdma.cli("put", source, "rdma/victim", "--to", "node-victim", timeout=300).ok()
    out = str(tmp_path / "out")
    reader = rdma.popen("--verbose", "--rdma-address", HOST_B, "get", "rdma/victim", out, timeout_ms=5000,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # connected and reading (256 MiB take several seconds on emulated rxe)
    victim.kill()
    killed = time.monotonic()
    try:
        _, err = reader.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        reader.kill()
        raise AssertionError("the reader hung after its owner was killed")
    err = err.decode("utf-8", "replace")
    elapsed = time.monotonic() - killed
    if reader.returncode == 0:
        pytest.skip("the read finished before the owner was killed")
    assert elapsed < 30, f"the reader took {elapsed:.1f}s to fail (timeout 5 s): {err}"
    assert [line for line in err.splitlines() if line.startswith("geds: ")], err
    assert not os.path.exists(out), "a failed get must not leave an output file"


def test_geds_perf_measures_rdma_beside_perftest(tmp_path):
    out = tmp_path / "rdma.json"
    result = subprocess.run([binary("geds-perf"), "--transport", "rdma", "--workloads", "read-bw", "--sizes", "1M",
                             "--repetitions", "1", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(out.read_text())
    assert document["machine"]["transports"]["rdma"] == "measured", document["machine"]
    (measurement,) = document["measurements"]
    assert measurement["transport"] == "rdma" and measurement["size_bytes"] == 1 << 20, measurement
    assert measurement["gbit_per_s"] > 0, measurement
    assert measurement["reference"].startswith("ib_read_bw"), measurement
    assert (measurement["reference_value"] or 0) > 0 and (measurement["ratio"] or 0) > 0, measurement


# MARK: subscriptions over RDMA send/receive (over TCP: test_pubsub.py)


def test_every_kind_of_change_in_order_over_rdma_and_a_resume(rdma):
    bucket = f"ps-rdma-{os.getpid() % 10000}"
    # From revision 0 of a bucket that does not exist yet: the changes below cannot race the subscription.
    watcher = rdma.popen("--rdma-address", HOST_B, "--mds-rdma", rdma.mds_rdma, "watch", bucket, "--from", "0",
                         "--count", "12", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rdma.cli("mb", bucket).ok()
    rdma.cli("put", "-", f"{bucket}/a", "--to", "node-a", input=b"x" * 1000).ok()
    rdma.cli("put", "-", f"{bucket}/a", "--to", "node-a", input=b"y" * 1000).ok()
    rdma.cli("meta", f"{bucket}/a", "stage=one").ok()
    rdma.cli("mv", f"{bucket}/a", f"{bucket}/b").ok()
    rdma.cli("cp", f"{bucket}/b", f"{bucket}/c").ok()
    rdma.cli("put", "-", f"{bucket}/dir/x", "--to", "node-a", input=b"x").ok()
    rdma.cli("put", "-", f"{bucket}/dir/y", "--to", "node-a", input=b"y").ok()
    rdma.cli("rm", "--prefix", f"{bucket}/dir/").ok()
    rdma.cli("rm", f"{bucket}/c").ok()
    rdma.cli("rb", "--force", bucket).ok()
    out, err = watcher.communicate(timeout=120)
    assert watcher.returncode == 0, err.decode(errors="replace")
    lines = out.decode().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        f"bucket-created {bucket}", f"created {bucket}/a", f"created {bucket}/a", f"metadata {bucket}/a",
        f"renamed {bucket}/a {bucket}/b", f"copied {bucket}/c", f"created {bucket}/dir/x", f"created {bucket}/dir/y",
        f"deleted {bucket}/dir/x", f"deleted {bucket}/dir/y", f"deleted {bucket}/c", f"bucket-deleted {bucket}",
    ]
    revisions = [int(line.split()[0]) for line in lines]
    assert revisions == sorted(set(revisions)), "revisions must increase strictly"
    # A watcher restarted --from the sixth revision it printed sees exactly the events after it.
    resumed = rdma.cli("--mds-rdma", rdma.mds_rdma, "watch", bucket, "--from", str(revisions[5]), "--count", "6",
                       timeout=120).ok()
    assert resumed.out.decode().splitlines() == lines[6:]
    pushed = re.findall(r"a pushed stream \(subscription\) over rdma", log_of(rdma, "mds"))
    assert len(pushed) >= 2, "the MDS pushed no subscription over RDMA"


# MARK: a deployment token over RDMA send/receive (the TCP ports and the local socket: test_auth.py)


@pytest.fixture(scope="module")
def secured_rdma():
    root = tempfile.mkdtemp(prefix=f"geds-rdma-auth-{os.getpid()}-", dir="/dev/shm")
    cluster = RDMACluster(root, lease_ms=2000)
    cluster.token, cluster.wrong = os.path.join(root, "token"), os.path.join(root, "wrong")
    for path, secret in ((cluster.token, b"the token of this RDMA deployment\n"), (cluster.wrong, b"not the token at all, sorry")):
        with open(path, "wb") as handle:
            handle.write(secret)
    try:
        cluster.start_rdma_mds("--token-file", cluster.token)
        cluster.start_host_node("auth-a", HOST_A, "--transport", "rdma", "--mds-rdma", cluster.mds_rdma,
                                "--token-file", cluster.token)
        yield cluster
    finally:
        cluster.close()
        subprocess.run(["rm", "-rf", root], check=False)


def test_the_token_over_rdma_send_receive(secured_rdma, tmp_path):
    # auth-a registered and heartbeats over RDMA send/receive: it passed the handshake there.
    assert "MDS: over rdma at " in log_of(secured_rdma, "auth-a")
    token = ("--token-file", secured_rdma.token)
    secured_rdma.cli(*token, "mb", "secured", rdma_mds=True).ok()
    payload = os.urandom(300_000)
    secured_rdma.cli(*token, "put", "-", "secured/x", "--to", "auth-a", input=payload, rdma_mds=True).ok()
    assert secured_rdma.cli(*token, "cat", "secured/x", rdma_mds=True).ok().out == payload
    for options, refusal in (((), r"requires a token"), (("--token-file", secured_rdma.wrong), r"rejected the token")):
        result = secured_rdma.cli("--transport", "rdma", *options, "ls", "secured", rdma_mds=True)
        assert result.rc != 0, result.describe()
        last = result.err_lines[-1]
        assert re.search(r"^geds: authentication failed: MDS 10\.10\.1\.1:\d+ \(rdma\) " + refusal, last), result.describe()
    mds_log = log_of(secured_rdma, "mds")
    assert re.search(r"MDS 10\.10\.1\.1:\d+ \(rdma\) rejected the token \(peer .*authentication failures so far: \d+\)",
                     mds_log), mds_log[-2000:]
