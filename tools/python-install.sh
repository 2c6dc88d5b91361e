#!/usr/bin/env bash
# Installs libgeds into .build/geds-prefix (tools/install.sh, from the release build) and the Python package
# `geds` (python/) into this python3, compiled with cffi against that prefix's geds.h through pkg-config.
#   tools/python-install.sh   (tools/setup.sh and tools/test.sh run it; needs `swift build -c release --product GedsC` etc.)
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=$PWD/.build/geds-prefix
tools/install.sh --prefix "$prefix" --no-build >/dev/null
# The cffi build compiles C against Python.h: a system python3 needs its -dev package.
include=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
if [[ ! -f $include/Python.h ]]; then
  SUDO=""; [[ $EUID -eq 0 ]] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-dev >/dev/null
fi
PKG_CONFIG_PATH=$prefix/lib/pkgconfig python3 -m pip install -q --no-build-isolation --force-reinstall --no-deps ./python
python3 -c 'import geds; print("python: installed", geds.version(), file=__import__("sys").stderr)'
