#!/usr/bin/env bash
# Installs what GEDS needs on a fresh Debian machine, builds it (release), and runs the demo.
#   tools/setup.sh            install + build + demo
#   tools/setup.sh --no-demo  install + build only (CI)
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(libibverbs-dev librdmacm-dev libnuma-dev libcurl4-openssl-dev iperf3 redis-server redis-tools librsvg2-bin fio
      openmpi-bin libopenmpi-dev gfortran pkg-config make g++   # the C ABI: MPI, Fortran and C++ examples, pkg-config
      slurmctld slurmd slurm-client)                   # geds-launch under a real one-host Slurm (test_capi.py)
missing=()
for p in "${DEBS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [[ $EUID -eq 0 ]] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install -q pytest
python3 -c 'import moto.server, boto3' 2>/dev/null || python3 -m pip install -q 'moto[server]'
python3 -c 'import prometheus_client' 2>/dev/null || python3 -m pip install -q prometheus_client
# The Python package (python/): its build (cffi, setuptools, wheel) and what its tests and benchmarks use.
PIP=(cffi setuptools wheel fsspec smart_open pandas numpy redis s3fs)
missing=()
for p in "${PIP[@]}"; do python3 -c "import $p" 2>/dev/null || missing+=("$p"); done
((${#missing[@]} == 0)) || python3 -m pip install -q "${missing[@]}"

command -v swift >/dev/null || { echo "setup: swift is not on PATH (expected the toolchain in /opt/swift)" >&2; exit 1; }
echo "setup: building (release)" >&2
swift build -c release --product geds-mds
swift build -c release --product gedsd
swift build -c release --product geds
swift build -c release --product geds-perf
swift build -c release --product GedsC
tools/python-install.sh   # libgeds into .build/geds-prefix, then `pip install ./python` against it

[[ ${1:-} == --no-demo ]] || exec tools/demo.sh
