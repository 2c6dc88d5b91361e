#!/usr/bin/env bash
# Runs every test: Swift unit and in-process tests, then the real-process suite (an MDS, gedsd nodes and
# the CLI on loopback). Builds what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

swift build -c release --product geds-mds
swift build -c release --product gedsd
swift build -c release --product geds
swift build -c release --product geds-perf
swift build -c release --product GedsC   # libgeds.so, for the C ABI tests (Tests/process/test_capi.py)
swift test 2>&1 | tee /tmp/geds-swift-test.log
# The RDMA suite on soft-RoCE inside a small VM (one boot; outside it these tests report themselves skipped).
tools/test-rdma.sh --no-build
export GEDS_BIN=$PWD/.build/release
python3 -m pytest Tests/process -q -p no:cacheprovider
# The Python package against this tree's libgeds: our suite, fsspec's abstract suite, smart_open, pandas, pools.
tools/python-install.sh
python3 -m pytest python/tests -q -p no:cacheprovider
