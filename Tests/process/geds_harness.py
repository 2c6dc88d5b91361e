"""Process harness for the GEDS real-process tests: starts geds-mds and gedsd, runs the geds CLI, and speaks
the wire protocol over raw sockets. Every process it starts is killed when the cluster closes (and, through
PR_SET_PDEATHSIG, when the test runner itself dies)."""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("GEDS_BIN") or os.path.join(REPO, ".build", "release")
LISTENING = re.compile(r"listening on (\S+):(\d+)")
MiB = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG = 1: the child gets SIGKILL if the test runner goes away without tearing down.
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)


def binary(name: str) -> str:
    return os.path.join(BIN, name)


# MARK: bytes


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def write_random_file(path: str, size: int) -> str:
    """Writes `size` random bytes to `path`; returns their SHA-256."""
    digest = hashlib.sha256()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            chunk = os.urandom(min(left, 8 * MiB))
            digest.update(chunk)
            handle.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


# MARK: processes


@dataclass
class Result:
    args: list
    rc: int
    out: bytes
    err: str
    elapsed: float

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", "replace")

    @property
    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def describe(self) -> str:
        out = self.text if len(self.out) < 2000 else f"<{len(self.out)} bytes>"
        return f"geds {' '.join(map(str, self.args))}\n rc={self.rc} ({self.elapsed:.2f}s)\n stdout={out!r}\n stderr={self.err!r}"

    def ok(self) -> "Result":
        assert self.rc == 0, "command failed:\n" + self.describe()
        return self

    def fails(self, *patterns: str) -> "Result":
        """Asserts a clean failure: non-zero exit and exactly one stderr line `geds: ...` matching every pattern."""
        assert self.rc != 0, "command should have failed:\n" + self.describe()
        lines = self.err_lines
        assert len(lines) == 1, "expected one error line on stderr:\n" + self.describe()
        assert lines[0].startswith("geds: "), "error line should start with 'geds:':\n" + self.describe()
        for pattern in patterns:
            assert re.search(pattern, lines[0], re.IGNORECASE), f"error should match {pattern!r}:\n" + self.describe()
        return self


