"""`--metrics HOST:PORT` on geds-mds and gedsd: /metrics scraped during a workload and parsed with the
Prometheus client library's own parser; the counters move as the workload says they must."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request

import pytest

from geds_harness import Cluster, MiB, sha256, write_random_file

parser = pytest.importorskip("prometheus_client.parser")


@pytest.fixture(scope="module")
def metered(session_root):
    cluster = Cluster(os.path.join(session_root, "metrics"), lease_ms=2000)
    try:
        cluster.start_mds(extra_args=["--metrics", "127.0.0.1:0"])
        cluster.start_node("metered-a", "host-ma", extra_args=["--metrics", "127.0.0.1:0", "--tier0-capacity", "64MiB"])
        yield cluster
    finally:
        cluster.close()


def metrics_url(daemon) -> str:
    with open(daemon.log, errors="replace") as log:
        return re.search(r"metrics on (http://\S+/metrics)", log.read()).group(1)


def scrape(daemon) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(metrics_url(daemon), timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples = {}
    for family in parser.text_string_to_metric_families(text):
        assert family.name.startswith("geds_"), family.name
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_and_levels_follow_a_workload(metered, tmp_path):
    mds, node = metered.mds, next(d for d in metered.daemons if d.name == "metered-a")
    before_mds, before_node = scrape(mds), scrape(node)
    metered.geds("mb", "metered").ok()
    digests = {}
    for index in range(3):
        source = str(tmp_path / f"in-{index}")
        digests[index] = write_random_file(source, MiB + index)
        metered.geds("put", source, f"metered/o{index}", "--to", "metered-a", host_id="host-ma").ok()
    for index, digest in digests.items():  # read from another host: over TCP from the node
        assert sha256(metered.geds("cat", f"metered/o{index}", host_id="host-reader").ok().out) == digest
    metered.geds("stat", "metered/missing").fails("no such object")

    after_mds, after_node = scrape(mds), scrape(node)
    grew = lambda after, before, name, **labels: value(after, name, **labels) - value(before, name, **labels)
    assert grew(after_mds, before_mds, "geds_requests_total", kind="createBucket", result="ok") == 1
    # A node's first create in a bucket is announced at the MDS (createObject, then sealObject); later ones are created
    # under reserved ids and sealed by one sealNewObject.
    assert sum(grew(after_mds, before_mds, "geds_requests_total", kind=kind, result="ok")
               for kind in ("sealObject", "sealNewObject")) >= 3
    assert grew(after_mds, before_mds, "geds_requests_total", kind="lookup", result="error") >= 1
    assert grew(after_mds, before_mds, "geds_request_duration_seconds_count", kind="lookup") >= 4
    assert value(after_mds, "geds_objects") == 3 and value(after_mds, "geds_buckets") == 1
    assert value(after_mds, "geds_live_nodes") >= 1
    # The node served the three objects' bytes over TCP (the CLI readers are other processes).
    assert grew(after_node, before_node, "geds_served_bytes_total", carrier="tcp") >= 3 * MiB + 3
    assert grew(after_node, before_node, "geds_requests_total", kind="readBlob", result="ok") >= 3
    assert value(after_node, "geds_tier0_objects") == 3
    assert value(after_node, "geds_tier0_bytes") == 3 * MiB + 3
    assert value(after_node, "geds_tier0_capacity_bytes") == 64 * MiB


def test_only_get_metrics_is_served(metered):
    url = metrics_url(metered.mds)
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(url.replace("/metrics", "/other"), timeout=10)
    assert missing.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as posted:
        urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"), timeout=10)
    assert posted.value.code == 405
