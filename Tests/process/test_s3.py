"""S3 persistence with real processes: an MDS, gedsd nodes and the CLI against a real `moto_server` on loopback.

Each node signs with the credentials in its own environment (set here before the processes start); the MDS
only holds a bucket's S3 address, prefix, region and persistency. moto keeps its state in memory, so a test
that stops it creates its bucket again after the restart.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from geds_harness import Cluster, MiB, _die_with_parent, sha256, sha256_file, write_random_file

boto3 = pytest.importorskip("boto3")

ACCESS_KEY = "AKIAGEDSTEST00000000"
SECRET_KEY = "geds-test-secret-never-printed"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Moto:
    """A real moto_server on a fixed loopback port, which a test can stop and start again."""

    def __init__(self, root: str, name: str, env: dict | None = None):
        self.port = free_port()
        self.log = os.path.join(root, f"{name}.log")
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Moto":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", f"from moto.server import main; main(['-H', '127.0.0.1', '-p', '{self.port}'])"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                assert self.proc.poll() is None, f"moto_server exited: {open(self.log).read()[-2000:]}"
                time.sleep(0.05)
        raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def client(self, key: str = ACCESS_KEY, secret: str = SECRET_KEY):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=key, aws_secret_access_key=secret)

    def sha256(self, bucket: str, key: str) -> str:
        return sha256(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [entry["Key"] for page in pages for entry in page.get("Contents", [])]


@pytest.fixture(scope="module")
def credentials_env():
    saved = {name: os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    os.environ.pop("AWS_SESSION_TOKEN", None)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def s3_root(session_root):
    root = os.path.join(session_root, "s3")
    os.makedirs(root, exist_ok=True)
    return root


@pytest.fixture(scope="module")
def moto(s3_root, credentials_env):
    server = Moto(s3_root, "moto").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3_cluster(s3_root, credentials_env):
    """Its own MDS and two nodes, started with the test credentials in their environment."""
    cluster = Cluster(os.path.join(s3_root, "cluster"), lease_ms=2000)
    try:
        cluster.start_mds()
        cluster.start_node("s3-a", "host-s3a")
        cluster.start_node("s3-b", "host-s3b")
        yield cluster
    finally:
        cluster.close()


_count = iter(range(1, 1_000_000))


@pytest.fixture
def s3_bucket(moto, request):
    """A fresh S3 bucket in moto."""
    name = f"s3-{next(_count)}-{re.sub(r'[^a-z0-9]+', '-', request.node.name.lower())}"[:50].strip("-")
    moto.client().create_bucket(Bucket=name)
    return name


def configure(cluster: Cluster, bucket: str, moto: Moto, s3_bucket: str, persistency: str, *extra) -> None:
    out = cluster.geds("bucket", bucket, "--s3", f"{moto.endpoint}/{s3_bucket}", "--persistency", persistency, *extra).ok()
    assert f"persistency: {persistency}" in out.text


def copies(cluster: Cluster, path: str) -> list[str]:
    return [line.strip() for line in cluster.geds("stat", path).ok().lines if line.startswith("  ")]


def test_write_through_roundtrip(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "wthru", moto, s3_bucket, "write-through")
    source = str(tmp_path / "in.bin")
    digest = write_random_file(source, 3 * MiB + 5)
    s3_cluster.geds("put", source, "wthru/dir/object.bin").ok()
    # The seal returned: the bytes are in S3 already.
    assert moto.sha256(s3_bucket, "dir/object.bin") == digest
    listed = copies(s3_cluster, "wthru/dir/object.bin")
    assert any(line.startswith("tier0 on s3-") for line in listed), listed
    assert f"s3 on {moto.endpoint}/{s3_bucket}/dir/object.bin" in listed
    target = str(tmp_path / "out.bin")
    s3_cluster.geds("get", "wthru/dir/object.bin", target).ok()
    assert sha256_file(target) == digest


def test_prefix_and_per_object_persistency(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "eph", moto, s3_bucket, "ephemeral", "--prefix", "run1/")
    source = str(tmp_path / "in.bin")
    digest = write_random_file(source, 100_000)
    s3_cluster.geds("put", source, "eph/plain").ok()
    s3_cluster.geds("put", "--persistency", "write-through", source, "eph/kept").ok()
    assert moto.keys(s3_bucket) == ["run1/kept"]
    assert moto.sha256(s3_bucket, "run1/kept") == digest
    s3_cluster.geds("put", "--persistency", "tier1", source, "eph/t1").fails("tier1", "no tier 1")


def test_write_through_with_s3_down_is_a_clear_error_and_the_object_stays(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "wt-down", moto, s3_bucket, "write-through")
    source = str(tmp_path / "in.bin")
    digest = write_random_file(source, 2 * MiB)
    moto.stop()
    try:
        result = s3_cluster.geds("put", source, "wt-down/k").fails("write-through", s3_bucket, "readable")
        assert SECRET_KEY not in result.err
        # Published all the same, and readable from tier 0.
        assert not any(line.startswith("s3 ") for line in copies(s3_cluster, "wt-down/k"))
        target = str(tmp_path / "out.bin")
        s3_cluster.geds("get", "wt-down/k", target).ok()
        assert sha256_file(target) == digest
    finally:
        moto.start()
    # It was queued for upload: once S3 is back (with its bucket: moto forgets everything), it gets there.
    moto.client().create_bucket(Bucket=s3_bucket)
    s3_cluster.geds("flush", "--timeout", "60").ok()
    assert moto.sha256(s3_bucket, "k") == digest
    assert f"s3 on {moto.endpoint}/{s3_bucket}/k" in copies(s3_cluster, "wt-down/k")


def test_write_back_outlives_an_s3_outage_and_flush_waits(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "wback", moto, s3_bucket, "write-back")
    moto.stop()
    digests = {}
    try:
        for index in range(3):
            source = str(tmp_path / f"in{index}.bin")
            digests[f"obj{index}"] = write_random_file(source, MiB + index)
            s3_cluster.geds("put", source, f"wback/obj{index}").ok()  # returns at once: the upload is in the background
        s3_cluster.geds("flush", "--timeout", "2").fails("write-back uploads pending")
    finally:
        moto.start()
    moto.client().create_bucket(Bucket=s3_bucket)
    started = time.monotonic()
    s3_cluster.geds("flush", "--timeout", "60").ok()
    assert time.monotonic() - started < 60
    for key, digest in digests.items():
        assert moto.sha256(s3_bucket, key) == digest
        assert f"s3 on {moto.endpoint}/{s3_bucket}/{key}" in copies(s3_cluster, f"wback/{key}")


def test_clean_shutdown_flushes_write_back(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "wb-stop", moto, s3_bucket, "write-back")
    node = s3_cluster.start_node("s3-leaving", "host-leaving")
    source = str(tmp_path / "in.bin")
    digest = write_random_file(source, 4 * MiB)
    moto.stop()
    try:
        s3_cluster.geds("put", "--to", "s3-leaving", source, "wb-stop/k").ok()
        node.proc.send_signal(15)  # SIGTERM: the node waits for its upload before it leaves
        time.sleep(3)  # longer than the lease: it keeps heartbeating, so its copy stays published meanwhile
        assert node.proc.poll() is None, "gedsd left with an upload pending"
        assert s3_cluster.node_states()["s3-leaving"] == "alive"
        target = str(tmp_path / "out.bin")
        s3_cluster.geds("get", "wb-stop/k", target).ok()
        assert sha256_file(target) == digest
    finally:
        moto.start()
    moto.client().create_bucket(Bucket=s3_bucket)
    assert node.proc.wait(timeout=60) == 0
    assert moto.sha256(s3_bucket, "k") == digest
    assert s3_cluster.node_states()["s3-leaving"] == "dead"  # it left


def test_wrong_credentials_are_a_clear_error_without_secrets(s3_cluster, s3_root, tmp_path, monkeypatch):
    # moto checks signatures once IAM authentication is on: a user with a key, then auth switched on.
    server = Moto(s3_root, "moto-auth").start()
    try:
        iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1",
                           aws_access_key_id="AKIASETUP00000000000", aws_secret_access_key="setup")
        iam.create_user(UserName="geds")
        iam.put_user_policy(UserName="geds", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="geds")["AccessKey"]
        urllib.request.urlopen(urllib.request.Request(f"{server.endpoint}/moto-api/reset-auth", data=b"0",
                                                      method="POST", headers={"Content-Type": "text/plain"})).read()
        server.client(key["AccessKeyId"], key["SecretAccessKey"]).create_bucket(Bucket="secure")
        wrong_secret = "wrong-secret-must-never-show-up"
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
        node = s3_cluster.start_node("s3-wrong-keys", "host-wrong")
        try:
            s3_cluster.geds("bucket", "auth", "--s3", f"{server.endpoint}/secure", "--persistency", "write-through").ok()
            source = str(tmp_path / "in.bin")
            write_random_file(source, 1000)
            result = s3_cluster.geds("put", "--to", "s3-wrong-keys", source, "auth/k").fails("secure", "403",
                                                                                            "SignatureDoesNotMatch")
            # The CLI signs with the same wrong keys: read-through and listing fail as clearly.
            stat = s3_cluster.geds("stat", "auth/only-in-s3").fails("auth/only-in-s3", "S3 store", "secure", "403")
            listing = s3_cluster.geds("ls", "auth").fails("bucket auth cannot be listed", "secure", "403")
            for text in (result.err, result.text, stat.err, listing.err, node.log_tail(200)):
                assert wrong_secret not in text and key["SecretAccessKey"] not in text
        finally:
            node.kill()
            s3_cluster.wait_dead("s3-wrong-keys", timeout=15)
    finally:
        server.stop()


def test_read_through_of_a_key_only_in_s3_caches_it(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "readthru", moto, s3_bucket, "ephemeral", "--prefix", "pre/")
    data = os.urandom(5 * MiB + 17)
    moto.client().put_object(Bucket=s3_bucket, Key="pre/from/outside", Body=data)
    s3_cluster.geds("stat", "readthru/missing").fails("no such object")
    target = str(tmp_path / "out.bin")
    s3_cluster.geds("get", "readthru/from/outside", target).ok()
    assert sha256_file(target) == sha256(data)
    listed = copies(s3_cluster, "readthru/from/outside")
    assert any(line.startswith("tier0 on s3-") for line in listed), listed
    assert f"s3 on {moto.endpoint}/{s3_bucket}/pre/from/outside" in listed
    # Another key GEDS has not seen yet, to stdout.
    moto.client().put_object(Bucket=s3_bucket, Key="pre/second", Body=data)
    assert s3_cluster.geds("cat", "readthru/second").ok().out == data


def test_listing_merges_s3_keys_in_byte_order_with_paging(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "listing", moto, s3_bucket, "ephemeral")
    source = str(tmp_path / "in.bin")
    write_random_file(source, 10)
    geds_keys = ["a", "c", "dir/1", "e", "zz"]
    s3_keys = ["b", "c", "dir/2", "d", "other/x", "é"]
    for key in geds_keys:
        s3_cluster.geds("put", source, f"listing/{key}").ok()
    for key in s3_keys:
        moto.client().put_object(Bucket=s3_bucket, Key=key, Body=b"s3")
    expected = sorted(set(geds_keys) | set(s3_keys), key=lambda k: k.encode())
    for page in ("1", "2", "3", "1000"):
        lines = s3_cluster.geds("ls", "listing", "--max-keys", page).ok().lines
        assert [line.split()[-1] for line in lines] == expected, (page, lines)
    for page in ("1", "2", "1000"):
        lines = s3_cluster.geds("ls", "listing", "--delimiter", "/", "--max-keys", page).ok().lines
        names = [line.split()[-1] for line in lines]  # a page shows its common prefixes first
        assert sorted(names, key=lambda k: k.encode()) == ["a", "b", "c", "d", "dir/", "e", "other/", "zz", "é"], (page, lines)


def test_tier1_full_spills_on_to_s3_and_nothing_is_lost(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "spill", moto, s3_bucket, "ephemeral")
    tier1 = os.path.join(s3_cluster.root, "tier1-spill")
    s3_cluster.start_node("s3-small", "host-small", extra_args=[
        "--tier0-capacity", "8MiB", "--tier1", tier1, "--tier1-capacity", "12MiB"])
    folder = tmp_path / "objects"
    digests = {f"o{index:02}": write_random_file(str(folder / f"o{index:02}"), MiB) for index in range(30)}
    s3_cluster.geds("put", "--recursive", "--to", "s3-small", str(folder), "spill/").ok()
    tiers = {key: copies(s3_cluster, f"spill/{key}") for key in digests}
    in_s3 = [key for key, listed in tiers.items() if any(line.startswith("s3 on") for line in listed)]
    in_tier1 = [key for key, listed in tiers.items() if any(line.startswith("tier1 on") for line in listed)]
    assert in_s3 and in_tier1, tiers
    assert set(moto.keys(s3_bucket)) >= set(in_s3)
    for key, digest in digests.items():
        assert sha256(s3_cluster.geds("cat", f"spill/{key}").ok().out) == digest, key


def test_write_through_object_survives_its_node(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "survive", moto, s3_bucket, "write-through")
    node = s3_cluster.start_node("s3-doomed", "host-doomed")
    source = str(tmp_path / "in.bin")
    digest = write_random_file(source, 3 * MiB)
    s3_cluster.geds("put", "--to", "s3-doomed", source, "survive/k").ok()
    node.kill()
    s3_cluster.wait_dead("s3-doomed", timeout=15)
    assert copies(s3_cluster, "survive/k") == [f"s3 on {moto.endpoint}/{s3_bucket}/k"]
    target = str(tmp_path / "out.bin")
    s3_cluster.geds("get", "survive/k", target).ok()  # cached by a live gedsd on the way
    assert sha256_file(target) == digest
    assert any(line.startswith("tier0 on s3-") for line in copies(s3_cluster, "survive/k"))


def test_tier1_persistency_writes_the_bytes_to_tier1_at_seal(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "tier1-kept", moto, s3_bucket, "tier1")
    tier1 = os.path.join(s3_cluster.root, "tier1-persist")
    s3_cluster.start_node("s3-t1", "host-t1", extra_args=[
        "--tier0-capacity", "64MiB", "--tier1", tier1, "--tier1-capacity", "64MiB"])
    source = str(tmp_path / "in.bin")
    digest = write_random_file(source, 3 * MiB + 11)
    s3_cluster.geds("put", "--to", "s3-t1", source, "tier1-kept/k").ok()
    stat = s3_cluster.geds("stat", "tier1-kept/k").ok().text
    blob = re.search(r"blob: ([0-9a-f]{16})", stat).group(1)
    # The seal returned: the tier-1 file is complete (and the tier-0 copy is still the one published).
    assert sha256_file(os.path.join(tier1, blob)) == digest
    assert "tier0 on s3-t1" in stat
    assert moto.keys(s3_bucket) == []  # tier1 persistency does not upload
    target = str(tmp_path / "out.bin")
    s3_cluster.geds("get", "tier1-kept/k", target).ok()
    assert sha256_file(target) == digest


def test_bucket_settings_are_shown_and_an_unreachable_store_is_a_warning(s3_cluster, moto, s3_bucket):
    unreachable = f"http://127.0.0.1:{free_port()}/nowhere"
    result = s3_cluster.geds("bucket", "settings", "--s3", unreachable, "--persistency", "write-back",
                             "--region", "eu-west-1").ok()
    assert "warning" in result.err and "cannot be listed" in result.err, result.describe()
    assert SECRET_KEY not in result.err
    s3_cluster.geds("bucket", "settings", "--s3", f"{moto.endpoint}/{s3_bucket}/run/", "--persistency", "ephemeral").ok()
    shown = s3_cluster.geds("bucket", "settings", "--persistency", "write-through").ok()
    assert shown.lines == ["bucket: settings", f"s3: {moto.endpoint}/{s3_bucket}", "prefix: run/", "region: us-east-1",
                           "persistency: write-through"], shown.describe()
    assert s3_cluster.geds("bucket", "settings", "--no-s3").ok().lines == ["bucket: settings", "s3: none",
                                                                          "persistency: ephemeral"]
    s3_cluster.geds("bucket", "settings", "--persistency", "sometimes").fails("bucket settings has no S3 store")
    s3_cluster.geds("bucket", "other", "--s3", "ftp://x/y").fails("expected http")


def test_tier1_full_with_s3_down_is_out_of_space_and_loses_nothing(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "spill-down", moto, s3_bucket, "ephemeral")
    tier1 = os.path.join(s3_cluster.root, "tier1-spill-down")
    s3_cluster.start_node("s3-full", "host-full", extra_args=[
        "--tier0-capacity", "4MiB", "--tier1", tier1, "--tier1-capacity", "6MiB"])
    digests = {}
    moto.stop()
    try:
        for index in range(20):
            source = str(tmp_path / f"o{index:02}")
            digest = write_random_file(source, MiB)
            started = time.monotonic()
            result = s3_cluster.geds("put", "--to", "s3-full", source, f"spill-down/o{index:02}")
            assert time.monotonic() - started < 30, "one failed spill to S3 must not cost a retry round per blob"
            if result.rc != 0:
                result.fails("out of space", "tier 0 of node s3-full is full")
                break
            digests[f"o{index:02}"] = digest
        else:
            raise AssertionError("tier 0 and tier 1 never filled up")
        for key, digest in digests.items():
            assert sha256(s3_cluster.geds("cat", f"spill-down/{key}").ok().out) == digest, key
    finally:
        moto.start()
    moto.client().create_bucket(Bucket=s3_bucket)
    # S3 is back: tier 1 spills on to it again, and more objects fit.
    for index in range(20, 26):
        source = str(tmp_path / f"o{index:02}")
        digests[f"o{index:02}"] = write_random_file(source, MiB)
        s3_cluster.geds("put", "--to", "s3-full", source, f"spill-down/o{index:02}").ok()
    assert moto.keys(s3_bucket)
    for key, digest in digests.items():
        assert sha256(s3_cluster.geds("cat", f"spill-down/{key}").ok().out) == digest, key


def listed_keys(cluster: Cluster, bucket: str) -> list[str]:
    return [line.split()[-1] for line in cluster.geds("ls", bucket).ok().lines if line.strip()]


def test_rm_deletes_the_s3_object_and_a_key_only_in_s3(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "rm-s3", moto, s3_bucket, "write-through", "--prefix", "p/")
    source = str(tmp_path / "in.bin")
    write_random_file(source, 300_000)
    s3_cluster.geds("put", source, "rm-s3/gone").ok()
    s3_cluster.geds("put", source, "rm-s3/kept").ok()
    moto.client().put_object(Bucket=s3_bucket, Key="p/only-in-s3", Body=b"s3 only")
    assert sorted(moto.keys(s3_bucket)) == ["p/gone", "p/kept", "p/only-in-s3"]
    s3_cluster.geds("rm", "rm-s3/gone").ok()
    s3_cluster.geds("rm", "rm-s3/only-in-s3").ok()
    assert moto.keys(s3_bucket) == ["p/kept"]
    # Neither comes back through the merged listing or read-through.
    assert "rm-s3/gone" not in " ".join(listed_keys(s3_cluster, "rm-s3"))
    assert [key for key in listed_keys(s3_cluster, "rm-s3") if "only" in key or "gone" in key] == []
    s3_cluster.geds("get", "rm-s3/gone", str(tmp_path / "out.bin")).fails("no such object")
    s3_cluster.geds("get", "rm-s3/only-in-s3", str(tmp_path / "out.bin")).fails("no such object")
    s3_cluster.geds("rm", "rm-s3/never-was").fails("no such object")
    assert moto.keys(s3_bucket) == ["p/kept"]


def test_rm_prefix_and_rb_force_delete_in_s3_too(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "rmp-s3", moto, s3_bucket, "write-through")
    source = str(tmp_path / "in.bin")
    write_random_file(source, 50_000)
    for key in ("a/1", "a/2", "b/1"):
        s3_cluster.geds("put", source, f"rmp-s3/{key}").ok()
    for key in ("a/3", "a/deep/4", "c/1"):
        moto.client().put_object(Bucket=s3_bucket, Key=key, Body=key.encode())
    s3_cluster.geds("rm", "--prefix", "rmp-s3/a/").ok()
    assert sorted(moto.keys(s3_bucket)) == ["b/1", "c/1"]
    assert sorted(listed_keys(s3_cluster, "rmp-s3")) == ["b/1", "c/1"]
    s3_cluster.geds("stat", "rmp-s3/a/3").fails("no such object")
    s3_cluster.geds("rb", "--force", "rmp-s3").ok()
    assert moto.keys(s3_bucket) == []


def test_rm_of_a_write_back_object_leaves_nothing_in_s3(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "rm-wb", moto, s3_bucket, "write-back")
    source = str(tmp_path / "in.bin")
    write_random_file(source, 2 * MiB)
    for index in range(4):
        s3_cluster.geds("put", source, f"rm-wb/k{index}").ok()
        s3_cluster.geds("rm", f"rm-wb/k{index}").ok()  # before or after its upload: either way it goes
    s3_cluster.geds("flush", "--timeout", "60").ok()
    assert moto.keys(s3_bucket) == []
    assert listed_keys(s3_cluster, "rm-wb") == []


def test_put_racing_rm_of_the_same_key_leaves_geds_and_s3_agreeing(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "race", moto, s3_bucket, "write-through")
    old = str(tmp_path / "old.bin")
    write_random_file(old, 200_000)
    for round_ in range(6):
        new = str(tmp_path / f"new{round_}.bin")
        new_digest = write_random_file(new, 300_000 + round_)
        s3_cluster.geds("put", old, "race/k").ok()
        put = s3_cluster.popen("put", new, "race/k", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if round_ % 2:
            time.sleep(0.05 * round_)
        rm = s3_cluster.geds("rm", "race/k")
        assert put.wait(timeout=90) == 0, put.stderr.read()
        assert rm.rc == 0 or "no such object" in rm.err, rm.describe()
        # Whatever the order, GEDS and S3 end the same: the new object in both, or in neither.
        stat = s3_cluster.geds("stat", "race/k")
        if stat.rc == 0:
            target = str(tmp_path / "out.bin")
            s3_cluster.geds("get", "race/k", target).ok()
            assert sha256_file(target) == new_digest
            assert moto.sha256(s3_bucket, "k") == new_digest
        else:
            assert "no such object" in stat.err, stat.describe()
            assert moto.keys(s3_bucket) == []


def test_metadata_goes_to_s3_as_x_amz_meta_and_comes_back_by_read_through(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "meta-s3", moto, s3_bucket, "write-back")
    source = str(tmp_path / "in.bin")
    digest = write_random_file(source, MiB)
    moto.stop()
    try:
        s3_cluster.geds("put", "--to", "s3-a", source, "meta-s3/k").ok()
        # Set while the upload waits for S3: the upload takes the metadata as it is then.
        s3_cluster.geds("meta", "meta-s3/k", "color=blue", "run.id=7").ok()
    finally:
        moto.start()
    moto.client().create_bucket(Bucket=s3_bucket)
    s3_cluster.geds("flush", "--timeout", "60").ok()
    head = moto.client().head_object(Bucket=s3_bucket, Key="k")
    assert head["Metadata"] == {"color": "blue", "run.id": "7"}
    assert moto.sha256(s3_bucket, "k") == digest
    # The other way: an object put into S3 by someone else is read through with its x-amz-meta-* as metadata.
    moto.client().put_object(Bucket=s3_bucket, Key="outside", Body=b"from boto3", Metadata={"origin": "boto3"})
    assert s3_cluster.geds("meta", "meta-s3/outside").ok().lines == ["origin=boto3"]
    assert s3_cluster.geds("cat", "meta-s3/outside").ok().out == b"from boto3"


def test_mv_moves_the_s3_object_and_an_upload_not_done_yet_goes_to_the_new_key(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "mv-s3", moto, s3_bucket, "write-through", "--prefix", "p/")
    source = str(tmp_path / "in.bin")
    digest = write_random_file(source, 3 * MiB + 1)
    s3_cluster.geds("put", "--to", "s3-a", source, "mv-s3/old").ok()
    s3_cluster.geds("meta", "mv-s3/old", "kind=moved").ok()  # rewritten in S3 in place
    assert moto.client().head_object(Bucket=s3_bucket, Key="p/old")["Metadata"] == {"kind": "moved"}
    s3_cluster.geds("mv", "mv-s3/old", "mv-s3/new").ok()
    assert moto.keys(s3_bucket) == ["p/new"]
    assert moto.sha256(s3_bucket, "p/new") == digest
    assert moto.client().head_object(Bucket=s3_bucket, Key="p/new")["Metadata"] == {"kind": "moved"}
    assert listed_keys(s3_cluster, "mv-s3") == ["new"]
    assert f"s3 on {moto.endpoint}/{s3_bucket}/p/new" in copies(s3_cluster, "mv-s3/new")
    s3_cluster.geds("get", "mv-s3/old", str(tmp_path / "x")).fails("no such object")
    target = str(tmp_path / "out.bin")
    s3_cluster.geds("get", "mv-s3/new", target).ok()
    assert sha256_file(target) == digest
    # Write-back not uploaded yet (S3 down): the upload goes to the name the object has when it runs.
    s3_cluster.geds("bucket", "mv-s3", "--persistency", "write-back").ok()
    moto.stop()
    try:
        s3_cluster.geds("put", "--to", "s3-a", source, "mv-s3/pending").ok()
        s3_cluster.geds("mv", "mv-s3/pending", "mv-s3/renamed").ok()
    finally:
        moto.start()
    moto.client().create_bucket(Bucket=s3_bucket)
    s3_cluster.geds("flush", "--timeout", "60").ok()
    assert moto.keys(s3_bucket) == ["p/renamed"]
    assert moto.sha256(s3_bucket, "p/renamed") == digest


def test_tier1_persisted_copy_stays_through_promotion(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "t1-keep", moto, s3_bucket, "ephemeral")
    tier1 = os.path.join(s3_cluster.root, "tier1-keep")
    s3_cluster.start_node("s3-keep", "host-keep", extra_args=[
        "--tier0-capacity", "8MiB", "--tier1", tier1, "--tier1-capacity", "64MiB"])
    source = str(tmp_path / "in.bin")
    digest = write_random_file(source, 3 * MiB)
    s3_cluster.geds("put", "--to", "s3-keep", "--persistency", "tier1", source, "t1-keep/k").ok()
    blob = re.search(r"blob: ([0-9a-f]{16})", s3_cluster.geds("stat", "t1-keep/k").ok().text).group(1)
    filler = str(tmp_path / "filler.bin")
    write_random_file(filler, 3 * MiB)
    for index in range(3):  # past the high-water mark: k, the least recently used, spills
        s3_cluster.geds("put", "--to", "s3-keep", filler, f"t1-keep/f{index}").ok()
    deadline = time.monotonic() + 20
    while not any(line.startswith("tier1 on s3-keep") for line in copies(s3_cluster, "t1-keep/k")):
        assert time.monotonic() < deadline, copies(s3_cluster, "t1-keep/k")
        time.sleep(0.1)
    # Reading it promotes it back into tier 0; its tier-1 file, the persisted copy, stays.
    assert sha256(s3_cluster.geds("cat", "t1-keep/k").ok().out) == digest
    assert any(line.startswith("tier0 on s3-keep") for line in copies(s3_cluster, "t1-keep/k"))
    assert sha256_file(os.path.join(tier1, blob)) == digest


def test_spilling_on_to_s3_does_not_upload_again_what_is_there(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "no-twice", moto, s3_bucket, "write-through")
    tier1 = os.path.join(s3_cluster.root, "tier1-no-twice")
    s3_cluster.start_node("s3-twice", "host-twice", extra_args=[
        "--tier0-capacity", "6MiB", "--tier1", tier1, "--tier1-capacity", "6MiB"])
    folder = tmp_path / "objects"
    digests = {f"o{index:02}": write_random_file(str(folder / f"o{index:02}"), MiB + index) for index in range(12)}
    s3_cluster.geds("put", "--recursive", "--to", "s3-twice", str(folder), "no-twice/").ok()
    tiers = {key: copies(s3_cluster, f"no-twice/{key}") for key in digests}
    moved = [key for key, listed in tiers.items() if listed == [f"s3 on {moto.endpoint}/{s3_bucket}/{key}"]]
    assert moved, tiers  # spilled through tier 1 on to S3
    # moto's request log: each object was PUT once, at its write-through seal, and not again when it left tier 1.
    log = open(moto.log).read()
    for key in digests:
        assert len(re.findall(rf'"PUT /{s3_bucket}/{key} HTTP', log)) == 1, key
    for key, digest in digests.items():
        assert sha256(s3_cluster.geds("cat", f"no-twice/{key}").ok().out) == digest, key


def test_cp_copies_in_s3_and_each_name_is_deleted_with_its_key(s3_cluster, moto, s3_bucket, tmp_path):
    configure(s3_cluster, "cp-s3", moto, s3_bucket, "write-through")
    source = str(tmp_path / "in.bin")
    digest = write_random_file(source, 2 * MiB + 3)
    s3_cluster.geds("put", "--to", "s3-a", source, "cp-s3/x").ok()
    s3_cluster.geds("meta", "cp-s3/x", "kind=copied").ok()
    s3_cluster.geds("cp", "cp-s3/x", "cp-s3/z").ok()
    assert sorted(moto.keys(s3_bucket)) == ["x", "z"]
    assert moto.sha256(s3_bucket, "z") == digest
    assert moto.client().head_object(Bucket=s3_bucket, Key="z")["Metadata"] == {"kind": "copied"}
    assert s3_cluster.geds("meta", "cp-s3/z").ok().lines == ["kind=copied"]
    s3_cluster.geds("rm", "cp-s3/x").ok()
    assert moto.keys(s3_bucket) == ["z"]
    assert listed_keys(s3_cluster, "cp-s3") == ["z"]
    s3_cluster.geds("get", "cp-s3/x", str(tmp_path / "x")).fails("no such object")
    target = str(tmp_path / "out.bin")
    s3_cluster.geds("get", "cp-s3/z", target).ok()
    assert sha256_file(target) == digest
    s3_cluster.geds("rm", "cp-s3/z").ok()
    assert moto.keys(s3_bucket) == []


def test_setting_an_s3_store_500_times_never_crashes_at_exit(s3_cluster, moto, s3_bucket):
    """`geds bucket … --s3` lists the store through an S3 client whose curl threads used to race the process's
    exit (OpenSSL's exit handler against a worker's last libcurl calls: SIGSEGV about once in 1,000 runs). The
    node now waits for those threads before it returns."""
    import concurrent.futures

    def set_store(index: int):
        return s3_cluster.geds("bucket", f"exit-loop-{index % 5}", "--s3", f"{moto.endpoint}/{s3_bucket}",
                               "--persistency", "ephemeral")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(set_store, range(500)))
    failed = [result for result in results if result.rc != 0]
    assert not failed, f"{len(failed)} of 500 failed; first: rc={failed[0].rc} {failed[0].err[-3000:]}"
    assert all("persistency: ephemeral" in result.text for result in results)
