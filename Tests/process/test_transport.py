"""Transport selection: `--transport auto|rdma|tcp` on gedsd and geds. This machine has no RDMA device, so
`auto` and `tcp` run over TCP and `rdma` is refused with one clear line; where a device exists the refusals
are skipped (the VM's RDMA suite covers that side)."""
import os
import subprocess
import time

import pytest

from geds_harness import binary

NO_DEVICE = "--transport rdma: no RDMA device: "


def rdma_device_present() -> bool:
    try:
        return bool(os.listdir("/sys/class/infiniband"))
    except OSError:
        return False


needs_no_device = pytest.mark.skipif(rdma_device_present(), reason="this machine has an RDMA device")


def run_gedsd(cluster, session_root, name, *args):
    tier0 = os.path.join(session_root, f"tier0-{name}")
    start = time.monotonic()
    result = subprocess.run([binary("gedsd"), "--mds", cluster.mds_address, "--tier0", tier0, "--name", name, *args],
                            capture_output=True, text=True, timeout=30)
    return result, time.monotonic() - start, tier0


@needs_no_device
def test_gedsd_demanding_rdma_without_a_device_refuses_to_start(cluster, session_root):
    result, elapsed, tier0 = run_gedsd(cluster, session_root, "node-rdma", "--transport", "rdma")
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gedsd: " + NO_DEVICE), result
    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert not os.path.exists(tier0), "it must fail before creating its tier 0"
    assert "node-rdma" not in cluster.node_states()


def test_gedsd_rejects_an_unknown_transport(cluster, session_root):
    result, _, _ = run_gedsd(cluster, session_root, "node-bogus", "--transport", "bogus")
    assert result.returncode != 0, result
    assert "gedsd: --transport: expected auto, rdma or tcp, got 'bogus'" in result.stderr.splitlines(), result


@needs_no_device
@pytest.mark.parametrize("transport, why", [
    ("auto", "transport: tcp (auto: no RDMA device: "),
    ("tcp", "transport: tcp (asked for)"),
])
def test_auto_and_tcp_serve_over_tcp(cluster, extra_nodes, bucket, transport, why):
    name = f"node-{transport}"
    node = extra_nodes(name, f"host-{transport}", extra_args=["--transport", transport])
    with open(node.log, errors="replace") as handle:
        log = handle.read()
    assert log.count("transport: ") == 1 and why in log, log
    path = f"{bucket}/over-{transport}"
    cluster.geds("put", "-", path, "--to", name, input=b"bytes over tcp").ok()
    assert cluster.geds("where", path).ok().lines == [f"{name} tier0 host=host-{transport} transports=tcp://{node.endpoint}"]
    nodes = {line.split()[0]: line for line in cluster.geds("nodes").ok().lines}
    assert f"tcp={node.endpoint} host=" in nodes[name], nodes[name]
    assert " rdma=" not in nodes[name], "a node without RDMA must not advertise it"
    assert cluster.geds("cat", path, host_id="host-other").ok().out == b"bytes over tcp"


@needs_no_device
@pytest.mark.parametrize("before_command", [True, False])
def test_geds_demanding_rdma_without_a_device_fails(cluster, before_command):
    args = ["--transport", "rdma", "ls"] if before_command else ["ls", "--transport", "rdma"]
    cluster.geds(*args).fails("^geds: " + NO_DEVICE.replace("-", r"\-"))


def test_geds_transport_tcp_and_unknown(cluster, bucket):
    cluster.geds("--transport", "tcp", "ls", bucket).ok()
    cluster.geds("ls", bucket, "--transport=auto").ok()
    cluster.geds("--transport", "bogus", "ls", bucket).fails(r"expected auto, rdma or tcp, got 'bogus'")


@needs_no_device
def test_mds_asked_to_listen_for_rdma_without_a_device_says_so_in_one_line():
    start = time.monotonic()
    result = subprocess.run([binary("geds-mds"), "--listen", "127.0.0.1:0", "--rdma-listen", "10.10.0.1:0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("geds-mds: --rdma-listen: no RDMA device: "), result
    assert "listening" not in result.stdout, "it must refuse before it listens on TCP"
    assert time.monotonic() - start < 10
