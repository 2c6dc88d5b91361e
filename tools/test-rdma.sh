#!/usr/bin/env bash
# Runs the RDMA test suite on soft-RoCE: builds the tests on this machine, then runs GedsVerbsTests (the verbs
# wrappers, and the MDS serving RDMA send/receive beside TCP) inside one tools/rxe-vm boot with two simulated
# hosts (rxe0 at 10.10.0.1; rxe1 10.10.1.1 <-> rxe2 10.10.1.2). Outside the VM (plain `swift test`) the same
# tests report themselves skipped.
#   tools/test-rdma.sh                 build + run
#   tools/test-rdma.sh --no-build      run what is built
# Environment: GEDS_RDMA_FILTER (default GedsVerbsTests), GEDS_RDMA_SCRATCH (SwiftPM scratch path, default
# .build), GEDS_RXE_VM_TIMEOUT (default 1800 s) and the other tools/rxe-vm/run.sh knobs.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
[[ ${1:-} == --no-build ]] && build=0
scratch=${GEDS_RDMA_SCRATCH:-.build}
filter=${GEDS_RDMA_FILTER:-GedsVerbsTests}

if ((build)); then
  swift build --build-tests --scratch-path "$scratch"
fi
bundle=$(swift build --show-bin-path --scratch-path "$scratch")/gedsPackageTests.xctest
[[ -x $bundle ]] || { echo "test-rdma: no test bundle at $bundle (build first)" >&2; exit 1; }
case $bundle in "$PWD"/*) ;; *) echo "test-rdma: the test bundle must be inside $PWD (shared with the VM)" >&2; exit 1 ;; esac

# The guest's output goes to a serial port, which looks like a terminal: no colours unless we print to one.
color=""
[[ -t 1 ]] || color="NO_COLOR=1 "
# One boot for everything: the VM is slow (software emulation), the tests are sized for it.
exec tools/rxe-vm/run.sh --two-hosts --timeout "${GEDS_RXE_VM_TIMEOUT:-1800}" \
  "echo \"rdma devices: \$GEDS_RXE_DEVICES\"; $color'$bundle' --testing-library swift-testing --filter '$filter'"
