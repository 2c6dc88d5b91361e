"""The deployment token (`--token-file`, GEDS_TOKEN_FILE): a geds-mds and two gedsd that demand it, and every port
(the MDS's, the nodes', a gedsd's local socket) tried with a missing, a wrong and a replayed token, speaking the
handshake by hand; then the right token end to end through the CLI (MDS calls, node-to-node reads, attach,
subscriptions) and the C ABI. RDMA send/receive to the MDS is in test_rdma.py (it needs the soft-RoCE VM)."""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import socket
import struct
import subprocess
import urllib.request

import pytest

from geds_harness import (BIN, KIND_REPLY, KIND_REQUEST, REP_BUCKETS, REP_FAILURE, REP_OK, REQ_LIST_BUCKETS,
                          REQ_READ_BLOB, Cluster, RawConnection, build_c_round_trip, check_geds_launch, frame, run_python,
                          sha256_file, wire_string, write_random_file)

TOKEN = b"correct horse battery staple, 32 bytes or so\n"
WRONG = b"an entirely different secret of some length\n"
# Tags and codes of the handshake (Sources/GedsWire/Codec.swift, Sources/GedsCore/GedsError.swift).
REQ_SUBSCRIBE, REQ_AUTHENTICATE, REQ_PROVE = 32, 35, 36
REP_NODES, REP_CHALLENGE = 10, 20
ERR_AUTHENTICATION_FAILED = 26
LOCAL_HELLO, LOCAL_CALL = 1, 7


