"""TLS on TCP (`--tls-cert`, `--tls-key`, `--tls-ca`, GEDS_TLS_*): a CA and certificates made with the openssl CLI
here, a geds-mds and two gedsd that demand TLS with client certificates and the deployment token (whose handshake
runs inside TLS), the CLI's bytes compared by SHA-256 after remote reads between nodes; the ports speak nothing but
TLS; a plain peer against a TLS one and a TLS one against a plain one, a CA that did not sign the server's
certificate, a certificate that does not name the address dialled and a client without a certificate each fail with
one clear error, quickly. The local socket and RDMA are not TLS (docs/ARCHITECTURE.md, Security)."""
from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from geds_harness import (BIN, KIND_REQUEST, REP_FAILURE, REQ_LIST_BUCKETS, Cluster, RawConnection, build_c_round_trip,
                          check_geds_launch, frame, run_python, sha256_file, write_random_file)

TOKEN = b"a token for the TLS tests, long enough\n"
# A wrong peer must be told within this (the CLI's --timeout-ms is 10 s: no test waits for it).
QUICK = 8.0

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is not installed")


def openssl(*args: str, cwd: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def make_ca(folder: str, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=folder)


def make_member(folder: str, name: str, ca: str, names: str) -> None:
    """A certificate for servers and clients alike, signed by `ca`, naming `names` (subjectAltName syntax)."""
    with open(os.path.join(folder, f"{name}.ext"), "w") as ext:
        ext.write(f"subjectAltName={names}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                  "extendedKeyUsage=serverAuth,clientAuth\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext", cwd=folder)


class Certificates:
    def __init__(self, folder: str):
        self.folder = folder
        make_ca(folder, "ca")
        make_ca(folder, "other-ca")
        # This host's addresses too: geds-launch's gedsd advertise one (peers check it against the certificate).
        addresses = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
        make_member(folder, "member", "ca", ",".join(["IP:127.0.0.1", "DNS:localhost", *(f"IP:{a}" for a in addresses)]))
        make_member(folder, "stranger", "other-ca", "IP:127.0.0.1,DNS:localhost")
        make_member(folder, "elsewhere", "ca", "DNS:elsewhere.example,IP:10.9.8.7")

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def flags(self, member: str = "member", ca: str = "ca") -> list[str]:
        return ["--tls-cert", self.path(f"{member}.pem"), "--tls-key", self.path(f"{member}.key"),
                "--tls-ca", self.path(f"{ca}.pem")]

    def environment(self, member: str = "member", ca: str = "ca") -> dict[str, str]:
        return {"GEDS_TLS_CERT": self.path(f"{member}.pem"), "GEDS_TLS_KEY": self.path(f"{member}.key"),
                "GEDS_TLS_CA": self.path(f"{ca}.pem")}


@pytest.fixture(scope="module")
def certificates(session_root):
    folder = os.path.join(session_root, "tls-certificates")
    os.makedirs(folder, exist_ok=True)
    return Certificates(folder)


@pytest.fixture(scope="module")
def secure(session_root, certificates):
    """An MDS and two gedsd with TLS (client certificates required) and a token."""
    root = os.path.join(session_root, "tls")
    os.makedirs(root, exist_ok=True)
    token = os.path.join(root, "token")
    with open(token, "wb") as handle:
        handle.write(TOKEN)
    cluster = Cluster(root, lease_ms=2000)
    try:
        common = ["--token-file", token, *certificates.flags()]
        cluster.start_mds(extra_args=common)
        for name in ("tls-a", "tls-b"):
            cluster.start_node(name, f"host-{name}", extra_args=[*common, "--socket", os.path.join(root, f"{name}.sock")])
        cluster.token = token
        cluster.flags = ("--token-file", token, *certificates.flags())
        yield cluster
    finally:
        cluster.close()


def node(cluster, name: str):
    return next(d for d in cluster.daemons if d.name == name)


def timed_failure(cluster, *args, **kwargs):
    start = time.monotonic()
    result = cluster.geds(*args, timeout=60, **kwargs)
    elapsed = time.monotonic() - start
    assert elapsed < QUICK, f"took {elapsed:.1f}s to fail:\n{result.describe()}"
    return result


def tls_context(certificates, member: str | None = "member") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certificates.path("ca.pem"))
    if member:
        context.load_cert_chain(certificates.path(f"{member}.pem"), certificates.path(f"{member}.key"))
    return context


# MARK: the daemons


def test_daemons_say_they_serve_tls(secure):
    for daemon in secure.daemons:
        with open(daemon.log) as log:
            text = log.read()
        assert text.count("TCP over TLS (certificate") == 1, text
        assert "client certificates signed by" in text
    with open(node(secure, "tls-a").log) as log:
        assert "bulk reads and caller-thread MDS lookups go through the event loop" in log.read()


@pytest.mark.parametrize("port_kind", ["mds", "node"])
def test_ports_speak_only_tls(secure, certificates, port_kind):
    daemon = secure.mds if port_kind == "mds" else node(secure, "tls-a")
    # A plain frame: nothing is served, the connection is closed.
    with RawConnection(daemon.host, daemon.port) as conn:
        conn.send(frame(KIND_REQUEST, 1, bytes([REQ_LIST_BUCKETS])))
        assert conn.read_until_closed(timeout=5) == []
    # TLS without a client certificate: refused by the handshake (mutual TLS).
    with socket.create_connection((daemon.host, daemon.port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            with tls_context(certificates, member=None).wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(frame(KIND_REQUEST, 1, bytes([REQ_LIST_BUCKETS])))
                assert tls.recv(1) == b""
    # TLS with the deployment's certificate: the frame protocol inside (the token's handshake comes first here).
    if port_kind == "mds":
        with socket.create_connection((daemon.host, daemon.port), timeout=5) as raw:
            with tls_context(certificates).wrap_socket(raw, server_hostname="localhost") as tls:
                conn = RawConnection.__new__(RawConnection)
                conn.sock, conn.buffer, conn.closed = tls, b"", False
                reply = conn.call(1, bytes([REQ_LIST_BUCKETS]))
                assert reply.tag == REP_FAILURE and "requires a token" in reply.failure()[1]


# MARK: end to end


def test_put_get_across_nodes_over_tls(secure, certificates, workdir):
    flags = secure.flags
    secure.geds(*flags, "mb", "tls").ok()
    target = os.path.join(workdir, "target")
    # 8 MiB (streamed in 1 MiB chunks) and 100 KiB: written by the CLI's node, handed to a gedsd, read by another
    # CLI on another host id, so the bytes come over a node's TLS port.
    for name, size in (("large", 8 << 20), ("small", 100 << 10)):
        source = os.path.join(workdir, name)
        digest = write_random_file(source, size)
        secure.geds(*flags, "put", source, f"tls/{name}").ok()
        os.path.exists(target) and os.remove(target)
        secure.geds(*flags, "get", f"tls/{name}", target, host_id="host-reader").ok()
        assert sha256_file(target) == digest, name
    secure.geds(*flags, "mv", "tls/large", "tls/moved").ok()
    # The flags before the command and as variables.
    environment = {**certificates.environment(), "GEDS_TOKEN_FILE": secure.token}
    secure.geds("get", "tls/moved", target, env=environment, host_id="host-third").ok()
    assert sha256_file(target) == sha256_file(os.path.join(workdir, "large"))
    listing = secure.geds("ls", "tls", env=environment).ok().text
    assert "small" in listing and "moved" in listing
    # A subscription (its own TLS connection to the MDS): `wait` returns once the object exists.
    waiter = secure.popen(*flags, "wait", "tls/later", "--timeout", "30", stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    secure.geds(*flags, "put", os.path.join(workdir, "small"), "tls/later").ok()
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err


def test_remote_copy_between_gedsds_over_tls(secure, workdir):
    """Bytes held by one gedsd, read on the other's host: that gedsd (or the CLI) fetches them over TLS."""
    flags = secure.flags
    source = os.path.join(workdir, "source")
    digest = write_random_file(source, 3 << 20)
    secure.geds(*flags, "put", source, "tls/held").ok()
    where = secure.geds(*flags, "where", "tls/held").ok().text
    holder = "tls-a" if "tls-a" in where else "tls-b"
    reader = "tls-b" if holder == "tls-a" else "tls-a"
    target = os.path.join(workdir, "target")
    secure.geds(*flags, "get", "tls/held", target, host_id=f"host-{reader}").ok()
    assert sha256_file(target) == digest


def test_attached_process_over_tls(secure, workdir):
    """A process attached to a gedsd (local socket, not TLS): its lookups go through the gedsd (not straight to the
    MDS over plain TCP), its subscriptions to the MDS over TLS."""
    flags = (*secure.flags, "--node", os.path.join(secure.root, "tls-b.sock"))
    source = os.path.join(workdir, "source")
    digest = write_random_file(source, 200 << 10)
    small = os.path.join(workdir, "small")
    small_digest = write_random_file(small, 1 << 10)
    secure.geds(*flags, "put", source, "tls/attached").ok()
    secure.geds(*flags, "put", small, "tls/attached-small").ok()
    target = os.path.join(workdir, "target")
    for key, expected in (("attached", digest), ("attached-small", small_digest)):
        secure.geds(*flags, "get", f"tls/{key}", target).ok()
        assert sha256_file(target) == expected, key
    waiter = secure.popen(*flags, "wait", "tls/attached-later", "--timeout", "30", stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    secure.geds(*flags, "put", small, "tls/attached-later").ok()
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err


# MARK: mismatches fail clearly and quickly


def test_plain_client_against_tls_mds(secure):
    timed_failure(secure, "--token-file", secure.token, "ls").fails(r"MDS 127\.0\.0\.1:\d+ requires TLS")


def test_tls_client_against_plain_mds(cluster, certificates):
    timed_failure(cluster, *certificates.flags(), "ls").fails(r"MDS 127\.0\.0\.1:\d+", r"does not speak TLS")


def test_a_ca_that_did_not_sign_the_servers_certificate(secure, certificates):
    timed_failure(secure, "--token-file", secure.token, *certificates.flags(member="stranger", ca="other-ca"),
                  "ls").fails(r"TLS handshake with MDS 127\.0\.0\.1:\d+ failed: its certificate is not signed by the --tls-ca CA")


@pytest.mark.parametrize("with_token", [True, False])
def test_a_client_certificate_the_servers_ca_did_not_sign(secure, certificates, with_token):
    """The client trusts the server, the server does not trust the client (under TLS 1.3 it says so after the
    client's side of the handshake ended: still one error)."""
    token = ("--token-file", secure.token) if with_token else ()
    timed_failure(secure, *token, "--tls-cert", certificates.path("stranger.pem"), "--tls-key",
                  certificates.path("stranger.key"), "--tls-ca", certificates.path("ca.pem"), "ls").fails(
        r"TLS: MDS 127\.0\.0\.1:\d+ refused this process's certificate")


def test_a_cli_node_without_certificate(secure, certificates):
    """The CLI's own node serves what it writes to the gedsds: it needs a certificate (a client without one is
    refused by the servers' handshake: test_ports_speak_only_tls)."""
    timed_failure(secure, "--token-file", secure.token, "--tls-ca", certificates.path("ca.pem"), "ls").fails(
        r"serving over TLS needs --tls-cert and --tls-key")


def test_a_certificate_that_does_not_name_the_address(session_root, certificates):
    root = os.path.join(session_root, "tls-elsewhere")
    cluster = Cluster(root)
    try:
        cluster.start_mds(extra_args=certificates.flags(member="elsewhere"))
        timed_failure(cluster, *certificates.flags(), "ls").fails(r"its certificate does not name the address dialled")
    finally:
        cluster.close()


def test_a_gedsd_without_tls_cannot_join(secure, session_root):
    log = os.path.join(session_root, "tls-plain-gedsd.log")
    started = time.monotonic()
    done = subprocess.run([os.path.join(BIN, "gedsd"), "--mds", secure.mds_address, "--listen", "127.0.0.1:0",
                           "--tier0", os.path.join(session_root, "tls-plain-tier0"), "--token-file", secure.token],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and time.monotonic() - started < QUICK, done.stdout + done.stderr
    assert "requires TLS" in done.stderr, done.stderr


def test_bad_tls_options(secure, certificates, workdir):
    secure.geds("--tls-cert", certificates.path("member.pem"), "ls").fails(r"--tls-cert .* needs --tls-key")
    missing = os.path.join(workdir, "missing.pem")
    secure.geds("--tls-ca", missing, "ls").fails(r"cannot read the TLS CA .*missing\.pem")
    garbage = os.path.join(workdir, "garbage.pem")
    with open(garbage, "w") as handle:
        handle.write("not a certificate\n")
    secure.geds("--tls-ca", garbage, "ls").fails(r"garbage\.pem is not valid PEM")
    # A server needs a certificate: geds-mds with a CA alone says so at once.
    done = subprocess.run([os.path.join(BIN, "geds-mds"), "--listen", "127.0.0.1:0", "--tls-ca",
                           certificates.path("ca.pem")], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "serving over TLS needs --tls-cert and --tls-key" in done.stderr, done.stdout + done.stderr


# MARK: the C ABI


def test_c_abi_over_tls(secure, certificates, workdir):
    program = build_c_round_trip(workdir)
    if program is None:
        pytest.skip(f"{BIN}/libGedsC.so not built (swift build -c release --product GedsC)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEDS_")}
    env.update(LD_LIBRARY_PATH=workdir, GEDS_MDS=secure.mds_address, GEDS_HOST_ID="host-capi-tls",
               GEDS_TOKEN_FILE=secure.token, SWIFT_BACKTRACE="enable=no")
    refused = subprocess.run([program, "capi-tls"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "TLS" in refused.stdout, refused.stdout + refused.stderr
    env.update(certificates.environment())
    done = subprocess.run([program, "capi-tls"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


# MARK: Python


PYTHON_ROUND_TRIP = r"""
import os, sys
import geds
mds, token, cert, key, ca = sys.argv[1:6]
try:
    geds.connect(mds, token_file=token)
    sys.exit("connected without TLS")
except geds.GedsError as error:
    assert "requires TLS" in str(error), error
data = os.urandom(300_000)
with geds.connect(mds, token_file=token, tls_cert=cert, tls_key=key, tls_ca=ca) as client:
    client.create_bucket("python-tls")
    client.put("python-tls", "k", data)
    assert client.get("python-tls", "k") == data
assert not any(name.startswith("GEDS_TLS_") for name in os.environ)
print("ok")
"""


def test_python_round_trip(secure, certificates):
    run_python(PYTHON_ROUND_TRIP, secure.mds_address, secure.token, certificates.path("member.pem"),
               certificates.path("member.key"), certificates.path("ca.pem"), host_id="host-python-tls",
               needs_option="tls_ca")


# MARK: geds-launch


def test_geds_launch_with_tls(certificates, workdir):
    """With GEDS_TLS_* set, geds-launch's MDS and gedsd speak TLS, and geds.env passes the files on."""
    check_geds_launch(workdir, certificates.environment(), refusal="requires TLS")