@dataclass
class Daemon:
    kind: str
    name: str
    host_id: str
    proc: subprocess.Popen
    host: str
    port: int
    log: str
    tier0: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def cont(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log, errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""


class Cluster:
    """One MDS and any number of gedsd, all on loopback, all state under `root`."""

    def __init__(self, root: str, lease_ms: int = 2000):
        self.root = root
        self.lease_ms = lease_ms
        self.daemons: list[Daemon] = []
        self.clis: list[subprocess.Popen] = []
        self.mds: Daemon | None = None
        os.makedirs(root, exist_ok=True)

    # -- daemons

    def _spawn(self, kind: str, name: str, host_id: str, args: list[str], tier0: str | None = None) -> Daemon:
        log = os.path.join(self.root, f"{name}.log")
        with open(log, "wb") as handle:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                    preexec_fn=_die_with_parent)
        daemon = Daemon(kind, name, host_id, proc, "", 0, log, tier0)
        self.daemons.append(daemon)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with open(log, errors="replace") as handle:
                match = LISTENING.search(handle.read())
            if match:
                daemon.host, daemon.port = match.group(1), int(match.group(2))
                return daemon
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        daemon.kill()
        raise RuntimeError(f"{kind} {name} did not start (rc={proc.poll()}):\n{daemon.log_tail()}")

    def start_mds(self, extra_args: list[str] = ()) -> Daemon:
        self.mds = self._spawn("geds-mds", "mds", "",
                               [binary("geds-mds"), "--listen", "127.0.0.1:0", "--lease-ms", str(self.lease_ms), *extra_args])
        return self.mds

    @property
    def mds_address(self) -> str:
        assert self.mds is not None
        return self.mds.endpoint

    def start_node(self, name: str, host_id: str, tier0: str | None = None, extra_args: list[str] = ()) -> Daemon:
        """`extra_args`: more gedsd options, e.g. tier capacities."""
        tier0 = tier0 or os.path.join(self.root, f"tier0-{name}")
        return self._spawn("gedsd", name, host_id,
                           [binary("gedsd"), "--mds", self.mds_address, "--listen", "127.0.0.1:0", "--tier0", tier0,
                            "--name", name, "--host-id", host_id, *extra_args], tier0)

    # -- the CLI

    def _cli_env(self, host_id: str, env: dict | None) -> dict:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("GEDS_")}
        environment["GEDS_HOST_ID"] = host_id
        environment.update(env or {})
        return environment

    def _cli_args(self, args, mds: str | None, timeout_ms: int | None) -> list[str]:
        argv = [binary("geds")]
        if mds is not None:
            argv += ["--mds", mds]
        if timeout_ms is not None:
            argv += ["--timeout-ms", str(timeout_ms)]
        return argv + [str(a) for a in args]

    def popen(self, *args, host_id: str = "host-cli", mds: str | None = "", timeout_ms: int | None = None,
              env: dict | None = None, **kwargs) -> subprocess.Popen:
        mds = self.mds_address if mds == "" else mds
        proc = subprocess.Popen(self._cli_args(args, mds, timeout_ms), env=self._cli_env(host_id, env),
                                preexec_fn=_die_with_parent, **kwargs)
        self.clis.append(proc)
        return proc

    def geds(self, *args, host_id: str = "host-cli", mds: str | None = "", timeout_ms: int | None = None,
             input: bytes | None = None, env: dict | None = None, timeout: float = 90) -> Result:
        """Runs the CLI to completion. `mds=""` means this cluster's MDS, None means no --mds option."""
        start = time.monotonic()
        proc = self.popen(*args, host_id=host_id, mds=mds, timeout_ms=timeout_ms, env=env,
                          stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"geds {' '.join(map(str, args))} hung for {timeout}s; stderr={err!r}")
        return Result(list(args), proc.returncode, out, err.decode("utf-8", "replace"), time.monotonic() - start)

    # -- waiting on the MDS's view

    def node_states(self) -> dict[str, str]:
        """name -> 'alive' | 'dead', from `geds nodes` (a name is alive if any node by that name is)."""
        states: dict[str, str] = {}
        for line in self.geds("nodes").ok().lines:
            name, state = line.split()[:2]
            if states.get(name) != "alive":
                states[name] = state
        return states

    def wait_until(self, condition, timeout: float, what: str, interval: float = 0.1):
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)

    def wait_dead(self, name: str, timeout: float = 10) -> None:
        self.wait_until(lambda: self.node_states().get(name) == "dead", timeout, f"the MDS to declare {name} dead")

    # -- teardown

    def close(self) -> None:
        for proc in self.clis:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.kill()
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for daemon in reversed(self.daemons):
            if daemon.proc.poll() is None:
                try:
                    os.kill(daemon.proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            daemon.kill()
        # A CLI that was killed leaves its private tier 0 behind; remove those of our processes only.
        for proc in self.clis:
            for leftover in glob.glob(f"/dev/shm/geds-cli-{proc.pid}-*"):
                shutil.rmtree(leftover, ignore_errors=True)


def cli_tier0_dirs(pid: int) -> list[str]:
    return glob.glob(f"/dev/shm/geds-cli-{pid}-*")


# MARK: stat / ls parsing


def parse_stat(text: str) -> dict:
    info = {"locations": [], "meta": {}}
    for line in text.splitlines():
        if line.startswith("  "):
            info["locations"].append(line.strip())
        elif line.startswith("meta: "):
            name, _, value = line[len("meta: "):].partition("=")
            info["meta"][name] = value
        elif ": " in line:
            name, _, value = line.partition(": ")
            info[name] = value
    return info


def parse_ls(text: str) -> tuple[dict[str, int], list[str]]:
    """`geds ls BUCKET...` -> ({key: size}, [common prefixes])."""
    objects, prefixes = {}, []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "PRE":
            prefixes.append(line.split("PRE ", 1)[1])
        else:
            # "YYYY-MM-DD HH:MM:SS SIZE KEY" (keys in these tests have no spaces)
            objects[parts[3]] = int(parts[2])
    return objects, prefixes


# MARK: wire protocol (big-endian, see Sources/GedsWire)

MAGIC = 0x4745
VERSION = 1
KIND_REQUEST, KIND_REPLY, KIND_DATA = 1, 2, 3
HEADER = struct.Struct(">HBBQI")
MAX_MESSAGE = 4 << 20

# Request tags (Sources/GedsWire/Codec.swift)
REQ_CREATE_BUCKET, REQ_LIST_BUCKETS, REQ_LOOKUP, REQ_READ_BLOB, REQ_PULL_BLOB = 4, 6, 10, 19, 20
# Reply tags
REP_OK, REP_FAILURE, REP_BUCKETS, REP_OBJECT, REP_STREAM = 1, 2, 5, 7, 11
# Error codes (Sources/GedsCore/GedsError.swift)
ERR_PROTOCOL_VIOLATION, ERR_FRAME_TOO_LARGE = 12, 13


def header(kind: int, request_id: int, length: int, magic: int = MAGIC, version: int = VERSION) -> bytes:
    return HEADER.pack(magic, version, kind, request_id, length)


def frame(kind: int, request_id: int, payload: bytes) -> bytes:
    return header(kind, request_id, len(payload)) + payload


def wire_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">I", len(data)) + data


def decode_string(payload: bytes, offset: int) -> tuple[str, int]:
    (count,) = struct.unpack_from(">I", payload, offset)
    offset += 4
    return payload[offset:offset + count].decode(), offset + count


