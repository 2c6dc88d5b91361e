"""Attach mode: CLIs on the host of a gedsd use its tier 0 through its local socket instead of starting nodes
of their own; what they write outlives them, a writer killed mid-write leaves nothing behind, and the socket
lets in only whom its mode allows."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import time

import pytest

from geds_harness import (HEADER, KIND_REQUEST, MAGIC, MAX_MESSAGE, VERSION, binary, parse_ls, parse_stat, sha256,
                          sha256_file, write_random_file)

HOST = "host-attach"
MiB = 1 << 20


@pytest.fixture
def attached(extra_nodes, request):
    """A gedsd of host `host-attach` with its local socket in a folder other users can reach."""
    name = f"attach-{os.getpid()}-{len(request.node.name)}"
    folder = f"/tmp/geds-attach-{os.getpid()}"
    os.makedirs(folder, exist_ok=True)
    os.chmod(folder, 0o755)
    socket_path = f"{folder}/{name}.sock"
    daemon = extra_nodes(name, HOST, extra_args=["--socket", socket_path])
    with open(daemon.log) as handle:
        assert f"local socket {socket_path}" in handle.read(), "the listening line names the socket"
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600, "the socket is for this user only by default"
    yield daemon, socket_path
    shutil.rmtree(folder, ignore_errors=True)


def run(cluster, socket_path, *args, **kwargs):
    return cluster.geds("--node", socket_path, *args, host_id=HOST, **kwargs)


def held_files(tier0: str) -> list[str]:
    """Tier-0 files holding objects: not those kept, under a private name, for later copies (the recycle pool)."""
    return [name for name in os.listdir(tier0) if not name.startswith(".recycle-")]


def unsealed_files(tier0: str) -> list[str]:
    """Tier-0 files still writable (sealed ones are made read-only)."""
    return [name for name in os.listdir(tier0) if os.stat(os.path.join(tier0, name)).st_mode & 0o200]


def test_written_by_one_process_read_by_another_after_it_exited(cluster, bucket, workdir, attached):
    daemon, socket_path = attached
    nodes_before = {line.split()[0] for line in cluster.geds("nodes").ok().lines}
    source = os.path.join(workdir, "source")
    digest = write_random_file(source, 24 * MiB + 13)
    put = run(cluster, socket_path, "--verbose", "put", source, f"{bucket}/object").ok()
    assert f"attached to gedsd {daemon.name}" in put.err, "the choice is logged"
    # The writer has exited: the bytes are in the gedsd's tier 0, and only there.
    info = parse_stat(run(cluster, socket_path, "stat", f"{bucket}/object").ok().text)
    assert info["locations"] == [f"tier0 on {daemon.name} (host {HOST}, tcp {daemon.endpoint})"]
    assert any(os.path.getsize(os.path.join(daemon.tier0, name)) == 24 * MiB + 13 for name in os.listdir(daemon.tier0))
    out = os.path.join(workdir, "out")
    run(cluster, socket_path, "get", f"{bucket}/object", out).ok()
    assert sha256_file(out) == digest
    # A reader on another host reads it from the gedsd over the network as from any node.
    assert sha256(cluster.geds("cat", f"{bucket}/object").ok().out) == digest
    # No process became a node: the MDS lists the gedsds and nothing else new.
    nodes_after = cluster.geds("nodes").ok().lines
    assert {line.split()[0] for line in nodes_after} - nodes_before == set()
    assert not [line for line in nodes_after if " alive embedded " in line]


def test_default_socket_is_found_by_host_id(cluster, bucket, workdir, extra_nodes):
    name = f"attach-default-{os.getpid()}"
    daemon = extra_nodes(name, HOST)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = f"{runtime}/geds" if runtime else "/run/geds"
    with open(daemon.log) as handle:
        assert f"local socket {folder}/{name}" in handle.read()
    source = os.path.join(workdir, "source")
    digest = write_random_file(source, 3 * MiB)
    put = cluster.geds("--verbose", "put", source, f"{bucket}/found", host_id=HOST).ok()
    assert "attached to gedsd" in put.err and f"found in {folder}" in put.err
    info = parse_stat(cluster.geds("stat", f"{bucket}/found", host_id=HOST).ok().text)
    assert [location.split()[2] for location in info["locations"]] == [name]
    # GEDS_NODE names the socket just as --node does.
    out = os.path.join(workdir, "out")
    sockets = [entry for entry in os.listdir(folder) if entry.startswith(name)]
    get = cluster.geds("--verbose", "get", f"{bucket}/found", out, host_id=HOST,
                       env={"GEDS_NODE": f"{folder}/{sockets[0]}"}).ok()
    assert "(GEDS_NODE)" in get.err
    assert sha256_file(out) == digest
    # A process of another host id is not attached, and runs its own node.
    other = cluster.geds("--verbose", "ls", bucket, host_id="host-elsewhere").ok()
    assert "runs its own node" in other.err


def test_writer_killed_mid_write_publishes_nothing_and_gives_back_its_space(cluster, bucket, attached):
    daemon, socket_path = attached
    writer = cluster.popen("--node", socket_path, "put", "-", f"{bucket}/half", host_id=HOST,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writer.stdin.write(os.urandom(16 * MiB))
    writer.stdin.flush()

    def half_written():
        files = unsealed_files(daemon.tier0)
        return files if files and os.path.getsize(os.path.join(daemon.tier0, files[0])) >= 8 * MiB else None
    cluster.wait_until(half_written, 20, "the attached writer's bytes in the gedsd's tier 0", interval=0.02)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)
    cluster.wait_until(lambda: not unsealed_files(daemon.tier0), 10, "the gedsd to reclaim the unsealed file")
    assert held_files(daemon.tier0) == []
    objects, _ = parse_ls(run(cluster, socket_path, "ls", bucket).ok().text)
    assert objects == {}
    with open(daemon.log) as handle:
        assert "1 unsealed objects reclaimed" in handle.read()
    # The gedsd goes on serving attached writers.
    run(cluster, socket_path, "put", "-", f"{bucket}/after", input=b"still here").ok()
    assert run(cluster, socket_path, "cat", f"{bucket}/after").ok().out == b"still here"


def test_32_attached_processes_write_and_read_at_once(cluster, bucket, workdir, attached):
    daemon, socket_path = attached
    count = 32
    digests = {}
    for index in range(count):
        digests[index] = write_random_file(os.path.join(workdir, f"in{index}"), MiB + index * 4099)
    args = lambda *rest: ["--node", socket_path, *rest]
    writers = [cluster.popen(*args("put", os.path.join(workdir, f"in{index}"), f"{bucket}/o{index}"), host_id=HOST,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for index in range(count)]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    # Then 32 readers of those and 32 more writers, all at once.
    readers = [cluster.popen(*args("get", f"{bucket}/o{index}", os.path.join(workdir, f"out{index}")), host_id=HOST,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for index in range(count)]
    writers = [cluster.popen(*args("put", os.path.join(workdir, f"in{index}"), f"{bucket}/again{index}"), host_id=HOST,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for index in range(count)]
    for process in readers + writers:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    for index in range(count):
        assert sha256_file(os.path.join(workdir, f"out{index}")) == digests[index]
        assert sha256(run(cluster, socket_path, "cat", f"{bucket}/again{index}").ok().out) == digests[index]
    objects, _ = parse_ls(run(cluster, socket_path, "ls", bucket).ok().text)
    assert len(objects) == 2 * count
    assert len(held_files(daemon.tier0)) == 2 * count


def test_another_user_is_refused(cluster, bucket, attached):
    daemon, socket_path = attached
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a process as another user")
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "env", f"GEDS_HOST_ID={HOST}",
                 binary("geds"), "--mds", cluster.mds_address, "--node", socket_path, "ls", bucket]
    # The socket file's mode keeps the process out...
    denied = subprocess.run(as_nobody, capture_output=True, text=True, timeout=60)
    assert denied.returncode != 0 and "permission denied" in denied.stderr.lower(), denied.stderr
    # ... and with the file opened up behind the gedsd's back, SO_PEERCRED still does.
    os.chmod(socket_path, 0o666)
    refused = subprocess.run(as_nobody, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert f"gedsd {daemon.name} refuses user" in refused.stderr and "--socket-mode" in refused.stderr, refused.stderr


def test_socket_mode_lets_other_users_in(cluster, bucket, extra_nodes):
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a process as another user")
    folder = f"/tmp/geds-attach-open-{os.getpid()}"
    os.makedirs(folder, exist_ok=True)
    os.chmod(folder, 0o755)
    try:
        socket_path = f"{folder}/open.sock"
        extra_nodes(f"attach-open-{os.getpid()}", HOST, extra_args=["--socket", socket_path, "--socket-mode", "666"])
        assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o666
        cluster.geds("--node", socket_path, "put", "-", f"{bucket}/shared", input=b"for everyone", host_id=HOST).ok()
        as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "env", f"GEDS_HOST_ID={HOST}",
                     binary("geds"), "--mds", cluster.mds_address, "--node", socket_path, "cat", f"{bucket}/shared"]
        allowed = subprocess.run(as_nobody, capture_output=True, timeout=60)
        assert allowed.returncode == 0, allowed.stderr
        assert allowed.stdout == b"for everyone"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_gedsd_restart_fails_attached_calls_clearly(cluster, bucket, attached):
    daemon, socket_path = attached
    writer = cluster.popen("--node", socket_path, "put", "-", f"{bucket}/cut", host_id=HOST,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writer.stdin.write(os.urandom(MiB))
    writer.stdin.flush()
    cluster.wait_until(lambda: unsealed_files(daemon.tier0), 20, "the attached writer's file")
    daemon.kill()
    _, err = writer.communicate(input=b"more", timeout=60)
    assert writer.returncode != 0
    assert "gedsd" in err.decode() and "went away" in err.decode(), err
    # A CLI started meanwhile says there is no gedsd at that socket.
    run(cluster, socket_path, "ls", bucket).fails("cannot connect to gedsd at " + socket_path)


def test_attached_put_to_another_gedsd_hands_the_object_over(cluster, bucket, node_b, attached):
    daemon, socket_path = attached
    data = os.urandom(2 * MiB + 5)
    run(cluster, socket_path, "put", "-", f"{bucket}/handed", "--to", "node-b", input=data).ok()
    info = parse_stat(run(cluster, socket_path, "stat", f"{bucket}/handed").ok().text)
    assert [location.split()[2] for location in info["locations"]] == ["node-b"]
    assert held_files(daemon.tier0) == [], "the attached gedsd kept no copy after the hand-off"
    # Reading it attached fetches it into the gedsd's tier 0 (a cached copy) and maps it from there.
    assert sha256(run(cluster, socket_path, "cat", f"{bucket}/handed").ok().out) == sha256(data)
    assert [os.path.getsize(os.path.join(daemon.tier0, name)) for name in held_files(daemon.tier0)] == [len(data)]


def test_attached_commands_behave_as_embedded(cluster, bucket, workdir, attached):
    daemon, socket_path = attached
    run(cluster, socket_path, "put", "-", f"{bucket}/a/one", input=b"one").ok()
    run(cluster, socket_path, "put", "-", f"{bucket}/a/two", input=b"two").ok()
    run(cluster, socket_path, "cp", f"{bucket}/a/one", f"{bucket}/b/copy").ok()
    run(cluster, socket_path, "mv", f"{bucket}/a/two", f"{bucket}/b/moved").ok()
    run(cluster, socket_path, "meta", f"{bucket}/b/copy", "color=blue").ok()
    objects, prefixes = parse_ls(run(cluster, socket_path, "ls", f"{bucket}/", "--delimiter", "/").ok().text)
    assert prefixes == ["a/", "b/"]
    objects, _ = parse_ls(run(cluster, socket_path, "ls", bucket).ok().text)
    assert objects == {"a/one": 3, "b/copy": 3, "b/moved": 3}
    assert run(cluster, socket_path, "cat", f"{bucket}/b/moved").ok().out == b"two"
    assert parse_stat(run(cluster, socket_path, "stat", f"{bucket}/b/copy").ok().text)["meta"] == {"color": "blue"}
    run(cluster, socket_path, "cat", f"{bucket}/nothing").fails("no such object")
    run(cluster, socket_path, "rm", f"{bucket}/b/copy").ok()
    objects, _ = parse_ls(run(cluster, socket_path, "ls", bucket).ok().text)
    assert set(objects) == {"a/one", "b/moved"}


def frame(kind: int, payload: bytes, length: int | None = None, magic: int = MAGIC) -> bytes:
    return HEADER.pack(magic, VERSION, kind, 1, len(payload) if length is None else length) + payload


def hello(pid: int = 1, mds: str = "") -> bytes:
    encoded = mds.encode()
    return frame(KIND_REQUEST, bytes([1]) + struct.pack(">i", pid) + struct.pack(">I", len(encoded)) + encoded)


def closed_after(socket_path: str, *messages: bytes) -> bytes:
    """Sends the messages and reads until the gedsd closes the connection; returns what it sent."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(10)
        connection.connect(socket_path)
        for message in messages:
            connection.sendall(message)
        connection.shutdown(socket.SHUT_WR)  # a frame cut short ends there
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
        return received


