#!/usr/bin/env bash
# The C ABI against the Swift API in one run: starts an MDS and an owner gedsd on loopback, then alternates
# capi_bench (libgeds through pkg-config, from an installed tree) and geds-perf (the Swift API) reading from that
# owner over TCP, ROUNDS times (default 2), and prints the medians and the ratios C / Swift.
#   Benchmarks/capi/compare.sh [ROUNDS]        (after swift build -c release --product GedsC and geds-perf)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-2}
BIN=${GEDS_BIN:-$PWD/.build/release}
WORK=$(mktemp -d /dev/shm/geds-capi-bench-XXXXXX)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

GEDS_BIN=$BIN tools/install.sh --prefix "$WORK/prefix" --no-build >/dev/null
export PKG_CONFIG_PATH=$WORK/prefix/lib/pkgconfig
cc -std=c99 -O2 -Wall -Werror -o "$WORK/capi_bench" Benchmarks/capi/capi_bench.c $(pkg-config --cflags --libs geds)

listening() { until grep -o 'listening on [^ ]*' "$1" 2>/dev/null | awk '{print $3}'; do sleep 0.1; done; }
"$BIN/geds-mds" --listen 127.0.0.1:0 >"$WORK/mds.log" 2>&1 & PIDS+=($!)
export GEDS_MDS=$(listening "$WORK/mds.log")
"$BIN/gedsd" --mds "$GEDS_MDS" --listen 127.0.0.1:0 --tier0 "$WORK/owner" --name owner --host-id owner-host \
  >"$WORK/owner.log" 2>&1 & PIDS+=($!)
listening "$WORK/owner.log" >/dev/null

for round in $(seq "$ROUNDS"); do
  echo "round $round: C" >&2
  env -u LD_LIBRARY_PATH "$WORK/capi_bench" owner >"$WORK/c-$round.jsonl"
  echo "round $round: Swift (geds-perf)" >&2
  "$BIN/geds-perf" --mds "$GEDS_MDS" --owner owner --workloads read-bw,latency --sizes 256M --repetitions 3 \
    --json "$WORK/swift-$round.json" >/dev/null 2>"$WORK/perf.log"
done

python3 - "$WORK" "$ROUNDS" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
c = {"bw": [], "lookup": [], "cached": []}
swift = {"bw": [], "lookup": [], "cached": []}
for r in range(1, rounds + 1):
    for line in open(f"{work}/c-{r}.jsonl"):
        m = json.loads(line)
        if m["workload"] == "read-bw": c["bw"].append(m["gbit_per_s"])
        else: c["lookup" if m["path"] == "lookup+read" else "cached"].append(m["p50_us"])
    data = json.load(open(f"{work}/swift-{r}.json"))
    rows = data if isinstance(data, list) else next(v for v in data.values() if isinstance(v, list))
    for m in rows:
        if m.get("transport") != "tcp": continue
        if m["workload"] == "read-bw" and m["size_bytes"] == 256 << 20: swift["bw"].append(m["gbit_per_s"])
        if m["workload"] == "latency" and m["size_bytes"] == 4096:
            swift["cached" if "cached" in (m.get("note") or "") else "lookup"].append(m["p50_us"])
med = lambda values: statistics.median(values) if values else float("nan")
print(f"{'figure':42} {'C ABI':>10} {'Swift API':>10} {'ratio C/Swift':>14}")
print(f"{'256 MiB remote read, Gbit/s (higher better)':42} {med(c['bw']):10.2f} {med(swift['bw']):10.2f} "
      f"{med(c['bw']) / med(swift['bw']):14.3f}")
for key, name in (("lookup", "4 KiB get, lookup + read, p50 us"), ("cached", "4 KiB read, open reader, p50 us")):
    print(f"{name + ' (lower better)':42} {med(c[key]):10.2f} {med(swift[key]):10.2f} "
          f"{med(swift[key]) / med(c[key]):14.3f}")
print(f"(medians over {rounds} rounds; ratios >= 1 mean the C ABI is at least as fast)")
PY
