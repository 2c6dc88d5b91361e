#!/usr/bin/env bash
# Fuzzes one of GEDS's decoders with libFuzzer (swiftc -sanitize=fuzzer, plus AddressSanitizer).
#   tools/fuzz.sh TARGET SECONDS [libFuzzer flags...]   TARGET: frame codec rdma-message s3-xml names local
#   tools/fuzz.sh --list
# The working corpus lives in .build-fuzz/corpus/TARGET (started from the target's seeds). A crashing input is
# copied into Tests/FuzzCorpus/TARGET/, where GedsFuzzTests replays it in every `swift test`: commit it with
# the fix. The last lines of the run (executions, crashes) are printed.
# GEDS_FUZZ_SANITIZE=fuzzer leaves AddressSanitizer out (several times the executions per second; the default
# is fuzzer,address), in a build folder of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(frame codec rdma-message s3-xml names local)
if [[ ${1:-} == --list ]]; then printf '%s\n' "${targets[@]}"; exit 0; fi
[[ $# -ge 2 ]] || { echo "usage: tools/fuzz.sh TARGET SECONDS [libFuzzer flags...]  (tools/fuzz.sh --list)" >&2; exit 2; }
target=$1 seconds=$2
shift 2
[[ " ${targets[*]} " == *" $target "* ]] || { echo "fuzz: unknown target '$target' (one of: ${targets[*]})" >&2; exit 2; }

sanitize=${GEDS_FUZZ_SANITIZE:-fuzzer,address}
scratch=$PWD/.build-fuzz
build=$scratch/${sanitize//,/-}
# SwiftPM keeps its build plan across runs and does not notice new source files in the path dependency (the
# main package): dropping the plan makes it look again; what is compiled stays cached.
rm -f "$build/release.yaml"
swift build -c release --package-path Fuzz --scratch-path "$build" \
  -Xswiftc -sanitize="$sanitize" -Xswiftc -parse-as-library >&2
binary=$build/release/geds-fuzz
corpus=$scratch/corpus/$target
artifacts=$scratch/artifacts/$target
mkdir -p "$corpus" "$artifacts"
if [[ -z $(ls -A "$corpus") ]]; then GEDS_FUZZ_TARGET=$target GEDS_FUZZ_SEEDS=$corpus "$binary"; fi

log=$scratch/$target.log
# Swift's own crash reporter reads memory in ways AddressSanitizer reports: let libFuzzer report traps.
export SWIFT_BACKTRACE=enable=no
status=0
GEDS_FUZZ_TARGET=$target "$binary" "$corpus" -max_total_time="$seconds" -print_final_stats=1 \
  -artifact_prefix="$artifacts/" -rss_limit_mb=4096 "$@" >"$log" 2>&1 || status=$?
found=0
for crash in "$artifacts"/crash-* "$artifacts"/oom-* "$artifacts"/timeout-*; do
  [[ -e $crash ]] || continue
  mkdir -p "Tests/FuzzCorpus/$target"
  cp "$crash" "Tests/FuzzCorpus/$target/" && rm "$crash"
  found=$((found + 1))
done
grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^Done|ERROR|SUMMARY' "$log" >&2 || true
echo "fuzz $target: $found crashing input(s) kept in Tests/FuzzCorpus/$target; full log $log" >&2
exit "$status"
