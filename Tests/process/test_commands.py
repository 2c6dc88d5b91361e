"""The object and bucket commands, checked by their effect on bytes and listings."""

from __future__ import annotations

import os
import pty
import subprocess

import pytest

from geds_harness import parse_ls, parse_stat, resting_bytes, sha256


def put_bytes(cluster, path: str, data: bytes, node: str = "node-a", host_id: str = "host-cli") -> None:
    cluster.geds("put", "-", path, "--to", node, input=data, host_id=host_id).ok()


def cat(cluster, path: str, host_id: str = "host-reader") -> bytes:
    return cluster.geds("cat", path, host_id=host_id).ok().out


def test_ls_prefix_and_delimiter(cluster, bucket):
    keys = {"dir1/a": 1, "dir1/b": 22, "dir1/sub/c": 333, "dir2/d": 4444, "top": 5, "topaz/e": 6}
    for key, size in keys.items():
        put_bytes(cluster, f"{bucket}/{key}", os.urandom(size))

    objects, prefixes = parse_ls(cluster.geds("ls", bucket).ok().text)
    assert objects == keys and prefixes == []

    objects, prefixes = parse_ls(cluster.geds("ls", f"{bucket}/dir1/").ok().text)
    assert objects == {"dir1/a": 1, "dir1/b": 22, "dir1/sub/c": 333} and prefixes == []

    objects, prefixes = parse_ls(cluster.geds("ls", f"{bucket}/top").ok().text)
    assert objects == {"top": 5, "topaz/e": 6}

    listing = cluster.geds("ls", bucket, "--delimiter", "/").ok()
    objects, prefixes = parse_ls(listing.text)
    assert objects == {"top": 5}
    assert prefixes == ["dir1/", "dir2/", "topaz/"]
    assert any(line.strip() == "PRE dir1/" for line in listing.lines), listing.text

    objects, prefixes = parse_ls(cluster.geds("ls", f"{bucket}/dir1/", "--delimiter", "/").ok().text)
    assert objects == {"dir1/a": 1, "dir1/b": 22}
    assert prefixes == ["dir1/sub/"]

    # Nothing under a prefix: empty output, success.
    assert cluster.geds("ls", f"{bucket}/nothing-here/").ok().out == b""
    # The bucket list names the bucket.
    assert bucket in cluster.geds("ls").ok().lines


def test_listing_longer_than_one_page(cluster, bucket, workdir):
    """More keys than one MDS page (1000): ls, get --recursive and rm --prefix all see every key, in order."""
    count = 1003
    tree = os.path.join(workdir, "many")
    os.makedirs(tree)
    for i in range(count):
        with open(os.path.join(tree, f"{i:05d}"), "wb") as handle:
            handle.write(f"object {i}".encode())
    cluster.geds("put", "--recursive", tree, f"{bucket}/many/", "--to", "node-b", host_id="host-b").ok()

    listing = cluster.geds("ls", f"{bucket}/many/").ok()
    objects, _ = parse_ls(listing.text)
    assert list(objects) == [f"many/{i:05d}" for i in range(count)]
    assert len(listing.lines) == count

    out = os.path.join(workdir, "out")
    cluster.geds("get", "--recursive", f"{bucket}/many/", out).ok()
    assert sorted(os.listdir(out)) == [f"{i:05d}" for i in range(count)]
    assert open(os.path.join(out, f"{count - 1:05d}"), "rb").read() == f"object {count - 1}".encode()

    assert cluster.geds("rm", "--prefix", f"{bucket}/many/").ok().lines == [f"deleted {count} objects"]
    assert cluster.geds("ls", bucket).ok().out == b""


