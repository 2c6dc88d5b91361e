#!/usr/bin/env bash
# Runs the RDMA test suites on soft-RoCE: builds the tests on this machine, then runs GedsVerbsTests (the verbs
# wrappers, and the MDS serving RDMA send/receive beside TCP), RDMANodeTests (nodes reading each other over
# RDMA, the MDS over RDMA for one node and TCP for another) and the real-process RDMA tests
# (Tests/process/test_rdma.py: geds-mds and gedsd processes, the CLI) inside one tools/rxe-vm boot with two
# simulated hosts (rxe0 at 10.10.0.1; rxe1 10.10.1.1 <-> rxe2 10.10.1.2). The suites run one after another:
# under software emulation, concurrent suites only make each other miss their deadlines. Outside the VM
# (plain `swift test`, pytest) the same tests report themselves skipped.
#   tools/test-rdma.sh                 build + run
#   tools/test-rdma.sh --no-build      run what is built
# Environment: GEDS_RDMA_FILTER (Swift test filters run one after another, default "GedsVerbsTests
# RDMANodeTests"), GEDS_RDMA_PYTEST (default Tests/process/test_rdma.py; empty: none), GEDS_BIN (release binaries
# for it, default .build/release), GEDS_RDMA_SCRATCH (SwiftPM scratch path, default
# .build), GEDS_RXE_VM_TIMEOUT (default 1800 s) and the other tools/rxe-vm/run.sh knobs.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
[[ ${1:-} == --no-build ]] && build=0
scratch=${GEDS_RDMA_SCRATCH:-.build}
filters=${GEDS_RDMA_FILTER:-GedsVerbsTests RDMANodeTests}
pytests=${GEDS_RDMA_PYTEST-Tests/process/test_rdma.py}
bin=${GEDS_BIN:-$PWD/.build/release}
# The guest's PATH may find another python3 than ours (pyenv): use the one that has pytest here.
python=$(python3 -c 'import sys; print(sys.executable)')

if ((build)); then
  swift build --build-tests --scratch-path "$scratch"
fi
bundle=$(swift build --show-bin-path --scratch-path "$scratch")/gedsPackageTests.xctest
[[ -x $bundle ]] || { echo "test-rdma: no test bundle at $bundle (build first)" >&2; exit 1; }
case $bundle in "$PWD"/*) ;; *) echo "test-rdma: the test bundle must be inside $PWD (shared with the VM)" >&2; exit 1 ;; esac

# The guest's output goes to a serial port, which looks like a terminal: no colours unless we print to one.
color=""
[[ -t 1 ]] || color="NO_COLOR=1 "
# One boot for everything: the VM is slow (software emulation), the tests are sized for it. Every part runs
# even when an earlier one failed; the status is the first failure's.
command="echo \"rdma devices: \$GEDS_RXE_DEVICES\"; status=0"
for filter in $filters; do
  command+="; $color'$bundle' --testing-library swift-testing --filter '$filter'; rc=\$?; [ \$status -ne 0 ] || status=\$rc"
done
if [[ -n $pytests ]]; then
  command+="; GEDS_BIN='$bin' '$python' -m pytest -q -p no:cacheprovider $pytests; rc=\$?; [ \$status -ne 0 ] || status=\$rc"
fi
command+="; exit \$status"
exec tools/rxe-vm/run.sh --two-hosts --timeout "${GEDS_RXE_VM_TIMEOUT:-1800}" "$command"