def test_malformed_local_frames_close_only_that_connection(cluster, bucket, attached):
    daemon, socket_path = attached
    run(cluster, socket_path, "put", "-", f"{bucket}/kept", input=b"kept").ok()
    assert closed_after(socket_path, b"\x00" * 16) == b"", "bad magic"
    assert closed_after(socket_path, frame(KIND_REQUEST, b"", length=MAX_MESSAGE + 1)) == b"", "oversized frame"
    assert closed_after(socket_path, frame(KIND_REQUEST, bytes([7]) + b"\x00" * 4)) == b"", "a call before hello"
    assert closed_after(socket_path, hello(), frame(KIND_REQUEST, bytes([99]))) != b"", "unknown request after hello"
    assert closed_after(socket_path, hello(), frame(KIND_REQUEST, bytes([2, 0, 0]))) != b"", "truncated create"
    assert closed_after(socket_path, hello(), b"\x47\x45\x01") != b"", "a header cut short"
    refused = closed_after(socket_path, hello(mds="10.0.0.1:1"))
    assert b"serves the MDS at" in refused, refused
    # The gedsd serves attached processes as before, and nothing stored was lost.
    assert run(cluster, socket_path, "cat", f"{bucket}/kept").ok().out == b"kept"
    assert daemon.proc.poll() is None


def test_attached_watch_and_wait_subscribe_at_the_mds(cluster, bucket, workdir, attached):
    """An attached process has no node of its own: its subscriptions go straight to the MDS."""
    daemon, socket_path = attached
    waiter = cluster.popen("--node", socket_path, "wait", f"{bucket}/later", "--timeout", "30", host_id=HOST,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    source = os.path.join(workdir, "later")
    write_random_file(source, 4096)
    time.sleep(1)  # the waiter has looked once and subscribed
    run(cluster, socket_path, "put", source, f"{bucket}/later").ok()
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    events = run(cluster, socket_path, "watch", bucket, "--from", "0", "--count", "2", timeout=60).ok().lines
    assert [line.split()[1:] for line in events] == [["bucket-created", bucket], ["created", f"{bucket}/later"]], events