def test_mv_renames_without_moving_bytes(cluster, bucket):
    data = os.urandom(100_000)
    put_bytes(cluster, f"{bucket}/old/name", data)
    before = parse_stat(cluster.geds("stat", f"{bucket}/old/name").ok().text)

    cluster.geds("mv", f"{bucket}/old/name", f"{bucket}/new/name").ok()

    cluster.geds("stat", f"{bucket}/old/name").fails("no such object")
    cluster.geds("get", f"{bucket}/old/name", "-").fails("no such object")
    after = parse_stat(cluster.geds("stat", f"{bucket}/new/name").ok().text)
    assert after["blob"] == before["blob"], "mv must rename, not copy the bytes"
    assert after["size"] == before["size"] == str(len(data))
    assert after["locations"] == before["locations"]
    assert sha256(cat(cluster, f"{bucket}/new/name")) == sha256(data)
    objects, _ = parse_ls(cluster.geds("ls", bucket).ok().text)
    assert list(objects) == ["new/name"]
    # Renaming onto itself changes nothing.
    cluster.geds("mv", f"{bucket}/new/name", f"{bucket}/new/name").ok()
    assert sha256(cat(cluster, f"{bucket}/new/name")) == sha256(data)


def test_mv_across_buckets_and_over_existing_key(cluster, bucket):
    other = bucket[:50] + "-dst"
    cluster.geds("mb", other).ok()
    first, second = os.urandom(5000), os.urandom(7000)
    put_bytes(cluster, f"{bucket}/x", first)
    put_bytes(cluster, f"{other}/y", second, node="node-b")
    cluster.geds("mv", f"{bucket}/x", f"{other}/y").ok()
    assert cat(cluster, f"{other}/y") == first
    cluster.geds("stat", f"{bucket}/x").fails("no such object")
    cluster.geds("rb", other, "--force").ok()


def test_cp_shares_bytes_and_survives_removal_of_source(cluster, bucket):
    data = os.urandom(64_000)
    put_bytes(cluster, f"{bucket}/original", data)
    cluster.geds("cp", f"{bucket}/original", f"{bucket}/copy").ok()

    assert cat(cluster, f"{bucket}/original") == data
    assert cat(cluster, f"{bucket}/copy") == data
    source = parse_stat(cluster.geds("stat", f"{bucket}/original").ok().text)
    copy = parse_stat(cluster.geds("stat", f"{bucket}/copy").ok().text)
    assert copy["blob"] == source["blob"] and copy["size"] == source["size"]

    # The copy keeps the shared bytes alive when the original goes.
    cluster.geds("rm", f"{bucket}/original").ok()
    cluster.geds("get", f"{bucket}/original", "-").fails("no such object")
    assert cat(cluster, f"{bucket}/copy") == data
    assert cat(cluster, f"{bucket}/copy", host_id="host-a") == data


def test_rm_and_rm_prefix(cluster, bucket, workdir):
    for key in ["logs/1", "logs/2", "logs/3/deep", "logsx", "keep/1"]:
        put_bytes(cluster, f"{bucket}/{key}", key.encode())

    cluster.geds("rm", f"{bucket}/logsx").ok()
    out = os.path.join(workdir, "gone")
    cluster.geds("get", f"{bucket}/logsx", out).fails("no such object")
    assert not os.path.exists(out), "a failed get must not create its output file"

    result = cluster.geds("rm", "--prefix", f"{bucket}/logs/").ok()
    assert result.lines == ["deleted 3 objects"]
    objects, _ = parse_ls(cluster.geds("ls", bucket).ok().text)
    assert list(objects) == ["keep/1"]
    assert cat(cluster, f"{bucket}/keep/1") == b"keep/1"

    assert cluster.geds("rm", "--prefix", f"{bucket}/logs/").ok().lines == ["deleted 0 objects"]
    cluster.geds("rm", f"{bucket}/logsx").fails("no such object")

    # A bare bucket as the prefix: everything in it.
    put_bytes(cluster, f"{bucket}/another", b"x")
    assert cluster.geds("rm", "--prefix", bucket).ok().lines == ["deleted 2 objects"]
    assert cluster.geds("ls", bucket).ok().out == b""
    cluster.geds("rb", bucket).ok()


