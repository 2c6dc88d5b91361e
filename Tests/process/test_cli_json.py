"""`--json` output of ls, stat, where and nodes (stable keys), `geds --version`, and shell completion."""

from __future__ import annotations

import json
import os
import re
import subprocess

from geds_harness import MiB, binary, sha256, write_random_file


def test_version_and_completion_scripts():
    for name in ("geds", "geds-mds", "gedsd", "geds-perf"):
        version = subprocess.run([binary(name), "--version"], capture_output=True, text=True, timeout=30)
        assert version.returncode == 0 and re.fullmatch(rf"{name} \d+\.\d+\.\d+\n", version.stdout), version
    for shell in ("bash", "zsh", "fish"):
        script = subprocess.run([binary("geds"), "--generate-completion-script", shell], capture_output=True, text=True,
                                timeout=30)
        assert script.returncode == 0 and "geds" in script.stdout
        for command in ("watch" if "watch" in script.stdout else "stat", "nodes", "bucket"):
            assert command in script.stdout, (shell, command)


def test_json_output_has_stable_keys(cluster, bucket, workdir):
    source = os.path.join(workdir, "in.bin")
    digest = write_random_file(source, MiB + 3)
    cluster.geds("put", source, f"{bucket}/dir/a.bin", "--to", "node-a", host_id="host-a").ok()
    cluster.geds("meta", f"{bucket}/dir/a.bin", "owner=alice").ok()
    cluster.geds("put", source, f"{bucket}/top.bin", "--to", "node-b", host_id="host-b").ok()

    buckets = json.loads(cluster.geds("ls", "--json").ok().text)
    assert bucket in buckets["buckets"]

    listing = json.loads(cluster.geds("ls", "--json", "--delimiter", "/", bucket).ok().text)
    assert set(listing) == {"bucket", "prefix", "delimiter", "objects", "common_prefixes"}
    assert listing["bucket"] == bucket and listing["common_prefixes"] == ["dir/"]
    assert [(o["key"], o["size"]) for o in listing["objects"]] == [("top.bin", MiB + 3)]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", listing["objects"][0]["modified"])
    nested = json.loads(cluster.geds("ls", "--json", "--max-keys", "1", f"{bucket}/dir/").ok().text)
    assert [o["key"] for o in nested["objects"]] == ["dir/a.bin"] and nested["prefix"] == "dir/"

    stat = json.loads(cluster.geds("stat", "--json", f"{bucket}/dir/a.bin").ok().text)
    assert set(stat) == {"bucket", "key", "size", "sealed", "modified", "blob", "crc32c", "copies", "metadata",
                         "wanted_copies", "present_copies"}
    assert (stat["wanted_copies"], stat["present_copies"]) == (1, 1)
    assert set(stat["copies"][0]) == {"node", "tier", "host", "region", "transports"}
    assert (stat["key"], stat["size"], stat["sealed"], stat["metadata"]) == ("dir/a.bin", MiB + 3, True, {"owner": "alice"})
    assert [(c["node"], c["tier"], c["host"]) for c in stat["copies"]] == [("node-a", "tier0", "host-a")]
    assert stat["copies"][0]["transports"][0].startswith("tcp://")

    where = json.loads(cluster.geds("where", "--json", f"{bucket}/top.bin").ok().text)
    assert where["object"] == f"{bucket}/top.bin"
    assert [(c["node"], c["host"]) for c in where["copies"]] == [("node-b", "host-b")]

    def nodes_once_counted():  # a node's counts reach the MDS with its next heartbeat
        listed = {n["name"]: n for n in json.loads(cluster.geds("nodes", "--json").ok().text)["nodes"]}
        return listed if listed.get("node-a", {}).get("objects") else None

    nodes = cluster.wait_until(nodes_once_counted, timeout=10, what="node-a's objects in geds nodes --json")
    assert {"node-a", "node-b"} <= set(nodes)
    node_a = nodes["node-a"]
    assert set(node_a) == {"name", "alive", "role", "host", "tcp", "rdma", "objects", "bytes", "draining", "drain_failure"}
    assert (node_a["draining"], node_a["drain_failure"]) == (False, None)
    assert (node_a["alive"], node_a["role"], node_a["host"]) == (True, "gedsd", "host-a")
    assert node_a["objects"] >= 1 and node_a["bytes"] >= MiB + 3
    assert sha256(cluster.geds("cat", f"{bucket}/dir/a.bin").ok().out) == digest


def test_json_errors_stay_plain(cluster, bucket):
    missing = cluster.geds("stat", "--json", f"{bucket}/nope")
    assert missing.rc == 1 and missing.out == b"" and "nope" in missing.err