def proof(secret: bytes, role: str, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """HMAC-SHA-256 with the token (trailing white space removed) over the role's label and both nonces."""
    return hmac.new(secret.rstrip(), role.encode() + client_nonce + server_nonce, hashlib.sha256).digest()


@pytest.fixture(scope="module")
def secured(session_root):
    root = os.path.join(session_root, "auth")
    os.makedirs(root, exist_ok=True)
    token, wrong = os.path.join(root, "token"), os.path.join(root, "wrong-token")
    for path, secret in ((token, TOKEN), (wrong, WRONG)):
        with open(path, "wb") as handle:
            handle.write(secret)
        os.chmod(path, 0o600)
    cluster = Cluster(root, lease_ms=2000)
    try:
        cluster.start_mds(extra_args=["--token-file", token, "--metrics", "127.0.0.1:0"])
        for name in ("auth-a", "auth-b"):
            cluster.start_node(name, f"host-{name}", extra_args=["--token-file", token,
                                                                 "--socket", os.path.join(root, f"{name}.sock")])
        cluster.token, cluster.wrong = token, wrong
        yield cluster
    finally:
        cluster.close()


def node(cluster, name: str):
    return next(d for d in cluster.daemons if d.name == name)


def socket_of(cluster, name: str) -> str:
    return os.path.join(cluster.root, f"{name}.sock")


# MARK: the handshake by hand, on a TCP port


def authenticate(conn: RawConnection, secret: bytes) -> tuple[list[bytes], object]:
    """Speaks the handshake; returns the frames sent and the reply to the proof (checks the server's proof)."""
    client_nonce = os.urandom(32)
    hello = frame(KIND_REQUEST, 1, bytes([REQ_AUTHENTICATE]) + client_nonce)
    challenge = call_raw(conn, hello)
    assert challenge.tag == REP_CHALLENGE, f"expected a challenge, got {challenge}"
    server_nonce, server_proof = challenge.payload[1:33], challenge.payload[33:65]
    if secret == TOKEN:
        assert server_proof == proof(TOKEN, "geds-auth-server", client_nonce, server_nonce)
    prove = frame(KIND_REQUEST, 2, bytes([REQ_PROVE]) + proof(secret, "geds-auth-client", client_nonce, server_nonce))
    conn.send(prove)
    return [hello, prove], conn.read_frame()


def call_raw(conn: RawConnection, data: bytes):
    conn.send(data)
    reply = conn.read_frame()
    assert reply is not None, "the server closed the connection instead of answering"
    assert reply.kind == KIND_REPLY
    return reply


def assert_refused_and_closed(conn: RawConnection, reply, *patterns: str) -> None:
    assert reply is not None and reply.tag == REP_FAILURE, f"expected a refusal, got {reply}"
    code, message = reply.failure()
    assert code == ERR_AUTHENTICATION_FAILED, (code, message)
    for pattern in patterns:
        assert re.search(pattern, message), message
    assert conn.read_until_closed(timeout=5) == [], "the server sent more after refusing"


def first_request(port_kind: str) -> bytes:
    """A request each port would serve to an authenticated peer."""
    if port_kind == "mds":
        return bytes([REQ_LIST_BUCKETS])
    return bytes([REQ_READ_BLOB]) + struct.pack(">QQQ", 1, 0, 16)


def tcp_ports(secured):
    return {"mds": secured.mds, "node": node(secured, "auth-a")}


@pytest.mark.parametrize("port_kind", ["mds", "node"])
def test_a_missing_token_is_refused_and_nothing_served(secured, port_kind):
    daemon = tcp_ports(secured)[port_kind]
    with RawConnection(daemon.host, daemon.port) as conn:
        # Two requests at once: the second must not be served after the first was refused.
        conn.send(frame(KIND_REQUEST, 7, first_request(port_kind)) + frame(KIND_REQUEST, 8, first_request(port_kind)))
        reply = conn.read_frame()
        assert reply.request_id == 7
        assert_refused_and_closed(conn, reply, r"requires a token")


def test_a_subscription_without_token_is_refused(secured):
    with RawConnection(secured.mds.host, secured.mds.port) as conn:
        # subscribe(bucket "b", from now)
        conn.send(frame(KIND_REQUEST, 3, bytes([REQ_SUBSCRIBE, 1]) + wire_string("b") + wire_string("") + bytes([0])))
        assert_refused_and_closed(conn, conn.read_frame(), r"requires a token")


@pytest.mark.parametrize("port_kind", ["mds", "node"])
def test_a_wrong_token_is_refused(secured, port_kind):
    daemon = tcp_ports(secured)[port_kind]
    with RawConnection(daemon.host, daemon.port) as conn:
        _, reply = authenticate(conn, WRONG)
        assert_refused_and_closed(conn, reply, r"rejected the token")


@pytest.mark.parametrize("port_kind", ["mds", "node"])
def test_the_right_token_opens_the_port_and_a_replay_does_not(secured, port_kind):
    daemon = tcp_ports(secured)[port_kind]
    with RawConnection(daemon.host, daemon.port) as conn:
        recorded, reply = authenticate(conn, TOKEN)
        assert reply.tag == REP_OK, reply
        answer = call_raw(conn, frame(KIND_REQUEST, 9, first_request(port_kind)))
        assert answer.tag != REP_FAILURE or answer.failure()[0] != ERR_AUTHENTICATION_FAILED
        if port_kind == "mds":
            assert answer.tag == REP_BUCKETS
    # The same bytes on a new connection: the server's nonce is new, so the recorded proof no longer fits.
    with RawConnection(daemon.host, daemon.port) as replay:
        challenge = call_raw(replay, recorded[0])
        assert challenge.tag == REP_CHALLENGE
        replay.send(recorded[1] + frame(KIND_REQUEST, 9, first_request(port_kind)))
        reply = replay.read_frame()
        assert reply.request_id == 2
        assert_refused_and_closed(replay, reply, r"rejected the token")


def test_refusals_are_counted_and_logged(secured):
    with RawConnection(secured.mds.host, secured.mds.port) as conn:
        _, reply = authenticate(conn, WRONG)
        assert reply.tag == REP_FAILURE
    with open(secured.mds.log) as log:
        url = re.search(r"metrics on (http://\S+/metrics)", log.read()).group(1)
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    counted = re.search(r"^geds_authentication_failures_total (\d+(?:\.\d+)?)$", text, re.MULTILINE)
    assert counted and float(counted.group(1)) >= 1, text
    with open(secured.mds.log) as log:
        lines = [line for line in log if "rejected the token" in line]
    assert lines and re.search(r"authentication failures so far: \d+", lines[-1]), lines
    assert "127.0.0.1" in lines[-1]  # the peer


# MARK: the local socket


class LocalConnection(RawConnection):
    def __init__(self, path: str, timeout: float = 5):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buffer = b""
        self.closed = False


def local_hello(request_id: int = 5) -> bytes:
    return frame(KIND_REQUEST, request_id, bytes([LOCAL_HELLO]) + struct.pack(">i", os.getpid()) + wire_string(""))


def local_authenticate(conn: LocalConnection, secret: bytes) -> tuple[list[bytes], object]:
    client_nonce = os.urandom(32)
    hello = frame(KIND_REQUEST, 1, bytes([LOCAL_CALL, REQ_AUTHENTICATE]) + client_nonce)
    challenge = call_raw(conn, hello)
    assert challenge.tag == REP_CHALLENGE, challenge
    server_nonce = challenge.payload[1:33]
    prove = frame(KIND_REQUEST, 2,
                  bytes([LOCAL_CALL, REQ_PROVE]) + proof(secret, "geds-auth-client", client_nonce, server_nonce))
    conn.send(prove)
    return [hello, prove], conn.read_frame()


def test_local_socket_refuses_a_missing_token(secured):
    with LocalConnection(socket_of(secured, "auth-a")) as conn:
        conn.send(local_hello())
        assert_refused_and_closed(conn, conn.read_frame(), r"gedsd auth-a .*requires a token")


def test_local_socket_refuses_a_wrong_and_a_replayed_token(secured):
    with LocalConnection(socket_of(secured, "auth-a")) as conn:
        _, reply = local_authenticate(conn, WRONG)
        assert_refused_and_closed(conn, reply, r"rejected the token")
    with LocalConnection(socket_of(secured, "auth-a")) as conn:
        recorded, reply = local_authenticate(conn, TOKEN)
        assert reply.tag == REP_OK
        assert call_raw(conn, local_hello()).tag == REP_NODES
    with LocalConnection(socket_of(secured, "auth-a")) as replay:
        assert call_raw(replay, recorded[0]).tag == REP_CHALLENGE
        replay.send(recorded[1])
        assert_refused_and_closed(replay, replay.read_frame(), r"rejected the token")


# MARK: the CLI


def test_cli_without_token_gets_one_clear_error(secured):
    secured.geds("ls").fails(r"^geds: authentication failed: MDS 127\.0\.0\.1:\d+ requires a token")


def test_cli_with_a_wrong_token_gets_one_clear_error(secured):
    secured.geds("--token-file", secured.wrong, "ls").fails(
        r"^geds: authentication failed: MDS 127\.0\.0\.1:\d+ rejected the token$")


def test_cli_attached_without_token_is_refused(secured):
    secured.geds("--node", socket_of(secured, "auth-a"), "ls").fails(r"authentication failed", r"requires a token")


def test_right_token_end_to_end(secured, workdir):
    source = os.path.join(workdir, "source")
    digest = write_random_file(source, 3 << 20)
    with_flag = ("--token-file", secured.token)
    secured.geds(*with_flag, "mb", "secured").ok()
    # Written by the CLI's own node and handed to auth-a; read by another CLI from there (node port, bulk reads).
    secured.geds(*with_flag, "put", source, "secured/blob").ok()
    target = os.path.join(workdir, "target")
    secured.geds(*with_flag, "get", "secured/blob", target, host_id="host-other").ok()
    assert sha256_file(target) == digest
    # 100 KiB: above the MDS's inline limit, below the bulk-read threshold: the node's multiplexed connection.
    small = os.path.join(workdir, "small")
    small_digest = write_random_file(small, 100 << 10)
    secured.geds(*with_flag, "put", small, "secured/small").ok()
    secured.geds(*with_flag, "get", "secured/small", target, host_id="host-other").ok()
    assert sha256_file(target) == small_digest
    # The variable instead of the flag; and a process attached to a gedsd (local socket).
    env = {"GEDS_TOKEN_FILE": secured.token}
    secured.geds("--node", socket_of(secured, "auth-b"), "put", source, "secured/attached", env=env).ok()
    attached = os.path.join(workdir, "attached")
    secured.geds("get", "secured/attached", attached, env=env, host_id="host-third").ok()
    assert sha256_file(attached) == digest
    listing = secured.geds("ls", "secured", env=env).ok().text
    assert "blob" in listing and "attached" in listing
    # A subscription (its own connection to the MDS): `wait` returns once the object exists.
    waiter = secured.popen(*with_flag, "wait", "secured/later", "--timeout", "30", stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    secured.geds(*with_flag, "put", source, "secured/later").ok()
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err


def test_open_deployments_say_so_once(cluster, secured):
    with open(cluster.mds.log) as log:
        assert log.read().count("the deployment is open") == 1
    with open(next(d for d in cluster.daemons if d.kind == "gedsd").log) as log:
        assert log.read().count("the deployment is open") == 1
    for daemon in secured.daemons:
        with open(daemon.log) as log:
            assert "the deployment is open" not in log.read()


def test_a_token_against_an_open_deployment_is_an_error(cluster, secured):
    cluster.geds("--token-file", secured.token, "ls").fails(r"authentication failed: MDS 127\.0\.0\.1:\d+ has no token")


def test_a_short_token_file_is_refused(secured, workdir):
    short = os.path.join(workdir, "short")
    with open(short, "wb") as handle:
        handle.write(b"tiny\n")
    secured.geds("--token-file", short, "ls").fails(r"at least 16")


# MARK: the C ABI


def test_c_abi_round_trip(secured, workdir):
    program = build_c_round_trip(workdir)
    if program is None:
        pytest.skip(f"{BIN}/libGedsC.so not built (swift build -c release --product GedsC)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEDS_")}
    env.update(LD_LIBRARY_PATH=workdir, GEDS_MDS=secured.mds_address, GEDS_HOST_ID="host-capi", SWIFT_BACKTRACE="enable=no")
    refused = subprocess.run([program, "capi-auth"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "connect -26" in refused.stdout, refused.stdout + refused.stderr
    assert "requires a token" in refused.stdout
    env["GEDS_TOKEN_FILE"] = secured.token
    done = subprocess.run([program, "capi-auth"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


# MARK: Python


PYTHON_ROUND_TRIP = r"""
import os, sys
import geds
mds, token, wrong = sys.argv[1:4]
try:
    geds.connect(mds)
    sys.exit("connected without a token")
except geds.AuthenticationFailed as error:
    assert "requires a token" in str(error) and error.code == -26, error
try:
    geds.connect(mds, token_file=wrong)
    sys.exit("connected with a wrong token")
except geds.AuthenticationFailed as error:
    assert str(error).endswith("rejected the token"), error
data = os.urandom(100_000)
with geds.connect(mds, token_file=token) as client:
    client.create_bucket("python-auth")
    client.put("python-auth", "k", data)
    assert client.get("python-auth", "k") == data
assert "GEDS_TOKEN_FILE" not in os.environ
print("ok")
"""


def test_python_round_trip(secured):
    run_python(PYTHON_ROUND_TRIP, secured.mds_address, secured.token, secured.wrong, host_id="host-python",
               needs_option="token_file")


# MARK: geds-launch


def test_geds_launch_with_a_token(secured, workdir):
    """With GEDS_TOKEN_FILE set, geds-launch's MDS and gedsd demand the token, and geds.env passes it on."""
    check_geds_launch(workdir, {"GEDS_TOKEN_FILE": secured.token}, refusal="requires a token")