@pytest.mark.parametrize("size", [10_000, 100_000], ids=["packed-in-a-slab", "own-file"])
def test_rm_frees_the_owners_copy(cluster, node_b, bucket, size):
    data = os.urandom(size)
    put_bytes(cluster, f"{bucket}/doomed", data, node="node-b")
    blob = parse_stat(cluster.geds("stat", f"{bucket}/doomed").ok().text)["blob"]
    assert resting_bytes(node_b.tier0, blob, size) == data
    cluster.geds("rm", f"{bucket}/doomed").ok()
    # The owner drops the file (or frees the slot, whose header then names no blob) on a heartbeat (a quarter of
    # the 2 s lease).
    cluster.wait_until(lambda: resting_bytes(node_b.tier0, blob, size) is None, 5, f"node-b to delete blob {blob}")


def test_rb_requires_empty_unless_forced(cluster, bucket):
    put_bytes(cluster, f"{bucket}/k", b"content")
    cluster.geds("rb", bucket).fails("not empty")
    assert cat(cluster, f"{bucket}/k") == b"content"
    assert bucket in cluster.geds("ls").ok().lines

    cluster.geds("rb", bucket, "--force").ok()
    assert bucket not in cluster.geds("ls").ok().lines
    cluster.geds("get", f"{bucket}/k", "-").fails("no such bucket")
    cluster.geds("ls", bucket).fails("no such bucket")

    # An empty bucket goes without --force; a name can be reused after.
    cluster.geds("mb", bucket).ok()
    cluster.geds("mb", bucket).fails("already exists")
    cluster.geds("rb", bucket).ok()
    cluster.geds("rb", bucket).fails("no such bucket")


def test_meta_set_show_and_remove(cluster, bucket):
    path = f"{bucket}/tagged"
    put_bytes(cluster, path, b"payload")
    assert cluster.geds("meta", path).ok().out == b""

    cluster.geds("meta", path, "color=blue", "owner=team-7").ok()
    assert cluster.geds("meta", path).ok().lines == ["color=blue", "owner=team-7"]
    info = parse_stat(cluster.geds("stat", path).ok().text)
    assert info["meta"] == {"color": "blue", "owner": "team-7"}

    # Setting merges; an empty value removes a name.
    cluster.geds("meta", path, "color=", "size=xl").ok()
    assert cluster.geds("meta", path).ok().lines == ["owner=team-7", "size=xl"]

    cluster.geds("meta", path, "no-equals-sign").fails("NAME=VALUE")
    cluster.geds("meta", path, "bad name=1").fails("invalid metadata name")
    cluster.geds("meta", path, "big=" + "v" * 3000).fails("metadata")
    assert cluster.geds("meta", path).ok().lines == ["owner=team-7", "size=xl"]
    # Metadata does not touch the bytes.
    assert cat(cluster, path) == b"payload"


def test_stat_where_and_nodes(cluster, node_a, node_b, bucket):
    data = os.urandom(4097)
    path = f"{bucket}/placed"
    put_bytes(cluster, path, data, node="node-a")

    info = parse_stat(cluster.geds("stat", path).ok().text)
    assert info["object"] == path
    assert info["size"] == "4097"
    assert info["copies"] == "1"
    assert info["locations"] == [f"tier0 on node-a (host host-a, tcp {node_a.endpoint})"]
    assert len(info["blob"]) == 16

    where = cluster.geds("where", path).ok().lines
    assert where == [f"node-a tier0 host=host-a transports=tcp://{node_a.endpoint}"]

    nodes = {line.split()[0]: line for line in cluster.geds("nodes").ok().lines}
    assert f"tcp={node_a.endpoint}" in nodes["node-a"] and " alive gedsd " in nodes["node-a"]
    assert f"tcp={node_b.endpoint}" in nodes["node-b"] and " alive gedsd " in nodes["node-b"]

    # Put to node-a, read from node-b's host: a TCP read, same bytes.
    assert cat(cluster, path, host_id="host-b") == data


def test_put_to_named_node_from_another_host(cluster, node_b, bucket):
    """The CLI on host-a hands an object to node-b on another host: node-b pulls the bytes over TCP."""
    data = os.urandom(2 * 1024 * 1024 + 5)
    path = f"{bucket}/pulled"
    cluster.geds("put", "-", path, "--to", "node-b", input=data, host_id="host-a").ok()
    info = parse_stat(cluster.geds("stat", path).ok().text)
    assert info["locations"][0].startswith("tier0 on node-b")
    assert sha256(open(os.path.join(node_b.tier0, info["blob"]), "rb").read()) == sha256(data)
    assert cat(cluster, path, host_id="host-a") == data


