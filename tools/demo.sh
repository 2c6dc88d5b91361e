#!/usr/bin/env bash
# The demo: an MDS and two gedsd nodes on this machine (as two simulated hosts), objects written by a task
# on host A and kept by node A, then read by a task on host B over TCP; SHA-256 compared, throughput shown.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${GEDS_BIN:-$PWD/.build/release}
WORK=$(mktemp -d /tmp/geds-demo.XXXXXX)
SHM=/dev/shm/geds-demo-$$
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK" "$SHM"; }
trap cleanup EXIT

wait_listening() { for _ in $(seq 100); do grep -q listening "$1" && return 0; sleep 0.1; done; cat "$1" >&2; exit 1; }
now() { date +%s.%N; }
rate() { python3 -c "import sys; b,t=float(sys.argv[1]),float(sys.argv[3])-float(sys.argv[2]); print(f'{b/t/1e6:,.0f} MB/s ({b*8/t/1e9:.2f} Gbit/s)')" "$@"; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export GEDS_MDS=127.0.0.1:$PORT
"$BIN/geds-mds" --listen "$GEDS_MDS" >"$WORK/mds.log" 2>&1 & PIDS+=($!)
wait_listening "$WORK/mds.log"
for n in a b; do
  "$BIN/gedsd" --mds "$GEDS_MDS" --listen 127.0.0.1:0 --tier0 "$SHM/$n" --name "node-$n" --host-id "host-$n" \
    >"$WORK/$n.log" 2>&1 & PIDS+=($!)
done
wait_listening "$WORK/a.log"; wait_listening "$WORK/b.log"
echo "MDS at $GEDS_MDS; nodes:"; "$BIN/geds" nodes | sed 's/^/  /'

mkdir -p "$WORK/in/small" "$WORK/out"
for i in 1 2 3 4; do head -c $((256 << 20)) /dev/urandom >"$WORK/in/big-$i.bin"; done
for i in $(seq 1 200); do head -c 4096 /dev/urandom >"$WORK/in/small/s$i.bin"; done
BYTES=$(du -sb "$WORK/in" | cut -f1)

"$BIN/geds" mb demo
echo "writing $BYTES bytes as $(find "$WORK/in" -type f | wc -l) objects on host A (kept by node-a)"
t0=$(now); GEDS_HOST_ID=host-a "$BIN/geds" put --recursive "$WORK/in" demo/run/ --to node-a; t1=$(now)
echo "  put: $(rate "$BYTES" "$t0" "$t1")"
echo "reading them on host B (remote reads over TCP from node-a)"
t0=$(now); GEDS_HOST_ID=host-b "$BIN/geds" get --recursive demo/run/ "$WORK/out"; t1=$(now)
echo "  get: $(rate "$BYTES" "$t0" "$t1")"
echo "  (bounded by fetching each object into host B's tier 0, fresh memory pages, then writing it to a file;"
echo "   geds-perf's read-tier0 row measures the first, read-bw the network alone: docs/PERFORMANCE.md)"
echo "one 256 MiB object, remote read into host B's tier 0 and out to a file:"
t0=$(now); GEDS_HOST_ID=host-b "$BIN/geds" get demo/run/big-1.bin "$WORK/one.bin"; t1=$(now)
echo "  $(rate $((256 << 20)) "$t0" "$t1") (includes CLI start-up, MDS lookup and writing the file)"

(cd "$WORK/in" && find . -type f -exec sha256sum {} + | sort -k2) >"$WORK/in.sha"
(cd "$WORK/out" && find . -type f -exec sha256sum {} + | sort -k2) >"$WORK/out.sha"
if cmp -s "$WORK/in.sha" "$WORK/out.sha"; then
  echo "checksums: all $(wc -l <"$WORK/in.sha") objects identical (SHA-256)"
else
  echo "checksums DIFFER:"; diff "$WORK/in.sha" "$WORK/out.sha" | head; exit 1
fi
"$BIN/geds" where demo/run/big-1.bin | sed 's/^/  big-1.bin copy: /'