@dataclass
class Frame:
    kind: int
    request_id: int
    payload: bytes

    @property
    def tag(self) -> int:
        return self.payload[0] if self.payload else -1

    def failure(self) -> tuple[int, str]:
        assert self.kind == KIND_REPLY and self.tag == REP_FAILURE, f"not a failure reply: {self}"
        (code,) = struct.unpack_from(">H", self.payload, 1)
        message, _ = decode_string(self.payload, 3)
        return code, message


class RawConnection:
    """A plain TCP connection for sending hand-made frames."""

    def __init__(self, host: str, port: int, timeout: float = 5):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Reads more bytes; False once the peer closed (EOF or reset)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from the server in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        except socket.timeout as error:
            raise TimeoutError("no data from the server in time") from error
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    def read_frame(self, timeout: float = 5) -> Frame | None:
        """The next frame, or None if the server closed the connection first."""
        deadline = time.monotonic() + timeout
        while len(self.buffer) < HEADER.size:
            if not self._fill(deadline):
                return None
        magic, version, kind, request_id, length = HEADER.unpack_from(self.buffer)
        assert magic == MAGIC and version == VERSION, f"server sent a bad header: {self.buffer[:16].hex()}"
        while len(self.buffer) < HEADER.size + length:
            if not self._fill(deadline):
                return None
        payload = self.buffer[HEADER.size:HEADER.size + length]
        self.buffer = self.buffer[HEADER.size + length:]
        return Frame(kind, request_id, payload)

    def read_until_closed(self, timeout: float = 5) -> list[Frame]:
        """Every frame until the server closes; raises TimeoutError if it keeps the connection open."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            next_frame = self.read_frame(timeout=max(deadline - time.monotonic(), 0.001))
            if next_frame is None:
                return frames
            frames.append(next_frame)

    def call(self, request_id: int, payload: bytes, timeout: float = 5) -> Frame:
        self.send(frame(KIND_REQUEST, request_id, payload))
        reply = self.read_frame(timeout)
        assert reply is not None, "server closed the connection instead of answering a valid request"
        assert reply.kind == KIND_REPLY and reply.request_id == request_id, f"unexpected frame {reply}"
        return reply

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def raw_list_buckets(host: str, port: int) -> list[str]:
    with RawConnection(host, port) as conn:
        reply = conn.call(7, bytes([REQ_LIST_BUCKETS]))
        assert reply.tag == REP_BUCKETS, f"unexpected reply {reply}"
        (count,) = struct.unpack_from(">I", reply.payload, 1)
        names, offset = [], 5
        for _ in range(count):
            name, offset = decode_string(reply.payload, offset)
            names.append(name)
        return names


def raw_read_blob(host: str, port: int, blob: int, size: int, timeout: float = 20) -> bytes:
    """Reads a whole blob from a node with a hand-made readBlob request."""
    with RawConnection(host, port, timeout=timeout) as conn:
        conn.send(frame(KIND_REQUEST, 42, bytes([REQ_READ_BLOB]) + struct.pack(">QQQ", blob, 0, size)))
        reply = conn.read_frame(timeout)
        assert reply is not None and reply.kind == KIND_REPLY and reply.request_id == 42, f"bad reply {reply}"
        assert reply.tag == REP_STREAM, f"expected a stream reply, got {reply}"
        (length,) = struct.unpack_from(">Q", reply.payload, 1)
        assert length == size
        data = bytearray()
        while len(data) < size:
            chunk = conn.read_frame(timeout)
            assert chunk is not None, f"node closed after {len(data)} of {size} bytes"
            assert chunk.kind == KIND_DATA and chunk.request_id == 42
            data += chunk.payload
        return bytes(data)


def tcp_connections_to(port: int) -> list[tuple[int, int, int]]:
    """(state, tx_queue, rx_queue) of every IPv4 loopback socket whose remote port is `port`."""
    found = []
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port:
                tx, rx = (int(x, 16) for x in fields[4].split(":"))
                found.append((int(fields[3], 16), tx, rx))
    return found


TCP_ESTABLISHED = 1


def resting_bytes(tier0: str, blob: str, size: int) -> bytes | None:
    """A blob's bytes at rest in a tier-0 folder: its own file, or (up to 64 KiB) its slot in a slab file, found
    by the slot's header: the blob id and the size, little-endian, at an 8-byte boundary. None when it is in
    neither (a freed slot names no blob)."""
    own = os.path.join(tier0, blob)
    if os.path.exists(own):
        with open(own, "rb") as handle:
            return handle.read()
    header = struct.pack("<QQ", int(blob, 16), size)
    for name in sorted(os.listdir(tier0)):
        if not name.startswith("slab-"):
            continue
        with open(os.path.join(tier0, name), "rb") as handle:
            data = handle.read()
        at = data.find(header)
        while at >= 0 and at % 8:
            at = data.find(header, at + 1)
        if at >= 0:
            return data[at + len(header):at + len(header) + size]
    return None


# A C program that connects with libgeds (geds_connect: $GEDS_MDS and the other variables), writes an object to the
# bucket named by its argument, reads it back and compares; prints "ok", or "connect RC MESSAGE" and exits 2.
C_ROUND_TRIP = r"""
#include <geds.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    const char *bucket = argc > 1 ? argv[1] : "capi";
    geds_t *g = NULL;
    int rc = geds_connect(NULL, &g);
    if (rc != 0) { printf("connect %d %s\n", rc, geds_last_error()); return 2; }
    const char text[] = "bytes through libgeds";
    geds_writer_t *w = NULL;
    if ((rc = geds_create_bucket(g, bucket)) != 0 || (rc = geds_create(g, bucket, "k", &w)) != 0 ||
        (rc = geds_write(w, text, sizeof text, 0)) != 0 || (rc = geds_seal(w)) != 0) {
        printf("put %d %s\n", rc, geds_last_error());
        return 3;
    }
    char back[64] = {0};
    int64_t got = geds_read_object(g, bucket, "k", back, sizeof back, 0);
    if (got != (int64_t)sizeof text || memcmp(back, text, sizeof text) != 0) { printf("read %lld\n", (long long)got); return 4; }
    geds_close(g);
    printf("ok\n");
    return 0;
}
"""


def build_c_round_trip(workdir: str) -> str | None:
    """Compiles C_ROUND_TRIP against this build's libgeds (linked as WORKDIR/libgeds.so: run it with
    LD_LIBRARY_PATH=WORKDIR); None when libGedsC.so is not built."""
    library = os.path.join(BIN, "libGedsC.so")
    if not os.path.exists(library):
        return None
    os.symlink(library, os.path.join(workdir, "libgeds.so"))
    program = os.path.join(workdir, "round_trip")
    with open(program + ".c", "w") as source:
        source.write(C_ROUND_TRIP)
    subprocess.run(["cc", "-std=c99", "-Wall", "-o", program, program + ".c", "-I",
                    os.path.join(REPO, "CShims", "CGeds", "include"), "-L", workdir, "-lgeds"], check=True)
    return program


def check_geds_launch(workdir: str, variables: dict[str, str], refusal: str) -> None:
    """tools/geds-launch start (local launcher, 127.0.0.1) with the deployment's `variables` set (token, TLS files):
    geds.env exports each one (as a real path); `geds nodes` without them fails with `refusal` in its error, with
    what geds.env exports lists the gedsd alive; geds-launch stop then succeeds."""
    launch = os.path.join(REPO, "tools", "geds-launch")
    state = os.path.join(workdir, "launch")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEDS_")}
    env.update(GEDS_BIN=BIN, GEDS_HOST_ID="host-launch", **variables)
    common = ["--dir", state]
    started = subprocess.run([launch, "start", *common, "--launcher", "local", "--address", "127.0.0.1", "--port", "0",
                              "--tier0", os.path.join(workdir, "launch-tier0")], env=env, capture_output=True, text=True,
                             timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        with open(os.path.join(state, "geds.env")) as handle:
            exported = dict(re.findall(r"^export (\w+)=(\S+)$", handle.read(), re.MULTILINE))
        for variable, path in variables.items():
            assert exported[variable] == os.path.realpath(path), exported
        job = {k: v for k, v in env.items() if k not in variables}
        refused = subprocess.run([binary("geds"), "--mds", exported["GEDS_MDS"], "nodes"], env=job,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and refusal in refused.stderr, refused.stderr
        nodes = subprocess.run([binary("geds"), "--mds", exported["GEDS_MDS"], "nodes"],
                               env={**job, **exported}, capture_output=True, text=True, timeout=60)
        assert re.search(r"^gedsd-\S+\s+alive", nodes.stdout, re.MULTILINE), nodes.stdout + nodes.stderr
    finally:
        stopped = subprocess.run([launch, "stop", *common], env=env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr


def run_python(script: str, *args: str, host_id: str, needs_option: str) -> None:
    """Runs `script` (python3 -c) with the installed geds package, which must print "ok"; skips the test when that
    package is missing or predates `needs_option` (tools/python-install.sh installs this tree's)."""
    import importlib.util
    import pytest
    if importlib.util.find_spec("geds") is None:
        pytest.skip("the geds Python package is not installed (tools/python-install.sh)")
    import geds.client
    if needs_option not in geds.client._CONFIG_FIELDS:
        pytest.skip(f"the installed geds Python package predates {needs_option} (tools/python-install.sh installs this one)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEDS_")}
    env.update(GEDS_HOST_ID=host_id, SWIFT_BACKTRACE="enable=no")
    done = subprocess.run(["python3", "-c", script, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