def test_overwrite_shows_new_content(cluster, bucket):
    path = f"{bucket}/versioned"
    first, second = os.urandom(50_000), os.urandom(20_000)
    put_bytes(cluster, path, first, node="node-a")
    assert cat(cluster, path) == first
    old_blob = parse_stat(cluster.geds("stat", path).ok().text)["blob"]

    put_bytes(cluster, path, second, node="node-b")
    assert cat(cluster, path) == second
    assert cat(cluster, path, host_id="host-a") == second
    assert cat(cluster, path, host_id="host-b") == second
    info = parse_stat(cluster.geds("stat", path).ok().text)
    assert info["size"] == str(len(second)) and info["blob"] != old_blob
    assert info["locations"][0].startswith("tier0 on node-b")
    objects, _ = parse_ls(cluster.geds("ls", bucket).ok().text)
    assert objects == {"versioned": len(second)}


def test_unicode_and_space_keys(cluster, bucket, workdir):
    keys = ["dir/ünïcødé.txt", "with space/file name", "emoji-\U0001F600", "a+b=c&d?e#f", "x/" + "é" * 100]
    contents = {key: os.urandom(1000 + i) for i, key in enumerate(keys)}
    for key, data in contents.items():
        put_bytes(cluster, f"{bucket}/{key}", data)
    for key, data in contents.items():
        assert cat(cluster, f"{bucket}/{key}") == data
    listing = cluster.geds("ls", bucket).ok().lines
    assert len(listing) == len(keys)
    for key in keys:
        assert sum(line.endswith(" " + key) for line in listing) == 1, (key, listing)

    out = os.path.join(workdir, "tree")
    cluster.geds("get", "--recursive", f"{bucket}/", out).ok()
    for key, data in contents.items():
        with open(os.path.join(out, key), "rb") as handle:
            assert handle.read() == data


def on_terminal(cluster, *args) -> str:
    """Runs the CLI with stderr on a pseudo-terminal (where progress bars are drawn); what it wrote there."""
    master, slave = pty.openpty()
    proc = cluster.popen(*args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer of the terminal is gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=90) == 0, seen
    return seen.decode("utf-8", "replace")


def last_drawn(terminal: str) -> str:
    return [line for line in terminal.split("\r") if line.strip()][-1]


def test_recursive_transfers_draw_one_progress_bar_on_a_terminal(cluster, bucket, workdir):
    tree = os.path.join(workdir, "set")
    os.makedirs(os.path.join(tree, "sub"))
    contents = {f"sub/f{i}" if i % 2 else f"f{i}": os.urandom((i + 1) << 20) for i in range(5)}
    for name, data in contents.items():
        with open(os.path.join(tree, name), "wb") as handle:
            handle.write(data)
    total = sum(map(len, contents.values()))

    bar = on_terminal(cluster, "put", "--recursive", tree, f"{bucket}/set/", "--to", "node-a")
    final = last_drawn(bar)
    assert "100%" in final and "5/5 objects" in final and "15.0 MiB/15.0 MiB" in final, bar
    assert on_terminal(cluster, "put", "--recursive", "--quiet", tree, f"{bucket}/quiet/") == ""

    out = os.path.join(workdir, "back")
    bar = on_terminal(cluster, "get", "--recursive", f"{bucket}/set/", out)
    final = last_drawn(bar)
    assert "100%" in final and "5/5 objects" in final and f"{total / 1048576:.1f} MiB/" in final, bar
    for name, data in contents.items():
        with open(os.path.join(out, name), "rb") as handle:
            assert sha256(handle.read()) == sha256(data)
    # Not a terminal: no bar at all.
    assert "objects" not in cluster.geds("get", "--recursive", f"{bucket}/set/", out + "2").ok().err
